"""The rescaled square loss: Hui & Belkin, "Evaluation of Neural Architectures Trained with Square Loss vs
Cross-Entropy in Classification Tasks", ICLR 2021, the baseline that squentropy (Hui, Belkin, Wright, ICML
2023) is compared with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import LOSSES
from .base import check_real
from .classification import ClassificationLoss


@LOSSES.register("square")
class SquareLoss(ClassificationLoss):
    r"""Rescaled square loss on the logits, Hui & Belkin, ICLR 2021 (arXiv:2006.07322), Sec. 3::

        l(z, y) = 1/C ( k (z_y - M)^2 + sum_{j != y} z_j^2 ),       L = mean_i l

    the square loss against the one-hot target scaled to ``M``, with the target class's term weighted by
    ``k``. The paper uses ``k = 1, M = 1`` (the plain square loss) for datasets with few classes (10 here) and
    rescales only for many classes (``k = 1, M = 15`` for 42 classes; ``k = 15, M = 30`` for ImageNet's 1000).
    Prediction is the arg-max of the logits, as with cross-entropy.

    Its own probability estimate is ``z / M``: the square loss regresses the one-hot target scaled to ``M``, so
    ``z_j / M`` estimates ``P(y = j | x)``. Calibration (ECE, NLL) is measured on that estimate, clipped at 0
    and normalized to sum to 1 (:meth:`calibration_inputs`); the softmax of square-loss logits near ``(1, 0,
    ..., 0)`` would cap the confidence near ``e / (e + C - 1)`` (0.23 for 10 classes) by construction.
    """

    def __init__(self, k: float = 1.0, m: float = 1.0) -> None:
        super().__init__()
        self.k = check_real("k", k, 0.0, low_open=True)
        self.m = check_real("m", m, 0.0, low_open=True)

    def loss_from_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        target = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        squares = logits.square().sum(dim=1) - target.square()
        return ((self.k * (target - self.m).square() + squares) / logits.shape[1]).mean()

    def calibration_inputs(self, test_logits: Tensor) -> tuple[Tensor, str]:
        """``z / M`` clipped at 0 and normalized; uniform where no output is above 0."""
        estimate = (test_logits / self.m).clamp_min(0.0)
        total = estimate.sum(dim=1, keepdim=True)
        normalized = estimate / total.clamp_min(torch.finfo(estimate.dtype).tiny)
        return torch.where(total > 0, normalized, 1.0 / test_logits.shape[1]), "probs"
