"""Speed of the engine: the trainer against a bare PyTorch loop, 2 workers against 1, a run's fixed cost.

    .venv/bin/python benchmarks/engine.py [--repeats 3] [--quick]

Every number is a ratio against a reference measured in the same run; the timings of each section are
interleaved (one of each, then again, ``--repeats`` times) and the fastest (the least disturbed) and the
median are printed. All on the prepared Fashion-MNIST (``data/prepared/fashion_mnist``), on CPU.

1. **Trainer against a bare loop.** Training images/s of ``common.engine.trainer.fit_and_evaluate`` on the
   squentropy paper's ``cross_entropy`` run (params.yaml, profile ``cpu``, seed 0: conv4 + linear classifier,
   batch 128, SGD, params.yaml's training subset; 8 epochs of 31 batches) with ``augment: none``, a constant
   learning rate and ``Accelerator(cpu=True)``, against a loop written here with the same model, batch size,
   data (``common.runner.load_run_data``: standardized tensors), SGD hyper-parameters and cross-entropy. Both on 1 torch thread; only the training epochs count
   (the trainer's ``history[i]["epoch_seconds"]`` and ``["images"]``; the loop times its own epochs). Goal:
   trainer / bare >= 0.95. The trainer with ``augment: shift`` (the repo's default augmentation) is a row of
   its own, so the cost of the shift shows.
2. **2 workers over 1 on 2 cores.** Wall time of a run stage (``common.runner.run_paper``) of 8 runs
   (cross_entropy and squentropy x seeds 0-3, 4 epochs of 31 batches, about 10 s each: a short stage, whose
   workers' start-up weighs more than in the reports' stages of 24 to 100 runs; from a temporary copy of
   params.yaml), into temporary
   records, checkpoints and MLflow store (``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db``): 1 worker x 1
   thread (the reference), 2 workers x 1 thread, 1 worker x 2 threads. Goal: 2 workers >= 1.7x. Beside it,
   the start-up of a worker: a fresh interpreter importing ``common.runner`` (what each spawned worker pays).
3. **Fixed cost of one run.** ``common.runner._train_and_record`` of the squentropy ``cross_entropy`` cpu run
   as params.yaml configures it (seed 0, 1 thread, the stage's accelerator), split into training (the sum of
   its epochs' ``epoch_seconds``), evaluation (``evaluate_classifier``, timed by wrapping it), and the rest:
   data (``load_run_data``, found cached as by every run of a worker but its first; ``data_fingerprint``),
   checkpoints (``_save_checkpoint`` after each epoch), MLflow (the ``RunTracker`` calls) and what remains
   (model and optimizer set-up, tags, the record). Goal: the time outside training at most about 10% of the
   run. The cold data load of a worker's first run is printed beside it.

``--quick`` shrinks every size (epochs, batches, evaluated images) and defaults to 1 repeat, to check the
script in under a minute: its numbers say nothing about the goals. Without it, 7.8 minutes on 2 quiet cores with
``--repeats 2`` (session 13).
While measuring, the run stage prints its plan lines and progress bars (stderr); the table comes at the end.
Run it on a quiet machine: other jobs on the cores disturb the workers' and threads' rows most.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from mlflow.tracking import MlflowClient

# this checkout's common/, not the copy the virtualenv's editable install points at (another worktree); the
# run stage's spawned workers import this file again, and get the same path
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import models, runner  # noqa: E402
from common.config import RunConfig, apply_point, resolve_runs  # noqa: E402
from common.engine import classification, parallel, trainer  # noqa: E402
from common.engine.evaluation import SplitTensors  # noqa: E402
from common.models.classifiers import Classifier  # noqa: E402
from common.pipeline import run_code_hash  # noqa: E402
from common.records import record_path  # noqa: E402
from common.tracking import RunTracker  # noqa: E402
from common.tracking.provenance import git_commit, git_dirty  # noqa: E402

PAPER, DATASET, METHOD = "squentropy", "fashion_mnist", "cross_entropy"
STAGE_METHODS, STAGE_SEEDS = ("cross_entropy", "squentropy"), [0, 1, 2, 3]
PARAMS = REPO / "params.yaml"
PREPARED = REPO / runner.PREPARED_ROOT
PROFILE = "cpu"
TRAINER_GOAL, WORKERS_GOAL, OUTSIDE_GOAL = 0.95, 1.7, 0.10


@dataclass(frozen=True)
class Sizes:
    """The budgets of the three sections: ``None`` keeps params.yaml's (the cpu profile)."""

    trainer_epochs: int | None  # section 1
    trainer_batches: int | None
    stage_epochs: int  # section 2: each of the 8 runs
    stage_batches: int
    run_epochs: int | None  # section 3
    run_batches: int | None
    eval_items: int | None  # test images evaluated (None: all 10,000)


