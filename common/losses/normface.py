"""Normalised softmax head: Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding for Face
Verification", ACM MM 2017: a scaled softmax on cosines, no margin (:mod:`common.losses.margin`).
"""

from __future__ import annotations

from torch import Tensor

from . import LOSSES
from .margin import MarginHead


@LOSSES.register("normface")
class NormFaceHead(MarginHead):
    r"""Normalised softmax: Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017 (arXiv:1704.06369), Sec. 3: the softmax loss on the cosine of L2-normalised
    features and weights, multiplied by a scale ``s`` (without it the loss cannot get small: the paper's
    Proposition 2 bounds it from below for a given ``s``)::

        L = -1/m sum_i log( e^{s cos(theta_{y_i})} / sum_j e^{s cos(theta_j)} )

    No margin (``psi`` is the identity). The paper learns ``s`` (the official
    ``prototxt/scaled_cosine_softmax.prototxt``, github.com/happynear/NormFace: a ``Scale`` layer initialised
    at 10); here ``s`` is fixed, default
    ``scale = 20``: pytorch-metric-learning's ``NormalizedSoftmaxLoss`` (``temperature = 0.05 = 1/20``), the
    setting of Zhai & Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019. Equal to
    PML's ``NormalizedSoftmaxLoss(temperature=1/scale)`` with the same weights (tested).
    """

    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 20.0) -> None:
        super().__init__(num_classes, embedding_dim, scale)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        return target_cos
