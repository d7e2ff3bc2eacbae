"""The one training + evaluation loop, on Hugging Face Accelerate.

The same code runs on a laptop CPU (``python``), one GPU, or N processes (``accelerate launch``).
Per epoch it trains ``batches_per_epoch`` batches of the run's sampler, then saves a checkpoint with
``accelerator.save_state`` (model, optimizer, RNG states) plus the per-epoch history; a restarted run
loads the newest complete checkpoint and continues with the next epoch. Batches depend only on
(seed, epoch), and the RNG states are restored, so a resumed run ends where an uninterrupted one does.

A pair loss or a margin head reads the embeddings (gathered across processes, with gradients); a
classification loss reads the logits of a classifier put on the model (``common.models.classifiers``), on
each process's own batch. The SAM optimizer takes its two forward-backward passes per batch (the second at
the perturbed weights, on the same augmented batch, with BatchNorm's running statistics left as the first
pass set them). A learning-rate schedule (``RunConfig.lr_schedule``) sets the rate before each step from
(epoch, step) alone.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from common import losses, models, optim, samplers
from common.config import RunConfig, engine_loss_kwargs
from common.engine.distributed import gather_with_grad
from common.engine.evaluation import (
    CLASSIFICATION,
    VIEWS,
    CorruptedTests,
    OneShotRuns,
    SplitTensors,
    evaluate,
)
from common.engine.parallel import in_worker
from common.errors import StorageError, UserError, storage_message, writing
from common.models.classifiers import Classifier

CHECKPOINT_PREFIX = "epoch_"


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss, or the model's outputs, became NaN or infinite; the run stops and is marked failed."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read (a truncated or damaged file); the message names it."""


class _NonFiniteOutputs(NonFiniteLossError):
    """The model's outputs of a batch are not finite (a loss that mines pairs may still read 0 on them); the
    training loop adds where."""


@dataclass
class RunResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    similarity_histograms: dict[str, list[float]] = field(default_factory=dict)
    reliability: dict[str, Any] = field(default_factory=dict)  # classifiers: the reliability diagram's bins
    budget: dict[str, int] = field(
        default_factory=dict
    )  # optimizer steps and training images seen, all epochs
    resumed_from_epoch: int = 0


def finite_batch_loss(run: RunConfig, where: str, *batch: Any) -> torch.Tensor:
    """``batch_loss(*batch)``; a NaN or infinite loss, or model outputs, stops the run, saying ``where``."""
    try:
        loss = batch_loss(*batch)
        what = None if torch.isfinite(loss) else f"the loss is {loss.item()}"
    except _NonFiniteOutputs:
        what = "the model's outputs are not finite"
    if what is not None:
        raise NonFiniteLossError(
            f"{run.paper} {run.key}: {what} {where}; the run stops (loss {run.loss.name}, optimizer "
            f"{run.optimizer.name} lr={run.optimizer.kwargs.get('lr', 'default')})"
        )
    return loss


def sam_inside(optimizer: torch.optim.Optimizer) -> Any:
    """The SAM optimizer inside ``optimizer`` (wrapped by Accelerate or not), else ``None``."""
    while optimizer is not None:
        if hasattr(optimizer, "first_step") and hasattr(optimizer, "second_step"):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None)
    return None


def batch_loss(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    sampler: samplers.EpochBatchSampler,
    images: torch.Tensor,
    labels: torch.Tensor,
    reads_logits: bool,
    accelerator: Accelerator,
) -> torch.Tensor:
    """The loss of one batch: a classifier's logits, an episode's queries against its support set (on each
    process alone), or the embeddings of the global batch (gathered with gradients)."""
    outputs = model(images)
    if not bool(torch.isfinite(outputs).all()):
        raise _NonFiniteOutputs("the model's outputs are not finite")
    if reads_logits:
        return criterion(outputs, labels)
    support, queries = sampler.split_batch(outputs)
    support_labels, query_labels = sampler.split_batch(labels)
    if support is not None:
        return criterion(queries, query_labels, support, support_labels)
    if accelerator.num_processes > 1:
        return criterion(gather_with_grad(queries), gather_with_grad(query_labels))
    return criterion(queries, query_labels)


