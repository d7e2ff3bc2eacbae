"""Focal loss: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection", ICCV 2017, in its
softmax multi-class form with optional per-class ``alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import LOSSES
from .base import check_real
from .classification import ClassificationLoss, one_minus, target_log_prob


def _check_alpha(alpha: object) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (str, bytes)) or not isinstance(alpha, Sequence) or len(alpha) < 2:
        raise ValueError(f"alpha must be None or a list of per-class weights, got {alpha!r}")
    return torch.tensor([check_real("alpha", a, 0.0) for a in alpha], dtype=torch.float64)


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
        log_pt = target_log_prob(logits, targets)
        one_minus_pt = one_minus(log_pt)
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
