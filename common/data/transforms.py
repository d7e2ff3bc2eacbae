"""Dataset-level label transforms: long-tailed subsets, synthetic label noise, held-out tuning splits.

Both work on a vector of integer labels and are deterministic given ``seed`` (a private
``torch.Generator``; the global RNG is untouched). Pure torch: this module imports no ``datasets``.

Long tail (:func:`long_tailed_indices`): class ``c`` (the c-th smallest label, so class 0 is the head)
keeps ``n_c`` of its samples, a uniformly random subset:

* ``"exponential"`` (Cui et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019;
  Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019):
  ``n_c = floor(n_max * (1 / ratio) ** (c / (C - 1)))``, as ``int(img_max * imb_factor ** (c / (C - 1.0)))``
  in Cao et al.'s ``imbalance_cifar.py``; on CIFAR-10 (5000 a class) ratio 100 gives 5000, 2997, 1796,
  1077, 645, 387, 232, 139, 83, 50 (12,406 images) and ratio 10 gives 20,431 images.
* ``"step"`` (Buda et al. 2018; Cao et al.'s ``step``): the last ``int(minority_fraction * C)`` classes
  keep ``floor(n_max / ratio)``, the others ``n_max``.

``n_max`` defaults to the size of the smallest class, so every target can be met (on a balanced dataset
it is the per-class count, as in Cao et al.). The floor forgives float noise: a value within 1e-9 of an
integer rounds to it (``500 * 0.01`` is 5, not 4).

Label noise (:func:`noisy_labels`), each sample independently with probability ``rate``:

* ``"symmetric"``: the label is replaced by one of the *other* ``C - 1`` classes, uniformly. Papers use
  two conventions: "other class" (Han et al., Co-teaching, NeurIPS 2018, whose transition matrix has
  ``rate / (C - 1)`` off the diagonal) and "any class" (Zhang et al., "Understanding deep learning requires
  rethinking generalization", ICLR 2017; Li et al., DivideMix, ICLR 2020), where a noise level ``r`` changes
  only ``r * (C - 1) / C`` of the labels. We use "other class", so ``rate`` is the fraction of labels that
  are actually wrong; to reproduce an "any class" level ``r``, pass ``rate = r * (C - 1) / C`` (and check
  which convention the replicated paper used).
* ``"asymmetric"`` (class-dependent): a sample of class ``c`` in ``transition`` becomes
  ``transition[c]``; classes absent from ``transition`` are never flipped. The default mapping is
  ``c -> (c + 1) mod C`` (the "pair flipping" of Han et al. 2018); :data:`CIFAR10_ASYMMETRIC` is Patrini
  et al.'s CIFAR-10 mapping (truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "CIFAR10_ASYMMETRIC",
    "LongTailedSubset",
    "fixed_subset",
    "NoisyLabels",
    "long_tailed_counts",
    "long_tailed_indices",
    "noisy_labels",
]

#: Patrini et al., "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach",
#: CVPR 2017: truck -> automobile, bird -> airplane, deer -> horse, cat -> dog, dog -> cat.
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def fixed_subset(n: int, limit: int | None) -> torch.Tensor:
    """Increasing indices of a fixed random subset of ``limit`` of ``n`` items (the same for every method,
    seed and run), or all of them."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values


class LongTailedSubset(NamedTuple):
    indices: torch.Tensor  # positions kept, increasing (the dataset's order is preserved)
    counts: torch.Tensor  # samples kept per class, in the order of torch.unique(labels)


class NoisyLabels(NamedTuple):
    labels: torch.Tensor  # the noisy labels (int64)
    flipped: torch.Tensor  # bool: True where the label changed