@contextmanager
def frozen_batch_norm_statistics(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's statistics, but their running statistics (and batch count)
    are put back afterwards: SAM's second pass must not count the batch twice."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [{k: getattr(m, k).clone() for k in names if getattr(m, k, None) is not None} for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(layers, saved, strict=True):
                for k, value in buffers.items():
                    getattr(m, k).copy_(value)


def to_model_input(images: torch.Tensor, image_size: int, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, S, S), resized by area averaging and standardized."""
    x = images.unsqueeze(1).float().div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="area")
    return (x - mean) / std


def random_shift(
    images: torch.Tensor, max_shift: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): the only augmentation used here."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=float(images.min()))
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def augmentation_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The randomness of an epoch's augmentation (shifts, views), by (seed, epoch, rank) alone: within a seed,
    every method of a paper draws the same shifts and views for the same batches (paired seeds), whatever
    randomness its loss or head consumed when it was built, and a resumed run draws what an uninterrupted one
    does."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_009 + rank) * 2 + 1)


def latest_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, int]:
    done = [
        (int(p.name.removeprefix(CHECKPOINT_PREFIX)), p)
        for p in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and (p / "history.json").is_file()
    ]
    if not done:
        return None, 0
    epoch, path = max(done)
    return path, epoch


def _save_checkpoint(accelerator: Accelerator, checkpoint_dir: Path, epoch: int, history: list[dict]) -> None:
    """Write to a temporary directory, then rename: a checkpoint either exists whole or not at all."""
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{epoch}"
    partial = checkpoint_dir / f".partial_{CHECKPOINT_PREFIX}{epoch}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    with writing(partial, "the checkpoint"):
        try:
            accelerator.save_state(str(partial))
        except OSError:
            raise
        except Exception as err:  # torch's and safetensors' writers report a refused write without errno
            refused = _refused_checkpoint(partial, err)
            if refused is None:
                raise
            raise refused from err
        accelerator.wait_for_everyone()  # every rank has written its RNG state before rank 0 renames the folder
        if accelerator.is_main_process:
            (partial / "history.json").write_text(json.dumps(history, indent=1))
            partial.rename(final)
            for older in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*"):
                if older != final:
                    shutil.rmtree(older)
    accelerator.wait_for_everyone()


def _refused_checkpoint(partial: Path, err: Exception) -> StorageError | None:
    """A ``StorageError`` if ``err`` is a write that ``save_state`` could not finish, else ``None``.

    On a full disk or past a file size limit, PyTorch's zip writer raises a ``RuntimeError`` ("unexpected
    pos ...", "file write failed") and safetensors a ``SafetensorError`` ("... (os error 28)").
    """
    text = str(err)
    if found := re.search(r"\(os error (\d+)\)", text):
        message = storage_message(OSError(int(found[1]), text), partial, "the checkpoint")
        if message is not None:
            return StorageError(message)
    if isinstance(err, RuntimeError) and re.search(r"unexpected pos|write failed|PytorchStreamWriter", text):
        return StorageError(
            f"cannot write the checkpoint {partial}: the write failed ({text.strip().splitlines()[0][:200]}): "
            "is the disk full, or a file size limit reached? Free some space (or raise the limit) and run it "
            "again; the run resumes from its last complete checkpoint"
        )
    return None


def fit_and_evaluate(
    run: RunConfig,
    train: SplitTensors,
    test: SplitTensors,
    checkpoint_dir: Path,
    accelerator: Accelerator,
    on_epoch: Callable[[dict[str, float], int], None] = lambda metrics, epoch: None,
    one_shot: OneShotRuns | None = None,
    corrupted: CorruptedTests | None = None,
) -> RunResult:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    # The accelerator keeps every model/optimizer it prepared and saves them all in save_state: start each
    # run with none, so a checkpoint holds this run's objects only.
    accelerator.free_memory()
    set_seed(run.seed)
    model = models.build(run.model.name, **run.model.kwargs)
    class_counts = torch.bincount(train.labels).tolist()
    criterion = losses.build(
        run.loss.name, **run.loss.kwargs, **engine_loss_kwargs(run, model, class_counts=class_counts)
    )
    reads_logits = losses.reads_logits(run.loss.name)
    if reads_logits:
        model = Classifier(model, len(class_counts), run.classifier or "linear")
    memory_format = torch.channels_last if run.channels_last else torch.preserve_format
    if run.channels_last:  # weights and input batches; the activations follow
        model = model.to(memory_format=memory_format)
    trainable = list(model.parameters()) + list(criterion.parameters())
    optimizer = optim.build(run.optimizer.name, trainable, **run.optimizer.kwargs)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # the schedule's factor multiplies these
    if any(p.requires_grad for p in criterion.parameters()):  # proxy/margin heads own class weights
        model, criterion, optimizer = accelerator.prepare(model, criterion, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
        criterion = criterion.to(accelerator.device)
    sampler = samplers.build(
        run.sampler.name,
        labels=train.labels,
        batches_per_epoch=run.batches_per_epoch,
        seed=run.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        **run.sampler.kwargs,
    )

    history: list[dict[str, float]] = []
    checkpoint, start_epoch = latest_checkpoint(checkpoint_dir)
    if checkpoint is not None:
        try:
            accelerator.load_state(str(checkpoint))
            history = json.loads((checkpoint / "history.json").read_text())
        except Exception as err:  # noqa: BLE001 - safetensors, torch and json each raise their own
            raise CheckpointError(
                f"{run.paper} {run.key}: the checkpoint {checkpoint} is unreadable ({type(err).__name__}: "
                f"{err}); delete that folder to resume from the epoch before it, or {checkpoint.parent} to "
                "train the run from scratch"
            ) from err
        for past in history:
            on_epoch(past, int(past["epoch"]))

    device = accelerator.device
    sam = sam_inside(optimizer)
    view_batch = None
    if run.views is not None:
        spec = run.views
        view_batch = partial(
            importlib.import_module(VIEWS).view_batch,
            count=spec.count,
            strength=spec.strength,
            instance=spec.labels == "instance",
        )
    for epoch in range(start_epoch + 1, run.epochs + 1):
        model.train()
        sampler.set_epoch(epoch)
        if hasattr(criterion, "set_epoch"):  # schedules inside a loss, e.g. deferred re-weighting
            criterion.set_epoch(epoch)
        augmentation = augmentation_generator(run.seed, epoch, accelerator.process_index)
        started = time.perf_counter()
        total, nonzero, steps, seen = 0.0, 0, 0, 0
        bar = tqdm(
            sampler,
            desc=f"{run.key} epoch {epoch}/{run.epochs}",
            leave=False,
            disable=not accelerator.is_local_main_process or in_worker(),  # workers: the stage's bar only
        )
        for step, batch in enumerate(bar):
            images, labels = train.images[batch], train.labels[batch]
            seen += len(batch) * accelerator.num_processes  # source images (not views), every rank's
            if run.augment == "shift":
                images = random_shift(images, generator=augmentation)
            if view_batch is not None:
                images, labels = view_batch(images, labels, torch.as_tensor(batch), generator=augmentation)
            images, labels = images.to(device, memory_format=memory_format), labels.to(device)

            if run.lr_schedule is not None:
                factor = run.lr_schedule.factor(epoch, step, run.epochs, run.batches_per_epoch)
                for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base_lr * factor
            batch = (model, criterion, sampler, images, labels, reads_logits, accelerator)
            loss = finite_batch_loss(run, f"at epoch {epoch}, step {step}", *batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if sam is None:
                optimizer.step()
            else:
                sam.first_step(zero_grad=True)
                with frozen_batch_norm_statistics(model):
                    where = f"at SAM's perturbed weights, epoch {epoch}, step {step}"
                    accelerator.backward(finite_batch_loss(run, where, *batch))
                sam.second_step(zero_grad=True)
            total += loss.item()
            nonzero += int(loss.item() != 0.0)
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        metrics = {
            "epoch": epoch,
            "train_loss": total / steps,
            "nonzero_loss_fraction": nonzero / steps,
            "steps": steps,
            "images": seen,
            "epoch_seconds": time.perf_counter() - started,
            **({"lr": optimizer.param_groups[0]["lr"]} if run.lr_schedule is not None else {}),
        }
        history.append(metrics)
        on_epoch(metrics, epoch)
        _save_checkpoint(accelerator, checkpoint_dir, epoch, history)

    budget = {key: int(sum(epoch[key] for epoch in history)) for key in ("steps", "images")}
    result = RunResult(metrics={}, history=history, budget=budget, resumed_from_epoch=start_epoch)
    if accelerator.is_main_process:
        trained, criterion = accelerator.unwrap_model(model), accelerator.unwrap_model(criterion)
        if reads_logits:
            classification = importlib.import_module(CLASSIFICATION)
            result.metrics, result.reliability = classification.evaluate_classifier(
                run, trained, criterion, device, train, test, corrupted
            )
        else:
            result.metrics, result.similarity_histograms = evaluate(
                run, trained, criterion, device, train, test, one_shot, corrupted
            )
        if any(not math.isfinite(v) for v in result.metrics.values()):
            raise NonFiniteLossError(
                f"{run.paper} {run.key}: evaluation produced non-finite metrics {result.metrics}"
            )
    accelerator.wait_for_everyone()
    return result
