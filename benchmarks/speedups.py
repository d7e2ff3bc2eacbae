"""What may speed up the repo's small conv nets on CPU: threads, channels_last, torch.compile, batch, eval chunks.

    .venv/bin/python benchmarks/speedups.py [--repeats 3] [--quick]

The net: ``conv4`` built by the repo's model factory (``common.models.build`` of the Component
``{name: conv4, embedding_dim: 64, hidden_channels: H}``, H = 16 and 32) under a linear
``common.models.classifiers.Classifier`` on 10 classes; cross-entropy, SGD (lr 0.05, momentum 0.9, no weight
decay), batches of 128 random 1x28x28 float32 images (``torch.randn``, seed 0) with random labels, a pool of 8
batches cycled. Each variant below starts from the same initial weights (seed 0) and is compared with the
default (contiguous NCHW, eager, 1 torch thread, batch 128) of its width, measured in the same run.

Training speed is steps/s of forward + backward + ``optimizer.step()``. Every variant first takes 20 untimed
steps (its warm-up, compile and the numerical check below); then, ``--repeats`` times, each variant of each
width takes 30 timed steps, one variant after the other (interleaved), and the fastest (the least disturbed)
and median rate are printed, with the ratio of the fastest to the default's fastest (its reference's).

1. **Threads**: ``torch.set_num_threads(2)`` against 1.
2. **channels_last**: model and input batches in ``torch.channels_last`` (for 1-channel inputs that layout is
   the same as NCHW; the conv weights and activations are what change).
3. **torch.compile** of the model (default mode; ``dynamic=False`` so that the second width is compiled for
   its own shapes, as in a run that builds one model, not as dynamic shapes; the optimizer step stays eager).
   The compile time (the first step, which compiles forward and backward) is printed apart, with the state
   of inductor's on-disk cache (``/tmp/torchinductor_$USER``): cold (a first compile on this machine: tens of
   seconds) or warm (later processes with the same shapes: a few seconds). The rates are steady state. A
   compile error is caught and its row reads ``failed: <first line of the error>``.
4. **Batch 256** against 128, in images/s. It changes the optimization (half the steps per epoch at the same
   learning rate), so the row is for information only.
5. **Evaluation**: ``common.engine.evaluation.embed`` (eval mode, ``no_grad``, the repo's evaluation forward)
   of 10,000 random images in chunks of 128 (its default, the reference), 512 and 2048, images/s, 1 thread.

Numerical agreement: over the 20 warm-up steps (same batches, same initial weights), the training loss of
channels_last, compile and 2 threads against the default's: |difference| at step 1 (same weights: the
forward's rounding alone), at step 20 and the largest over the 20 steps. SGD at lr 0.05 amplifies any
rounding difference step by step, so the 2-thread row is the yardstick: it changes only the order of sums.

``--quick`` (5 warm-up and 3 timed steps, 2,048 evaluated images, 1 repeat) checks that the script works: its
numbers mean nothing. It took about 30 s on 2 cores with a warm compile cache; a machine's first, cold
compiles add about 1.5 minutes (measured with other jobs on the cores). The full run with ``--repeats 3`` took
3.6 minutes on 2 quiet cores with a cold compile cache (session 13; numbers in ``benchmarks/README.md``). Run it
on a quiet machine: the 2-thread rows suffer most from other jobs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

# this checkout's common/, not the copy the virtualenv's editable install points at (another worktree)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import models  # noqa: E402
from common.config import Component  # noqa: E402
from common.engine import parallel  # noqa: E402
from common.engine.evaluation import embed  # noqa: E402
from common.models.classifiers import Classifier  # noqa: E402

WIDTHS = (16, 32)  # conv4's hidden_channels
CLASSES, BATCH, BIG_BATCH, POOL, SEED = 10, 128, 256, 8, 0
LR, MOMENTUM = 0.05, 0.9
EVAL_CHUNKS = (128, 512, 2048)  # 128: embed's default
CACHE_COUNTERS = ("autograd_cache_hit", "autograd_cache_miss")  # AOTAutograd's cache of compiled fwd + bwd
DEFAULT, THREADS, CHANNELS_LAST, COMPILED, BATCH_256 = (
    "default",
    "2 threads",
    "channels_last",
    "torch.compile",
    f"batch {BIG_BATCH}",
)


@dataclass(frozen=True)
class Sizes:
    warm_up: int  # untimed training steps of each variant first: compile, and the numerical check
    steps: int  # timed training steps of each variant, each repeat
    eval_images: int


FULL = Sizes(warm_up=20, steps=30, eval_images=10_000)
QUICK = Sizes(warm_up=5, steps=3, eval_images=2048)


def build_net(width: int) -> Classifier:
    """conv4 through the repo's model factory, as the trainer builds ``run.model``, plus a linear classifier."""
    component = Component(name="conv4", embedding_dim=64, hidden_channels=width)
    return Classifier(models.build(component.name, **component.kwargs), CLASSES, "linear")


