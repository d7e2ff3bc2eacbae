"""Additive angular margin loss head: Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for
Deep Face Recognition", CVPR 2019: a margin on the target angle (:mod:`common.losses.margin`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import LOSSES
from .base import check_real
from .margin import MarginHead


@LOSSES.register("arcface")
class ArcFaceHead(MarginHead):
    r"""Additive angular margin loss: Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for
    Deep Face Recognition", CVPR 2019 (arXiv:1801.07698), Eq. (3)::

        L = -1/N sum_i log( e^{s cos(theta_{y_i} + m)}
                            / (e^{s cos(theta_{y_i} + m)} + sum_{j != y_i} e^{s cos(theta_j)}) )

    Defaults ``s = 64``, ``m = 0.5`` (the paper's setting, Sec. 4.1, implementation details).
    ``cos(theta + m)`` is computed as ``cos(theta) cos(m) - sin(theta) sin(m)`` with ``sin(theta) =
    sqrt(1 - cos^2)`` (its gradient set to zero where ``cos = +-1`` exactly, instead of an infinite one).

    ``theta + m > pi``: there ``cos(theta + m)`` would increase with ``theta``, rewarding a worse angle. The
    official code replaces the target logit, for ``cos(theta) <= cos(pi - m)`` (i.e. ``theta >= pi - m``), by
    ``cos(theta) - m sin(m)``, which keeps decreasing in ``theta`` (with a downward jump of
    ``cos(m) + m sin(m) - 1``, 0.117 for ``m = 0.5``, at ``theta = pi - m``); with ``easy_margin=True`` the
    margin applies only where ``cos(theta) > 0`` and the target logit is left as it is elsewhere. Both follow
    the insightface code of the paper's time, ``src/train_softmax.py`` (``loss_type == 4``: ``threshold =
    cos(pi - m)``, ``mm = sin(pi - m) * m``, ``--easy-margin`` default 0, and ``assert m < pi/2``, the range
    accepted here), kept in ``recognition/arcface_torch/losses.py`` until 2022 (commits
    2e2e8c97..5ef98047); the current ``arcface_torch`` computes ``cos(arccos(cos) + m)`` under ``no_grad``
    with no threshold, a different (straight-through) gradient, not followed here.

    pytorch-metric-learning's ``ArcFaceLoss`` (margin in degrees: pass ``degrees(m)``; its default 28.6 deg is
    0.49916 rad, not 0.5) applies the same replacement with the condition ``theta <= pi - m`` evaluated on
    ``acos(clamp(cos))``: values and gradients agree (tested, also deep in the ``theta + m > pi`` regime); the
    only difference is the single point ``theta = pi - m`` exactly, where PML takes ``cos(theta + m) = -1``
    and the official code (and this class) ``cos(theta) - m sin(m)``. PML has no ``easy_margin``.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        self._init_margin(margin, easy_margin)

    def _init_margin(self, margin: float, easy_margin: bool) -> None:
        self.margin = check_real("margin", margin, 0.0, math.pi / 2, high_open=True)
        if not isinstance(easy_margin, bool):
            raise ValueError(f"easy_margin must be True or False, got {easy_margin!r}")
        self.easy_margin = easy_margin
        self._cos_m, self._sin_m = math.cos(self.margin), math.sin(self.margin)
        self._threshold = math.cos(math.pi - self.margin)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        sin_sq = 1.0 - target_cos * target_cos
        inside = sin_sq > 0
        sin = torch.where(inside, torch.where(inside, sin_sq, 1.0).sqrt(), 0.0)
        cos_plus_m = target_cos * self._cos_m - sin * self._sin_m
        if self.easy_margin:
            return torch.where(target_cos > 0, cos_plus_m, target_cos)
        return torch.where(target_cos > self._threshold, cos_plus_m, target_cos - self.margin * self._sin_m)

    def extra_repr(self) -> str:
        easy = ", easy_margin=True" if self.easy_margin else ""
        return f"{super().extra_repr()}, margin={self.margin}{easy}"
