"""Shared base of the classification losses on logits: ``cross_entropy`` (label smoothing, class weights),
``focal``, ``poly1``, ``squentropy``, ``ldam``, each in the module of its name, with deferred re-weighting
(DRW); this module registers nothing.

Every loss is called as ``loss(logits, targets) -> scalar``: ``logits`` of shape ``(batch, C)``, ``targets``
the integer class indices of shape ``(batch,)``; the result is the mean over the batch (the weighted mean
``sum_i w_{y_i} l_i / sum_i w_{y_i}`` when per-class weights are on, as ``torch.nn.functional.cross_entropy``
and the official LDAM-DRW code do). With ``z = logits[i]``, ``y = targets[i]`` and ``p = softmax(z)``,
``p_t = p_y`` is the probability of the target class.

Per-class weights have one mechanism, :class:`DeferredReweighting`, shared by ``cross_entropy`` and ``ldam``:
explicit ``class_weights`` (always on), or the class-balanced weights of :func:`effective_number_weights`
computed from ``class_counts`` and switched on after ``drw_epoch`` epochs by
:meth:`DeferredReweighting.set_epoch` (``drw_epoch=0``: re-weighted from the start, the "RW" baselines;
``drw_epoch=k > 0``: DRW). Configs::

    CE            cross_entropy
    CE-RW         cross_entropy  class_counts=[...], drw_epoch=0
    CE-DRW        cross_entropy  class_counts=[...], drw_epoch=160
    LDAM-DRW      ldam           class_counts=[...], drw_epoch=160
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import check_int, check_real


def check_class_counts(class_counts: object) -> list[int]:
    """A list of at least two positive integers (training samples per class), or ``ValueError``."""
    if (
        isinstance(class_counts, (str, bytes))
        or not isinstance(class_counts, Sequence)
        or len(class_counts) < 2
    ):
        raise ValueError(f"class_counts must be a list of at least 2 positive integers, got {class_counts!r}")
    for n in class_counts:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"class_counts must hold positive integers (one per class), got {class_counts!r}"
            )
    return list(class_counts)


def check_logits(logits: Tensor, targets: Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``(batch, C)`` and ``targets`` integer ``(batch,)``."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (batch, classes), got shape {tuple(logits.shape)}")
    if targets.ndim != 1 or len(targets) != len(logits):
        raise ValueError(f"targets must be 1-D of length {len(logits)}, got shape {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer class indices, got dtype {targets.dtype}")


def effective_number_weights(class_counts: Sequence[int], beta: float = 0.9999) -> Tensor:
    r"""Class-balanced weights of Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective
    Number of Samples", CVPR 2019, Sec. 3: ``w_j = 1 / E_{n_j} = (1 - beta) / (1 - beta^{n_j})``, the inverse
    of the effective number of samples of class ``j``, normalised so that ``sum_j w_j = C``.

    ``beta = 0`` gives all ones, ``beta -> 1`` the inverse class frequency. Default ``beta = 0.9999``: the
    official LDAM-DRW code (``cifar_train.py``, ``train_rule`` "Reweight" and "DRW"), which normalises the
    same way. Returned as a float64 tensor of length ``C``.
    """
    counts = torch.tensor(check_class_counts(class_counts), dtype=torch.float64)
    beta = check_real("beta", beta, 0.0, 1.0, high_open=True)
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return weights / weights.sum() * len(counts)


class ClassificationLoss(nn.Module):
    """``loss(logits, targets) -> scalar``: the base checks shapes, subclasses define ``loss_from_logits``.

    ``inputs = "logits"`` tells the engine to put a classifier on the model and feed the loss its logits (a
    pair loss or a margin head reads embeddings)."""

    inputs = "logits"

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits(logits, targets)
        return self.loss_from_logits(logits, targets)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def test_logits(self, logits: Tensor) -> Tensor:
        """The logits whose softmax is the trained model's class probabilities: those the loss's softmax
        reads, less anything that exists only in training (a margin on the target, class weights)."""
        return logits

    def calibration_inputs(self, test_logits: Tensor) -> tuple[Tensor, str]:
        """The model's own class probabilities from its :meth:`test_logits`, as the scores and their kind
        (``"logits"`` or ``"probs"``) that ``common.metrics.classification`` reads: for a softmax loss, the test
        logits themselves; a loss that estimates the probabilities otherwise (the square loss) overrides this,
        so that calibration is measured on its estimate."""
        return test_logits, "logits"


class DeferredReweighting:
    r"""Mixin: per-class weights of a cross-entropy, on from the start or switched on at an epoch.

    Deferred re-weighting, Cao et al., NeurIPS 2019 (LDAM), Algorithm 1: train with uniform weights for the
    first ``drw_epoch`` epochs, then with the class-balanced weights :func:`effective_number_weights` of
    ``class_counts``. The official code (``cifar_train.py``, ``train_rule == 'DRW'``) computes the weights of
    0-based epoch ``e`` with ``beta = [0, 0.9999][e // 160]``: 160 uniform epochs, weights on from the 161st
    of 200; ``drw_epoch = 160`` is that schedule. :meth:`set_epoch` takes the epoch as the engine numbers it
    (``common/engine/trainer.py``: 1-based, the first epoch is 1, called before each epoch) and turns the
    weights on iff ``epoch > drw_epoch``; before any call the loss is before its first epoch (weights on iff
    ``drw_epoch == 0``).

    The weights are a non-persistent buffer (they move with ``.to(device)``, and stay out of the state dict,
    being a function of the config); whether they are on is recomputed by ``set_epoch``, so resuming at an
    epoch restores it.
    """

    drw_epoch: int | None
    reweighting: bool

    def _init_class_weights(
        self,
        class_weights: Sequence[float] | None,
        class_counts: Sequence[int] | None,
        drw_epoch: int | None,
        beta: float,
    ) -> None:
        self.beta = check_real("beta", beta, 0.0, 1.0, high_open=True)
        self.drw_epoch = None if drw_epoch is None else check_int("drw_epoch", drw_epoch, 0)
        weights = None
        if class_weights is not None:
            if drw_epoch is not None:
                raise ValueError(
                    "class_weights and drw_epoch exclude each other: give class_counts with drw_epoch"
                )
            weights = _check_class_weights(class_weights)
        elif drw_epoch is not None:
            if class_counts is None:
                raise ValueError("drw_epoch needs class_counts (the training samples per class)")
            weights = effective_number_weights(class_counts, self.beta)
        self.register_buffer("_class_weights", weights, persistent=False)
        self.reweighting = class_weights is not None or self.drw_epoch == 0

    def set_epoch(self, epoch: int) -> None:
        """Weights on iff ``epoch > drw_epoch`` (``epoch`` 1-based, as the engine counts); else a no-op."""
        epoch = check_int("epoch", epoch, 1)
        if self.drw_epoch is not None:
            self.reweighting = epoch > self.drw_epoch

    def class_weights_for(self, logits: Tensor) -> Tensor | None:
        """The per-class weights in the dtype of ``logits`` while they are on, else ``None``."""
        if not self.reweighting or self._class_weights is None:
            return None
        if len(self._class_weights) != logits.shape[1]:
            raise ValueError(
                f"logits have {logits.shape[1]} classes but the class weights {len(self._class_weights)}"
            )
        return self._class_weights.to(logits.dtype)


def _check_class_weights(class_weights: object) -> Tensor:
    if (
        isinstance(class_weights, (str, bytes))
        or not isinstance(class_weights, Sequence)
        or len(class_weights) < 2
    ):
        raise ValueError(f"class_weights must be a list of at least 2 numbers, got {class_weights!r}")
    values = [check_real("class_weights", w, 0.0) for w in class_weights]
    if not any(values):
        raise ValueError(f"class_weights must not be all zero, got {class_weights!r}")
    return torch.tensor(values, dtype=torch.float64)


def target_log_prob(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p_t`` per sample."""
    return logits.log_softmax(dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)


def one_minus(log_p: Tensor) -> Tensor:
    """``1 - p`` from ``log p``, accurate near ``p = 1``, clamped away from 0 (finite gradients of powers)."""
    return (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