def random_batches(batch_size: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, 1, 28, 28, generator=generator),
            torch.randint(CLASSES, (batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


@dataclass
class Variant:
    """One way to train: a model (maybe compiled), its SGD, its batches and torch threads."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    threads: int = 1
    position: int = 0
    losses: list[float] = field(default_factory=list)  # of the warm-up steps
    first_step_seconds: float = 0.0
    cache: str = ""  # torch.compile's on-disk cache at the first step: warm or cold

    def step(self) -> torch.Tensor:
        images, labels = self.batches[self.position % len(self.batches)]
        self.position += 1
        loss = F.cross_entropy(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def warm_up(self, steps: int) -> None:
        with parallel.torch_threads(self.threads):
            before = dict(counters["aot_autograd"])
            started = time.perf_counter()
            self.losses.append(float(self.step()))
            self.first_step_seconds = time.perf_counter() - started
            hits, misses = (counters["aot_autograd"][k] - before.get(k, 0) for k in CACHE_COUNTERS)
            self.cache = "warm" if hits and not misses else "cold" if misses else ""
            self.losses += [float(self.step()) for _ in range(steps - 1)]

    def steps_per_second(self, steps: int) -> float:
        with parallel.torch_threads(self.threads):
            started = time.perf_counter()
            for _ in range(steps):
                self.step()
            return steps / (time.perf_counter() - started)


def make_variant(
    initial: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    threads: int = 1,
    channels_last: bool = False,
    compiled: bool = False,
) -> Variant:
    model = copy.deepcopy(initial)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    if compiled:
        model = torch.compile(model, dynamic=False)
    return Variant(model, optimizer, batches, threads)


Variants = dict[str, Variant | str]  # by name; a variant that failed to compile: its message


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def training_variants(width: int, sizes: Sizes) -> Variants:
    """The variants of one width from the same initial weights, warmed up; a compile error as its message."""
    torch.manual_seed(SEED)
    initial = build_net(width)
    batches, big = random_batches(BATCH, POOL, SEED), random_batches(BIG_BATCH, POOL, SEED + 1)
    builders = {
        DEFAULT: lambda: make_variant(initial, batches),
        THREADS: lambda: make_variant(initial, batches, threads=2),
        CHANNELS_LAST: lambda: make_variant(initial, batches, channels_last=True),
        COMPILED: lambda: make_variant(initial, batches, compiled=True),
        BATCH_256: lambda: make_variant(initial, big),
    }
    variants: Variants = {}
    for name, build in builders.items():
        try:
            variant = build()
            variant.warm_up(sizes.warm_up)
            variants[name] = variant
        except Exception as error:  # torch.compile's backend may be missing or fail on this machine
            if name != COMPILED:
                raise
            variants[name] = f"failed: {first_line(error)}"
    return variants


def measure_training(
    sizes: Sizes, repeats: int
) -> tuple[dict[int, Variants], dict[int, dict[str, list[float]]]]:
    """Per width: the warmed-up variants, and each one's steps/s over the repeats (interleaved)."""
    variants = {width: training_variants(width, sizes) for width in WIDTHS}
    rates: dict[int, dict[str, list[float]]] = {width: {} for width in WIDTHS}
    for _ in range(repeats):
        for width in WIDTHS:
            for name, variant in variants[width].items():
                if isinstance(variant, Variant):
                    rates[width].setdefault(name, []).append(variant.steps_per_second(sizes.steps))
    return variants, rates


def measure_eval(sizes: Sizes, repeats: int) -> dict[int, dict[int, list[float]]]:
    """Per width and chunk size: images/s of ``embed`` over ``sizes.eval_images`` images, 1 thread."""
    images = torch.randn(sizes.eval_images, 1, 28, 28, generator=torch.Generator().manual_seed(SEED))
    cpu = torch.device("cpu")
    nets = {}
    for width in WIDTHS:
        torch.manual_seed(SEED)
        nets[width] = build_net(width)
    rates: dict[int, dict[int, list[float]]] = {
        width: {chunk: [] for chunk in EVAL_CHUNKS} for width in WIDTHS
    }
    with parallel.torch_threads(1):
        for width in WIDTHS:  # warm-up: one chunk of each size
            for chunk in EVAL_CHUNKS:
                embed(nets[width], images[:chunk], cpu, chunk)
        for _ in range(repeats):
            for width in WIDTHS:
                for chunk in EVAL_CHUNKS:
                    started = time.perf_counter()
                    embed(nets[width], images, cpu, chunk)
                    rates[width][chunk].append(len(images) / (time.perf_counter() - started))
    return rates


# -- the tables ------------------------------------------------------------------------------------------


# label, rates (or a failure message), the reference's rates, a note
Row = tuple[str, list[float] | str, list[float], str]


def print_table(title: str, unit: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"{'row':32s} {'best ' + unit:>12s} {'median':>10s} {'ratio':>7s}  note")
    for label, values, reference, note in rows:
        if isinstance(values, str):
            print(f"{label:32s} {values}")
            continue
        best, mid = max(values), statistics.median(values)
        print(f"{label:32s} {best:12.1f} {mid:10.1f} {best / max(reference):7.3f}  {note}")


def agreement(variants: Variants, name: str) -> str:
    """|loss - the default's loss| over the warm-up steps: at step 1 (same weights: the forward's rounding
    alone), at the last step, and the largest."""
    variant, default = variants[name], variants[DEFAULT]
    if not isinstance(variant, Variant) or not isinstance(default, Variant):
        return ""
    gaps = [abs(a - b) for a, b in zip(variant.losses, default.losses, strict=True)]
    return f"|dloss| step 1: {gaps[0]:.1e}, step {len(gaps)}: {gaps[-1]:.1e}, max: {max(gaps):.1e}"


def print_training(
    variants: dict[int, Variants], rates: dict[int, dict[str, list[float]]], sizes: Sizes
) -> None:
    setting = f"{sizes.steps} timed steps of batch {BATCH} after {sizes.warm_up} untimed"
    titles = {
        THREADS: f"1. threads: training steps/s ({setting}); ratio: fastest / the default's fastest",
        CHANNELS_LAST: f"2. channels_last: training steps/s ({setting})",
        COMPILED: f"3. torch.compile (default mode): steady-state training steps/s ({setting})",
    }
    for name, title in titles.items():
        rows: list[Row] = []
        for width in WIDTHS:
            reference = rates[width][DEFAULT]
            default = variants[width][DEFAULT]
            assert isinstance(default, Variant)  # only the compiled variant may fail
            losses = default.losses
            note = f"loss step 1: {losses[0]:.4f}, step {len(losses)}: {losses[-1]:.4f}"
            rows.append((f"conv4-{width} default (reference)", reference, reference, note))
            variant, note = variants[width][name], agreement(variants[width], name)
            if name == COMPILED and isinstance(variant, Variant):
                cache = f", {variant.cache} cache" if variant.cache else ""
                note = f"compile + first step {variant.first_step_seconds:.1f} s{cache}; {note}"
            values = rates[width].get(name) or variant  # a failed variant: its message
            rows.append((f"conv4-{width} {name}", values, reference, note))
        print_table(title, "steps/s", rows)

    rows = []
    for width in WIDTHS:
        reference = [rate * BATCH for rate in rates[width][DEFAULT]]
        big = [rate * BIG_BATCH for rate in rates[width][BATCH_256]]
        rows.append((f"conv4-{width} batch {BATCH} (reference)", reference, reference, ""))
        rows.append(
            (f"conv4-{width} batch {BIG_BATCH}", big, reference, "changes the optimization: for information")
        )
    print_table(
        f"4. batch {BIG_BATCH} vs {BATCH}: training images/s ({sizes.steps} timed steps each)", "img/s", rows
    )


def print_eval(rates: dict[int, dict[int, list[float]]], sizes: Sizes) -> None:
    rows: list[Row] = []
    for width in WIDTHS:
        reference = rates[width][EVAL_CHUNKS[0]]
        for chunk in EVAL_CHUNKS:
            label = f"conv4-{width} chunk {chunk}" + (" (reference)" if chunk == EVAL_CHUNKS[0] else "")
            rows.append((label, rates[width][chunk], reference, ""))
    title = f"5. evaluation: embed (eval mode, no_grad) of {sizes.eval_images:,} images, images/s, 1 thread"
    print_table(title, "img/s", rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script works")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = QUICK if args.quick else FULL
    default_threads = torch.get_num_threads()
    started = time.perf_counter()
    variants, rates = measure_training(sizes, repeats)
    eval_rates = measure_eval(sizes, repeats)

    print(
        f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({parallel.usable_cpus()} usable), torch {torch.__version__} ({default_threads} threads by default; "
        f"1 unless a row says otherwise), Python {platform.python_version()}"
    )
    print(
        f"# conv4 (embedding_dim 64, hidden_channels {' and '.join(map(str, WIDTHS))}) + linear on {CLASSES} "
        f"classes, SGD lr {LR} momentum {MOMENTUM}, random inputs (seed {SEED}); best and median of "
        f"{repeats} (interleaved){', --quick' if args.quick else ''}; {time.perf_counter() - started:.0f} s in all"
    )
    print_training(variants, rates, sizes)
    print_eval(eval_rates, sizes)


if __name__ == "__main__":
    main()
