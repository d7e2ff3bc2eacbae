"""Classification metrics: top-1 accuracy, per-class accuracy, calibration (ECE, reliability diagrams).

* ``top1_accuracy``: fraction of samples whose arg-max class is the target (ties: the lowest class index,
  ``torch.argmax``'s rule).
* ``per_class_accuracy``: recall of each class, ``nan`` for a class with no sample; ``shot_accuracy``
  groups it into the many / medium / few-shot classes of long-tailed recognition (Liu et al., "Large-Scale
  Long-Tailed Recognition in an Open World", CVPR 2019: more than 100, 20 to 100, fewer than 20 training
  samples).
* ``expected_calibration_error`` (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
  Sec. 2): the confidence of a prediction is its largest probability; the samples fall into ``n_bins``
  equal-width bins ``B_m = ((m - 1) / M, m / M]`` (a confidence of exactly 0 goes to the first bin) and
  ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``. ``reliability_diagram_bins`` gives the per-bin
  numbers behind it, for plots.

Inputs are ``(n, C)`` scores: logits or probabilities. ``inputs="auto"`` treats them as probabilities when
every entry is in [0, 1] and every row sums to 1 (within 1e-4), as logits (softmax applied) otherwise;
pass ``inputs="logits"`` or ``"probs"`` to decide. Accuracy needs no softmax (the arg-max is the same).

This module imports only torch and the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "corruption_accuracy",
    "ReliabilityBins",
    "expected_calibration_error",
    "per_class_accuracy",
    "reliability_diagram_bins",
    "shot_accuracy",
    "top1_accuracy",
]


def _scores(scores: Tensor, name: str = "logits") -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"{name} must be 2-D (n, num_classes), got shape {tuple(scores.shape)}")
    scores = scores.detach()
    return scores if scores.is_floating_point() else scores.double()


def _targets(targets: Tensor | Sequence[int], n: int, device: torch.device) -> Tensor:
    targets = torch.as_tensor(targets, device=device).detach().reshape(-1)
    if targets.is_floating_point() or targets.numel() != n:
        raise ValueError(
            f"targets must be {n} integer class indices, got {targets.dtype} of shape {tuple(targets.shape)}"
        )
    return targets.long()


def top1_accuracy(logits: Tensor, targets: Tensor | Sequence[int]) -> float:
    """Fraction of rows whose arg-max is the target (``nan`` for an empty batch)."""
    logits = _scores(logits)
    targets = _targets(targets, logits.shape[0], logits.device)
    if logits.shape[0] == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == targets).double().mean())


def per_class_accuracy(
    logits: Tensor, targets: Tensor | Sequence[int], num_classes: int | None = None
) -> Tensor:
    """``(num_classes,)`` float64: accuracy over the samples of each class; ``nan`` where a class has none.

    ``num_classes`` defaults to ``logits.shape[1]``; targets outside ``[0, num_classes)`` are an error.
    Its ``nanmean`` is the balanced (mean per-class) accuracy.
    """
    logits = _scores(logits)
    targets = _targets(targets, logits.shape[0], logits.device)
    num_classes = logits.shape[1] if num_classes is None else num_classes
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must be in [0, num_classes={num_classes}), got values in [{int(targets.min())}, {int(targets.max())}]"
        )
    correct = (logits.argmax(dim=1) == targets).double()
    totals = torch.bincount(targets, minlength=num_classes).double()
    hits = torch.zeros(num_classes, dtype=torch.float64, device=logits.device).index_add_(0, targets, correct)
    return torch.where(totals > 0, hits / totals.clamp_min(1), torch.full_like(totals, float("nan")))


def shot_accuracy(
    class_accuracy: Tensor, train_counts: Tensor | Sequence[int], many: int = 100, few: int = 20
) -> dict[str, float]:
    """Mean per-class accuracy over the many- (``> many`` training samples), medium- and few-shot
    (``< few``) classes (Liu et al. 2019), plus ``"all"``; classes with a ``nan`` accuracy are left out,
    and a group without any class is ``nan``."""
    class_accuracy = torch.as_tensor(class_accuracy, dtype=torch.float64)
    counts = torch.as_tensor(train_counts).to(class_accuracy.device)
    if counts.shape != class_accuracy.shape:
        raise ValueError(
            f"train_counts has shape {tuple(counts.shape)}, class_accuracy {tuple(class_accuracy.shape)}"
        )
    groups = {
        "many": counts > many,
        "medium": (counts >= few) & (counts <= many),
        "few": counts < few,
        "all": torch.ones_like(counts, dtype=torch.bool),
    }
    out = {}
    for name, mask in groups.items():
        values = class_accuracy[mask]
        values = values[~torch.isnan(values)]
        out[name] = float(values.mean()) if len(values) else float("nan")
    return out


def _probabilities(scores: Tensor, inputs: str) -> Tensor:
    scores = _scores(scores, "probs_or_logits").to(torch.promote_types(scores.dtype, torch.float32))
    if inputs == "auto":
        is_probs = bool(((scores >= 0) & (scores <= 1)).all()) and bool(
            ((scores.sum(dim=1) - 1).abs() <= 1e-4).all()
        )
        inputs = "probs" if is_probs else "logits"
    if inputs == "logits":
        return torch.softmax(scores, dim=1)
    if inputs == "probs":
        return scores
    raise ValueError(f"inputs must be 'auto', 'logits' or 'probs', got {inputs!r}")


class ReliabilityBins(NamedTuple):
    edges: Tensor  # (n_bins + 1,) bin edges 0, 1/M, ..., 1
    confidence: Tensor  # (n_bins,) mean confidence in each bin (nan if empty)
    accuracy: Tensor  # (n_bins,) accuracy in each bin (nan if empty)
    count: Tensor  # (n_bins,) int64 samples in each bin


def reliability_diagram_bins(
    probs_or_logits: Tensor, targets: Tensor | Sequence[int], n_bins: int = 15, inputs: str = "auto"
) -> ReliabilityBins:
    """Per-bin mean confidence, accuracy and count over equal-width confidence bins (Guo et al. 2017)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    probs = _probabilities(probs_or_logits, inputs).double()
    targets = _targets(targets, probs.shape[0], probs.device)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).double()
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=probs.device) / n_bins  # exactly m / M
    # bucketize with right=False: edges[i-1] < x <= edges[i] -> i, i.e. bins ((m-1)/M, m/M]
    bins = torch.bucketize(confidence, edges[1:-1], right=False)
    count = torch.bincount(bins, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(0, bins, confidence)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(0, bins, correct)
    nan = torch.full((n_bins,), float("nan"), dtype=torch.float64, device=probs.device)
    nonempty = count > 0
    denom = count.clamp_min(1).double()
    return ReliabilityBins(
        edges=edges,
        confidence=torch.where(nonempty, conf_sum / denom, nan),
        accuracy=torch.where(nonempty, hit_sum / denom, nan),
        count=count,
    )


def expected_calibration_error(
    probs_or_logits: Tensor, targets: Tensor | Sequence[int], n_bins: int = 15, inputs: str = "auto"
) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017; 15 bins as there)."""
    bins = reliability_diagram_bins(probs_or_logits, targets, n_bins, inputs)
    n = int(bins.count.sum())
    if n == 0:
        return float("nan")
    nonempty = bins.count > 0
    gaps = (bins.accuracy[nonempty] - bins.confidence[nonempty]).abs()
    return float((bins.count[nonempty].double() / n * gaps).sum())


def corruption_accuracy(predicted: dict[str, Tensor], labels: Tensor | Sequence[int]) -> dict[str, float]:
    """Accuracy on corrupted test sets: ``accuracy_<name>`` for each ``predicted[name]`` (the predicted
    labels of the same images under corruption ``name``, in the order of ``labels``), and their mean,
    ``corruption_accuracy`` (Hendrycks & Dietterich's mean over corruptions and severities, as accuracy)."""
    if not predicted:
        raise ValueError("no corrupted set")
    accuracies = {}
    for name, guesses in predicted.items():
        targets = _targets(labels, len(guesses), guesses.device)
        accuracies[f"accuracy_{name}"] = float((guesses == targets).double().mean())
    return accuracies | {"corruption_accuracy": sum(accuracies.values()) / len(accuracies)}
