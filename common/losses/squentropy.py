"""Squentropy: Hui, Belkin, Wright, "Cut your Losses with Squentropy", ICML 2023: the cross-entropy plus the
average square loss of the incorrect classes' logits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .classification import ClassificationLoss


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
