"""Classification losses on logits: cross-entropy (label smoothing, class weights), focal, Poly-1, squentropy,
LDAM, with deferred re-weighting (DRW).

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
import torch.nn.functional as F
from torch import Tensor, nn

from . import LOSSES
from .base import check_real


def check_int(name: str, value: object, low: int) -> int:
    """Return ``value`` or raise ``ValueError`` naming ``name`` if it is not an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value


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
    """``loss(logits, targets) -> scalar``: the base checks shapes, subclasses define ``loss_from_logits``."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits(logits, targets)
        return self.loss_from_logits(logits, targets)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError


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


def _target_log_prob(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p_t`` per sample."""
    return logits.log_softmax(dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)


def _one_minus(log_p: Tensor) -> Tensor:
    """``1 - p`` from ``log p``, accurate near ``p = 1``, clamped away from 0 (finite gradients of powers)."""
    return (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)


def _check_alpha(alpha: object) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (str, bytes)) or not isinstance(alpha, Sequence) or len(alpha) < 2:
        raise ValueError(f"alpha must be None or a list of per-class weights, got {alpha!r}")
    return torch.tensor([check_real("alpha", a, 0.0) for a in alpha], dtype=torch.float64)


@LOSSES.register("cross_entropy")
class CrossEntropyLoss(DeferredReweighting, ClassificationLoss):
    r"""Cross-entropy, ``-log p_t``, with optional label smoothing and per-class weights.

    Label smoothing: Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception Architecture for
    Computer Vision", CVPR 2016, Sec. 7: the target is ``(1 - eps) onehot(y) + eps / C``, so the loss is
    ``(1 - eps) (-log p_y) + eps / C sum_j (-log p_j)``. Computed by ``torch.nn.functional.cross_entropy``
    (tested against a loop), with its semantics when weights and smoothing are combined.

    Per-class weights (:class:`DeferredReweighting`): ``class_weights`` (explicit, always on), or
    ``class_counts`` with ``drw_epoch`` for class-balanced weights (Cui et al. 2019) after ``drw_epoch``
    epochs:
    ``drw_epoch=0`` is the CE-RW baseline, ``drw_epoch=160`` the CE-DRW baseline of Cao et al., NeurIPS 2019
    (200 CIFAR epochs). ``class_counts`` alone would do nothing and is refused. Defaults: no smoothing, no
    weights (plain cross-entropy), ``beta = 0.9999`` (the official LDAM-DRW code).
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        class_counts: list[int] | None = None,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        self.label_smoothing = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
        if class_counts is not None:
            check_class_counts(class_counts)
            if drw_epoch is None:
                raise ValueError(
                    "class_counts without drw_epoch has no effect; set drw_epoch (0: from the start)"
                )
        self._init_class_weights(class_weights, class_counts, drw_epoch, beta)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(
            logits, targets, weight=self.class_weights_for(logits), label_smoothing=self.label_smoothing
        )

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, drw_epoch={self.drw_epoch}, "
            f"reweighting={self.reweighting}"
        )


@LOSSES.register("focal")
class FocalLoss(ClassificationLoss):
    r"""Focal loss, Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017,
    Eq. (5), in its softmax multi-class form::

        FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t),      L = mean_i FL

    ``gamma = 2`` is the paper's choice (its experiments find ``gamma = 2, alpha = 0.25`` best). Its ``alpha``
    weights the foreground class of its sigmoid (binary) form; for softmax classes there is no foreground, so
    ``alpha`` defaults to ``None`` (``alpha_t = 1``) and, when given, is a list of per-class weights
    ``alpha_t = alpha[y]``. The batch mean is a plain mean (the alpha factors are not renormalised), as in the
    official LDAM-DRW ``FocalLoss``. ``gamma = 0`` and no alpha is the cross-entropy (tested).
    """

    def __init__(self, gamma: float = 2.0, alpha: list[float] | None = None) -> None:
        super().__init__()
        self.gamma = check_real("gamma", gamma, 0.0)
        self.register_buffer("alpha", _check_alpha(alpha), persistent=False)

    def per_sample(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(FL_i, 1 - p_t)`` per sample, shared with the Poly-1 focal form."""
        log_pt = _target_log_prob(logits, targets)
        one_minus_pt = _one_minus(log_pt)
        loss = -one_minus_pt.pow(self.gamma) * log_pt
        if self.alpha is not None:
            if len(self.alpha) != logits.shape[1]:
                raise ValueError(f"logits have {logits.shape[1]} classes but alpha has {len(self.alpha)}")
            loss = loss * self.alpha.to(logits.dtype)[targets]
        return loss, one_minus_pt

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        return self.per_sample(logits, targets)[0].mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={None if self.alpha is None else self.alpha.tolist()}"


POLY1_BASES = ("ce", "focal")