FULL = Sizes(8, 31, 4, 31, None, None, None)
QUICK = Sizes(2, 4, 1, 3, 1, 4, 500)


def cpu_run(sizes: Sizes, epochs: int | None, batches: int | None, **fields: Any) -> RunConfig:
    """The squentropy paper's cross_entropy run, seed 0, as params.yaml's cpu profile resolves it, with
    ``fields`` and the sizes set."""
    [run] = [r for r in resolve_runs(PAPER, PARAMS, PROFILE) if r.method == METHOD and r.seed == 0]
    if epochs is not None:
        fields |= {"epochs": epochs, "batches_per_epoch": batches}
    if sizes.eval_items is not None:
        fields["eval"] = {**run.eval.model_dump(mode="json"), "max_items": sizes.eval_items}
    return apply_point(run, {}, **fields)


# -- 1. the trainer against a bare loop ------------------------------------------------------------------


def trainer_images_per_s(
    run: RunConfig, train: SplitTensors, test: SplitTensors, accelerator: Accelerator, scratch: Path
) -> float:
    """Training images per second of ``fit_and_evaluate`` over all its epochs (a fresh checkpoint folder:
    nothing to resume)."""
    checkpoints = Path(tempfile.mkdtemp(dir=scratch))
    result = trainer.fit_and_evaluate(run, train, test, checkpoints, accelerator)
    return sum(e["images"] for e in result.history) / sum(e["epoch_seconds"] for e in result.history)


def bare_images_per_s(run: RunConfig, train: SplitTensors) -> float:
    """The same training written plainly: the run's model, batch size, SGD and cross-entropy, shuffled
    batches cut from one permutation after another, no augmentation."""
    assert run.optimizer.name == "sgd" and run.sampler.name == "shuffle" and run.loss.name == METHOD
    torch.manual_seed(run.seed)
    num_classes = int(train.labels.max()) + 1
    model = Classifier(models.build(run.model.name, **run.model.kwargs), num_classes, "linear")
    optimizer = torch.optim.SGD(model.parameters(), **run.optimizer.kwargs)
    batch_size = run.sampler.kwargs["batch_size"]
    generator = torch.Generator().manual_seed(run.seed)
    order = torch.randperm(len(train.labels), generator=generator)
    seconds, images = 0.0, 0
    for _ in range(run.epochs):
        model.train()
        started = time.perf_counter()
        for _ in range(run.batches_per_epoch):
            if len(order) < batch_size:
                order = torch.randperm(len(train.labels), generator=generator)
            batch, order = order[:batch_size], order[batch_size:]
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds += time.perf_counter() - started
        images += run.batches_per_epoch * batch_size
    return images / seconds