def _as_labels(labels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    return labels.long().cpu()


def _floor(value: float) -> int:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < 1e-9 else math.floor(value)


def long_tailed_counts(
    num_classes: int,
    n_max: int,
    imbalance_ratio: float,
    profile: str = "exponential",
    minority_fraction: float = 0.5,
) -> list[int]:
    """Samples kept for each class ``0 .. num_classes - 1`` (see the module docstring)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if not (math.isfinite(imbalance_ratio) and imbalance_ratio >= 1):
        raise ValueError(
            f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio}"
        )
    if profile == "exponential":
        if num_classes == 1:
            return [n_max]
        factor = 1.0 / imbalance_ratio
        counts = [_floor(n_max * factor ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    elif profile == "step":
        if not 0 <= minority_fraction <= 1:
            raise ValueError(f"minority_fraction must be in [0, 1], got {minority_fraction}")
        minority = int(minority_fraction * num_classes)
        tail = _floor(n_max / imbalance_ratio)
        counts = [n_max] * (num_classes - minority) + [tail] * minority
    else:
        raise ValueError(f"profile must be 'exponential' or 'step', got {profile!r}")
    if min(counts) < 1:
        raise ValueError(
            f"imbalance_ratio={imbalance_ratio} leaves the smallest class with {min(counts)} samples "
            f"(n_max={n_max}); lower the ratio"
        )
    return counts


def long_tailed_indices(
    labels: Sequence[int] | torch.Tensor,
    imbalance_ratio: float,
    profile: str = "exponential",
    seed: int = 0,
    n_max: int | None = None,
    minority_fraction: float = 0.5,
) -> LongTailedSubset:
    """A long-tailed subset of a (usually balanced) labelled set.

    Args:
        labels: one integer label per sample.
        imbalance_ratio: ``n_max / n_min``, the head class over the tail class (10, 50, 100, ...).
        profile: ``"exponential"`` or ``"step"`` (module docstring).
        seed: which samples of each class are kept.
        n_max: samples of the head class; default the size of the smallest class.
        minority_fraction: the fraction of classes that are minority classes in the step profile.

    Returns:
        ``(indices, counts)``: the kept positions in increasing order and the kept count of each class,
        classes in the order of ``torch.unique(labels)`` (class 0 of the profile is the smallest label).
    """
    labels = _as_labels(labels)
    if len(labels) == 0:
        raise ValueError("labels is empty")
    classes, available = torch.unique(labels, return_counts=True)
    if n_max is None:
        n_max = int(available.min())
    counts = long_tailed_counts(len(classes), n_max, imbalance_ratio, profile, minority_fraction)
    short = [
        (int(classes[c]), int(available[c]), want)
        for c, want in enumerate(counts)
        if int(available[c]) < want
    ]
    if short:
        label, have, want = short[0]
        raise ValueError(
            f"n_max={n_max}: class {label} needs {want} samples but has {have} "
            f"({len(short)} class(es) too small); lower n_max"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)
    kept = []
    for members, want in zip(torch.split(order, available.tolist()), counts, strict=True):
        kept.append(members[torch.randperm(len(members), generator=generator)[:want]])
    indices = torch.sort(torch.cat(kept)).values
    return LongTailedSubset(indices, torch.tensor(counts, dtype=torch.long))


def noisy_labels(
    labels: Sequence[int] | torch.Tensor,
    rate: float,
    kind: str = "symmetric",
    num_classes: int | None = None,
    seed: int = 0,
    transition: Mapping[int, int] | None = None,
) -> NoisyLabels:
    """Labels with synthetic noise; each sample is corrupted independently with probability ``rate``.

    Args:
        labels: integer labels in ``[0, num_classes)``.
        rate: probability that a sample (of a class that can flip) gets a wrong label.
        kind: ``"symmetric"`` (uniform over the other classes) or ``"asymmetric"`` (``transition``).
        num_classes: ``C``; default ``labels.max() + 1``.
        seed: fixes which samples flip and to what.
        transition: asymmetric only: ``{class: noisy class}``; default ``c -> (c + 1) mod C``.

    Returns:
        ``(labels, flipped)``: the new labels and a boolean mask of the samples whose label changed.
    """
    labels = _as_labels(labels)
    if not (math.isfinite(rate) and 0 <= rate <= 1):
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must be in [0, num_classes={num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    generator = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=generator, dtype=torch.float64) < rate
    if kind == "symmetric":
        if transition is not None:
            raise ValueError("transition is for kind='asymmetric' only")
        if num_classes < 2:
            raise ValueError(f"symmetric noise needs num_classes >= 2, got {num_classes}")
        shift = torch.randint(1, num_classes, (len(labels),), generator=generator)
        noisy = torch.where(flip, (labels + shift) % num_classes, labels)
    elif kind == "asymmetric":
        if transition is None:
            transition = {c: (c + 1) % num_classes for c in range(num_classes)}
        mapping = torch.arange(num_classes)
        for source, target in transition.items():
            for name, value in (("source", source), ("target", target)):
                if not 0 <= int(value) < num_classes:
                    raise ValueError(
                        f"transition {source} -> {target}: {name} class not in [0, num_classes={num_classes})"
                    )
            if int(source) == int(target):
                raise ValueError(f"transition maps class {source} to itself")
            mapping[int(source)] = int(target)
        noisy = torch.where(flip, mapping[labels], labels)
    else:
        raise ValueError(f"kind must be 'symmetric' or 'asymmetric', got {kind!r}")
    return NoisyLabels(noisy, noisy != labels)


def holdout_indices(
    labels: Sequence[int] | torch.Tensor, share: float, by: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(kept, held_out)`` that split a training set for hyper-parameter tuning, both sorted.

    ``by="classes"``: ``max(2, round(share * C))`` whole classes are held out (for a test on unseen
    classes); at least two classes must stay. ``by="samples"``: in every class, ``round(share * n_c)``
    samples, at least 1 and at most ``n_c - 1``, are held out (for a test on the training classes).
    Deterministic given ``seed``.
    """
    labels = _as_labels(labels)
    if not 0 < share < 1:
        raise ValueError(f"share must lie in (0, 1), got {share}")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    held = torch.zeros(len(labels), dtype=torch.bool)
    if by == "classes":
        n_held = max(2, round(share * len(classes)))
        if len(classes) - n_held < 2:
            raise ValueError(
                f"holding out {n_held} of {len(classes)} classes leaves fewer than 2 to train on"
            )
        chosen = classes[torch.randperm(len(classes), generator=generator)[:n_held]]
        held = torch.isin(labels, chosen)
    elif by == "samples":
        for c in classes.tolist():
            members = torch.nonzero(labels == c).flatten()
            if len(members) < 2:
                raise ValueError(f"class {c} has {len(members)} sample; holding out samples needs 2 a class")
            n_held = min(max(1, round(share * len(members))), len(members) - 1)
            held[members[torch.randperm(len(members), generator=generator)[:n_held]]] = True
    else:
        raise ValueError(f"by must be 'classes' or 'samples', got {by!r}")
    return torch.nonzero(~held).flatten(), torch.nonzero(held).flatten()
