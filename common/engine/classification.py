"""What is measured after training a classifier (a run whose loss reads logits), on the test split.

Metrics: ``top1_accuracy``; ``balanced_accuracy`` (the mean per-class accuracy); ``nll`` (the test
cross-entropy) and ``ece`` (expected calibration error, ``eval.calibration_bins`` equal-width bins, Guo et al.
2017), both on the model's own probabilities (the loss's ``calibration_inputs``: the softmax, or the square
loss's estimate); with ``eval.shot_groups``, ``accuracy_many`` / ``accuracy_medium`` / ``accuracy_few`` over the classes
grouped by their training samples (a group without classes is left out); with ``eval.sharpness``,
``sharpness_rho`` and ``hessian_top_eigenvalue`` of the training loss on a fixed subset of the training data
(``common.metrics.sharpness``); with ``eval.train_accuracy``, ``train_top1_accuracy`` on the training
images and the labels trained on (noisy ones included); with ``eval.probe``, the metrics of a linear probe on
the features its classifier reads (``common.engine.representation``: ``probe_top1_accuracy`` and the rest), so
that it compares with an embedding loss by the same readout. The reliability diagram's bins go to the record
for the report's plots.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
import torch.nn.functional as F

from common.config import RunConfig
from common.engine.evaluation import REPRESENTATION, SHARPNESS, CorruptedTests, SplitTensors, embed
from common.metrics.classification import (
    corruption_accuracy,
    expected_calibration_error,
    per_class_accuracy,
    reliability_diagram_bins,
    shot_accuracy,
    top1_accuracy,
)


def _finite_or_none(values: torch.Tensor) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in values.tolist()]


def _log(probabilities: torch.Tensor) -> torch.Tensor:
    """The log of probabilities, a zero one counted as the smallest positive number (a finite NLL)."""
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


def evaluate_classifier(
    run: RunConfig,
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    device: torch.device,
    train: SplitTensors,
    test: SplitTensors,
    corrupted: CorruptedTests | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The run's metrics and its reliability-diagram bins (``edges``, ``confidence``, ``accuracy``, ``count``)."""
    spec = run.eval
    logits = criterion.test_logits(embed(model, test.images, device).double())
    num_classes = logits.shape[1]
    class_accuracy = per_class_accuracy(logits, test.labels, num_classes)
    scores, kind = criterion.calibration_inputs(logits)  # the model's own probabilities
    nll = F.cross_entropy(scores, test.labels) if kind == "logits" else F.nll_loss(_log(scores), test.labels)
    metrics = {
        "top1_accuracy": top1_accuracy(logits, test.labels),
        "balanced_accuracy": float(class_accuracy.nanmean()),
        "nll": float(nll),
        "ece": expected_calibration_error(scores, test.labels, spec.calibration_bins, inputs=kind),
    }
    if spec.shot_groups is not None:
        counts = torch.bincount(train.labels, minlength=num_classes)
        groups = shot_accuracy(class_accuracy, counts, spec.shot_groups.many, spec.shot_groups.few)
        metrics |= {f"accuracy_{name}": groups[name] for name in ("many", "medium", "few")}
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    if spec.train_accuracy:
        metrics["train_top1_accuracy"] = top1_accuracy(embed(model, train.images, device), train.labels)
    if spec.sharpness is not None:
        metrics |= _sharpness(run, model, criterion, device, train)
    if corrupted is not None:
        predicted = {name: embed(model, x, device).argmax(dim=1) for name, x in corrupted.images.items()}
        metrics |= corruption_accuracy(predicted, corrupted.labels)
    if spec.probe is not None:
        representation = importlib.import_module(REPRESENTATION)
        encoder = model.embedder  # a Classifier's network before its last layer
        metrics |= representation.representation_metrics(
            run, encoder, device, train, test, embed(encoder, test.images, device), corrupted
        )
    bins = reliability_diagram_bins(scores, test.labels, spec.calibration_bins, inputs=kind)
    reliability = {
        "edges": bins.edges.tolist(),
        "confidence": _finite_or_none(bins.confidence),
        "accuracy": _finite_or_none(bins.accuracy),
        "count": bins.count.tolist(),
    }
    return metrics, reliability


def _sharpness(
    run: RunConfig,
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    device: torch.device,
    train: SplitTensors,
) -> dict[str, float]:
    """Sharpness of the training loss on ``eval.sharpness.samples`` training samples (the same for every run)."""
    spec = run.eval.sharpness
    sharpness = importlib.import_module(SHARPNESS)
    keep = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))[: spec.samples]
    images, labels = train.images[keep].to(device), train.labels[keep].to(device)
    model.eval()

    def loss() -> torch.Tensor:
        return criterion(model(images), labels)

    return {
        "sharpness_rho": sharpness.rho_sharpness(model, loss, spec.rho, spec.ascent_steps),
        "hessian_top_eigenvalue": sharpness.hessian_top_eigenvalue(model, loss, spec.power_iterations),
    }