def measure_trainer(sizes: Sizes, repeats: int, scratch: Path) -> tuple[RunConfig, dict[str, list[float]]]:
    """Images/s of the bare loop and the trainer without and with the shift, interleaved, on 1 thread."""
    # a constant learning rate, as the bare loop's
    plain = cpu_run(sizes, sizes.trainer_epochs, sizes.trainer_batches, augment="none", lr_schedule=None)
    shifted = cpu_run(sizes, sizes.trainer_epochs, sizes.trainer_batches, augment="shift", lr_schedule=None)
    train, test = runner.load_run_data(plain, PREPARED)
    accelerator = Accelerator(cpu=True)
    fns: dict[str, Callable[[], float]] = {
        "bare": lambda: bare_images_per_s(plain, train),
        "trainer": lambda: trainer_images_per_s(plain, train, test, accelerator, scratch),
        "trainer_shift": lambda: trainer_images_per_s(shifted, train, test, accelerator, scratch),
    }
    rates: dict[str, list[float]] = {name: [] for name in fns}
    with parallel.torch_threads(1):
        for _ in range(repeats):
            for name, fn in fns.items():
                rates[name].append(fn())
    return plain, rates


# -- 2. workers ------------------------------------------------------------------------------------------


def stage_params(sizes: Sizes, scratch: Path) -> Path:
    """params.yaml with the squentropy paper cut to ``STAGE_METHODS`` x ``STAGE_SEEDS`` short cpu runs."""
    params = yaml.safe_load(PARAMS.read_text())
    params["profile"] = PROFILE
    section = params[PAPER]
    section["methods"] = {name: section["methods"][name] for name in STAGE_METHODS}
    budget = section["profiles"][PROFILE]
    budget.update(seeds=STAGE_SEEDS, epochs=sizes.stage_epochs, batches_per_epoch=sizes.stage_batches)
    if sizes.eval_items is not None:
        budget["eval"] = {"max_items": sizes.eval_items}
    path = scratch / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def stage_seconds(params: Path, scratch: Path, workers: int, threads: int) -> float:
    """Wall time of the run stage into fresh records and checkpoints (so every run trains)."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    started = time.perf_counter()
    runner.run_paper(
        PAPER,
        dataset=DATASET,
        params_path=params,
        profile=PROFILE,
        records_root=work / "records",
        prepared_root=PREPARED,
        checkpoints_root=work / "checkpoints",
        workers=workers,
        threads=threads,
    )
    return time.perf_counter() - started


def worker_start_seconds() -> float:
    """A fresh interpreter importing ``common.runner`` from this checkout: what a spawned worker pays first."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import common.runner"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


STAGES = {"1 worker x 1 thread": (1, 1), "2 workers x 1 thread": (2, 1), "1 worker x 2 threads": (1, 2)}


def measure_workers(sizes: Sizes, repeats: int, scratch: Path) -> dict[str, list[float]]:
    params = stage_params(sizes, scratch)
    seconds: dict[str, list[float]] = {name: [] for name in [*STAGES, "worker start-up"]}
    for _ in range(repeats):
        for name, (workers, threads) in STAGES.items():
            seconds[name].append(stage_seconds(params, scratch, workers, threads))
        seconds["worker start-up"].append(worker_start_seconds())
    return seconds


# -- 3. a run's fixed cost -------------------------------------------------------------------------------


