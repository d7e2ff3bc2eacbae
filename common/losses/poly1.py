"""Poly-1 loss: Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov, "PolyLoss: A Polynomial Expansion Perspective
of Classification Loss Functions", ICLR 2022, on the cross-entropy or the focal loss
(:mod:`common.losses.focal`).
"""

from __future__ import annotations

from torch import Tensor

from . import LOSSES
from .base import check_real
from .classification import ClassificationLoss, one_minus, target_log_prob
from .focal import FocalLoss

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
            log_pt = target_log_prob(logits, targets)
            return (-log_pt + self.epsilon * one_minus(log_pt)).mean()
        focal, one_minus_pt = self.focal.per_sample(logits, targets)
        return (focal + self.epsilon * one_minus_pt.pow(self.focal.gamma + 1)).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, base={self.base!r}"