@LOSSES.register("poly1")
class Poly1Loss(ClassificationLoss):
    r"""Poly-1 loss, Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov, "PolyLoss: A Polynomial Expansion
    Perspective of Classification Loss Functions", ICLR 2022 (arXiv:2204.12511). Writing the cross-entropy as
    ``-log p_t = sum_j (1 - p_t)^j / j`` and perturbing the first coefficient by ``epsilon``::

        base="ce":     L = -log(p_t) + epsilon (1 - p_t)                        (L_Poly-1)
        base="focal":  L = FL(p_t) + epsilon (1 - p_t)^(gamma + 1)              (Poly-1 focal form)

    where ``FL`` is :class:`FocalLoss` (with ``gamma`` and the optional per-class ``alpha``, which, as in the
    paper's code listing, weights the focal term only). Default ``epsilon = 1``: the paper's code listing
    (``poly1_cross_entropy(..., epsilon=1.0)``); the paper reports ``epsilon = 2`` best for ImageNet and a
    negative value (-1) for detection with the focal form, so ``epsilon >= -1`` is accepted: that bound keeps
    the loss non-negative and non-increasing in ``p_t``. ``epsilon = 0`` gives back CE / focal (tested).
    ``gamma`` and ``alpha`` belong to ``base="focal"``; ``alpha`` with ``base="ce"`` is refused.
    """

    def __init__(
        self, epsilon: float = 1.0, base: str = "ce", gamma: float = 2.0, alpha: list[float] | None = None
    ) -> None:
        super().__init__()
        self.epsilon = check_real("epsilon", epsilon, -1.0)
        if base not in POLY1_BASES:
            raise ValueError(f"base must be one of {', '.join(POLY1_BASES)}; got {base!r}")
        if base == "ce" and alpha is not None:
            raise ValueError("alpha applies to base='focal' only")
        self.base = base
        self.focal = FocalLoss(gamma=gamma, alpha=alpha) if base == "focal" else None

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.focal is None:
            log_pt = _target_log_prob(logits, targets)
            return (-log_pt + self.epsilon * _one_minus(log_pt)).mean()
        focal, one_minus_pt = self.focal.per_sample(logits, targets)
        return (focal + self.epsilon * one_minus_pt.pow(self.focal.gamma + 1)).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, base={self.base!r}"


@LOSSES.register("squentropy")
class SquentropyLoss(ClassificationLoss):
    r"""Squentropy, Hui, Belkin, Wright, "Cut your Losses with Squentropy", ICML 2023 (arXiv:2302.03952), the
    definition of ``l_sqen``: the cross-entropy plus the average square loss of the incorrect classes'
    logits::

        l(z, y) = -log p_y + 1/(C - 1) sum_{j != y} z_j^2,       L = mean_i l

    It has no hyper-parameter. The official code (Like-Hui/Squentropy_vision, ``svhn.py``, ``loss_type ==
    'sqen'``) computes the same: ``(sum z^2 - sum z_y^2) / (C - 1) / batch + CE`` (its extra ``resquare``
    factor is undefined there; 1 here). Needs ``C >= 2``.
    """

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        num_classes = logits.shape[1]
        if num_classes < 2:
            raise ValueError(f"squentropy needs at least 2 classes, got logits with {num_classes}")
        ce = F.cross_entropy(logits, targets, reduction="none")
        squares = logits.square()
        non_target = squares.sum(dim=1) - squares.gather(1, targets.unsqueeze(1)).squeeze(1)
        return (ce + non_target / (num_classes - 1)).mean()


@LOSSES.register("ldam")
class LDAMLoss(DeferredReweighting, ClassificationLoss):
    r"""Label-distribution-aware margin loss, Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets
    with Label-Distribution-Aware Margin Loss", NeurIPS 2019 (arXiv:1906.07413), Eq. (13)::

        L = -log( e^{s (z_y - Delta_y)} / (e^{s (z_y - Delta_y)} + sum_{j != y} e^{s z_j}) ),
        Delta_j = K / n_j^{1/4}

    with ``n_j`` the training samples of class ``j`` (``class_counts``, required) and ``K`` chosen so that the
    largest margin (the rarest class) is ``max_m``. Following the official code (github.com/kaidic/LDAM-DRW,
    ``losses.py`` ``LDAMLoss``: ``m_j = n_j^{-1/4} * max_m / max_k n_k^{-1/4}``, logits scaled by ``s``
    after the margin, ``F.cross_entropy`` with the per-class weights): defaults ``max_m = 0.5``, ``s = 30``
    (``cifar_train.py``). The official model feeds LDAM cosine logits (``NormedLinear``: normalised features
    and weights, ``use_norm=True`` for LDAM), so the logits given here should be cosines for ``s`` and
    ``max_m`` to mean what they do there.

    DRW (Algorithm 1) is the :class:`DeferredReweighting` mixin: ``drw_epoch`` (``None`` = off; the paper's
    CIFAR schedule is 160 of 200 epochs) and ``beta = 0.9999``. ``max_m = 0, s = 1`` is the cross-entropy
    (tested).
    """

    def __init__(
        self,
        class_counts: list[int],
        max_m: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.max_m = check_real("max_m", max_m, 0.0)
        self.s = check_real("s", s, 0.0, low_open=True)
        margins = torch.tensor([n**-0.25 for n in counts], dtype=torch.float64)
        self.register_buffer("margins", margins * (self.max_m / float(margins.max())), persistent=False)
        self._init_class_weights(None, counts, drw_epoch, beta)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[1] != len(self.margins):
            raise ValueError(f"logits have {logits.shape[1]} classes but class_counts {len(self.margins)}")
        target = targets.unsqueeze(1)
        delta = self.margins.to(logits.dtype)[targets].unsqueeze(1)
        shifted = logits.scatter(1, target, logits.gather(1, target) - delta)
        return F.cross_entropy(self.s * shifted, targets, weight=self.class_weights_for(logits))

    def extra_repr(self) -> str:
        return (
            f"classes={len(self.margins)}, max_m={self.max_m}, s={self.s}, drw_epoch={self.drw_epoch}, "
            f"reweighting={self.reweighting}"
        )