@contextmanager
def timers(totals: dict[str, float], targets: dict[str, list[tuple[Any, str]]]) -> Iterator[None]:
    """Each ``(owner, attribute)`` of ``targets[key]`` replaced by a wrapper that adds its time to
    ``totals[key]``; put back afterwards."""
    with ExitStack() as stack:
        for key, attributes in targets.items():
            for owner, name in attributes:
                original = getattr(owner, name)

                def timed(*args: Any, _original: Callable = original, _key: str = key, **kwargs: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return _original(*args, **kwargs)
                    finally:
                        totals[_key] += time.perf_counter() - started

                setattr(owner, name, timed)
                stack.callback(setattr, owner, name, original)
        yield


PARTS = {  # what is timed inside _train_and_record, besides the training epochs
    "evaluation": [(classification, "evaluate_classifier")],
    "data": [(runner, "load_run_data"), (runner, "data_fingerprint")],
    "checkpoints": [(trainer, "_save_checkpoint")],
    "MLflow": [(RunTracker, name) for name in ("__enter__", "__exit__", "log_metrics", "log_artifact")],
}


def one_run_parts(
    run: RunConfig, scratch: Path, commit: str, dirty: bool, code_hash: str
) -> dict[str, float]:
    """Seconds of one ``_train_and_record`` (into fresh checkpoints and records) and of its parts."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    context = runner._RunContext(PAPER, commit, dirty, {DATASET: code_hash}, PREPARED, work / "checkpoints")
    path = record_path(work / "records", PAPER, run.dataset, run.method, run.seed)
    parts = dict.fromkeys(PARTS, 0.0)
    with timers(parts, PARTS), parallel.torch_threads(1):
        started = time.perf_counter()
        runner._train_and_record(context, runner.process_accelerator(), run, path, {})
        total = time.perf_counter() - started
    training = sum(epoch["epoch_seconds"] for epoch in json.loads(path.read_text())["history"])
    return {"total": total, "training": training, **parts}


def cold_data_seconds(run: RunConfig) -> float:
    """``load_run_data`` with the loader's caches emptied: the first run in a fresh worker."""
    for cached in (runner._load_split, runner._pixel_stats, runner._model_inputs):
        cached.cache_clear()
    started = time.perf_counter()
    with parallel.torch_threads(1):
        runner.load_run_data(run, PREPARED)
    return time.perf_counter() - started


def measure_fixed_cost(sizes: Sizes, repeats: int, scratch: Path) -> tuple[RunConfig, list[dict], float]:
    run = cpu_run(sizes, sizes.run_epochs, sizes.run_batches)
    commit, dirty = git_commit(), git_dirty()  # once per stage, outside the runs
    code_hash = run_code_hash(PAPER, DATASET, PARAMS)
    cold = cold_data_seconds(run)
    return run, [one_run_parts(run, scratch, commit, dirty, code_hash) for _ in range(repeats)], cold


# -- the table -------------------------------------------------------------------------------------------


def verdict(value: float, goal: float, quick: bool) -> str:
    if quick:
        return "(--quick: not a measurement)"
    return "met" if value >= goal else "NOT met"


def print_trainer(run: RunConfig, rates: dict[str, list[float]], repeats: int, quick: bool) -> None:
    print(
        f"\n1. trainer vs bare loop: training images/s over {run.epochs} epochs x {run.batches_per_epoch} "
        f"batches of {run.sampler.kwargs['batch_size']}, 1 thread; best and median of {repeats} (interleaved)"
    )
    print(f"{'row':34s} {'best img/s':>11s} {'median':>9s} {'best/bare':>9s} {'med/bare':>9s}  goal")
    bare = rates["bare"]
    rows = {"bare PyTorch loop (reference)": "bare", "trainer, augment none": "trainer"}
    rows["trainer, augment shift"] = "trainer_shift"
    for label, name in rows.items():
        best, mid = max(rates[name]), statistics.median(rates[name])
        ratio = best / max(bare)
        goal = {
            "trainer": f"trainer/bare >= {TRAINER_GOAL}: {verdict(ratio, TRAINER_GOAL, quick)}",
            "trainer_shift": "(with the repo's default augmentation)",
        }.get(name, "")
        print(
            f"{label:34s} {best:11.1f} {mid:9.1f} {ratio:9.3f} {mid / statistics.median(bare):9.3f}  {goal}"
        )


def print_workers(sizes: Sizes, seconds: dict[str, list[float]], repeats: int, quick: bool) -> None:
    runs = len(STAGE_METHODS) * len(STAGE_SEEDS)
    print(
        f"\n2. run stage of {runs} runs ({' and '.join(STAGE_METHODS)} x seeds {STAGE_SEEDS}, "
        f"{sizes.stage_epochs} epochs x {sizes.stage_batches} batches each): wall s, best and median of "
        f"{repeats} (interleaved)"
    )
    print(f"{'row':34s} {'best s':>11s} {'median':>9s} {'speed-up':>8s}  goal")
    reference = min(seconds["1 worker x 1 thread"])
    for name in STAGES:
        best, mid = min(seconds[name]), statistics.median(seconds[name])
        speedup = reference / best
        goal = ""
        if name == "2 workers x 1 thread":
            goal = f">= {WORKERS_GOAL}x: {verdict(speedup, WORKERS_GOAL, quick)}"
        label = f"{name} (reference)" if name == "1 worker x 1 thread" else name
        print(f"{label:34s} {best:11.2f} {mid:9.2f} {speedup:7.2f}x  {goal}")
    start = seconds["worker start-up"]
    print(f"{'worker start-up (import, no run)':34s} {min(start):11.2f} {statistics.median(start):9.2f}")


def print_fixed_cost(run: RunConfig, parts: list[dict], cold: float, repeats: int, quick: bool) -> None:
    fastest = min(parts, key=lambda p: p["total"])  # parts of one execution add up to its total
    total, training = fastest["total"], fastest["training"]
    outside = total - training
    rest = outside - sum(fastest[name] for name in PARTS)
    print(
        f"\n3. fixed cost of one run: {PAPER} {run.method} seed {run.seed}, {run.epochs} epochs x "
        f"{run.batches_per_epoch} batches, augment {run.augment}, 1 thread; the fastest of {repeats} "
        f"(totals {', '.join(format(p['total'], '.2f') for p in parts)} s)"
    )
    print(f"{'part':34s} {'seconds':>11s} {'share':>9s}")
    rows = {
        "training (sum of epoch_seconds)": training,
        "evaluation (evaluate_classifier)": fastest["evaluation"],
        "other": outside - fastest["evaluation"],
        "  data (cached) + fingerprint": fastest["data"],
        "  checkpoints (each epoch)": fastest["checkpoints"],
        "  MLflow (RunTracker calls)": fastest["MLflow"],
        "  the rest (set-up, tags, record)": rest,
        "total (_train_and_record)": total,
    }
    for label, value in rows.items():
        print(f"{label:34s} {value:11.2f} {value / total:9.1%}")
    share = outside / total
    status = "(--quick: not a measurement)" if quick else ("met" if share <= OUTSIDE_GOAL else "NOT met")
    print(f"outside training: {share:.1%} of the run; goal <= about {OUTSIDE_GOAL:.0%}: {status}")
    print(f"not in the total: a worker's first run also loads the data cold: {cold:.2f} s")


@contextmanager
def scratch_store() -> Iterator[Path]:
    """A temporary folder holding the MLflow store (its experiment's artifacts there too), set as
    ``MLFLOW_TRACKING_URI`` for this process and the workers it spawns; removed afterwards."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as folder:
        scratch = Path(folder)
        uri = f"sqlite:///{scratch / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        try:  # a store that exists, as a stage finds it: its schema is not created inside a measurement
            MlflowClient(uri).create_experiment(PAPER, artifact_location=(scratch / "mlartifacts").as_uri())
            yield scratch
        finally:
            if previous is None:
                del os.environ["MLFLOW_TRACKING_URI"]
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


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
    with scratch_store() as scratch:
        trainer_run, rates = measure_trainer(sizes, repeats, scratch)
        workers = measure_workers(sizes, repeats, scratch)
        fixed_run, parts, cold = measure_fixed_cost(sizes, repeats, scratch)

    print()
    print(
        f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"({parallel.usable_cpus()} usable), torch {torch.__version__} ({default_threads} threads by default; "
        "1 a run unless a row says otherwise), Python "
        f"{platform.python_version()}"
    )
    print(
        f"# {PAPER} params.yaml, profile {PROFILE}, data {PREPARED.relative_to(REPO)}/{DATASET} (train_limit "
        f"{trainer_run.train_limit}, test images {trainer_run.eval.max_items or 'all'}); seeds: "
        f"{trainer_run.seed} (sections 1, 3), {STAGE_SEEDS} (section 2); --repeats {repeats}"
        f"{', --quick' if args.quick else ''}; {time.perf_counter() - started:.0f} s in all"
    )
    print_trainer(trainer_run, rates, repeats, args.quick)
    print_workers(sizes, workers, repeats, args.quick)
    print_fixed_cost(fixed_run, parts, cold, repeats, args.quick)


if __name__ == "__main__":
    main()
