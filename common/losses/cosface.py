"""Large margin cosine loss head: Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine
Loss for Deep Face Recognition", CVPR 2018: an additive margin on the target cosine
(:mod:`common.losses.margin`).
"""

from __future__ import annotations

from torch import Tensor

from . import LOSSES
from .base import check_real
from .margin import MarginHead


@LOSSES.register("cosface")
class CosFaceHead(MarginHead):
    r"""Large margin cosine loss: Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine
    Loss for Deep Face Recognition", CVPR 2018 (arXiv:1801.09414), Eq. (4)::

        L = 1/N sum_i -log( e^{s (cos(theta_{y_i}) - m)}
                            / (e^{s (cos(theta_{y_i}) - m)} + sum_{j != y_i} e^{s cos(theta_j)}) )

    Defaults ``s = 64``, ``m = 0.35``: the paper's setting (Sec. 4, implementation details); also the
    insightface ``cosface`` config (``loss_m3 = 0.35``, ``loss_s = 64``). ``m`` lies in ``[0, 2]`` (a cosine
    margin). Equal to pytorch-metric-learning's ``CosFaceLoss`` with the same weights (tested).
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, scale: float = 64.0, margin: float = 0.35
    ) -> None:
        super().__init__(num_classes, embedding_dim, scale)
        self.margin = check_real("margin", margin, 0.0, 2.0)

    def apply_margin(self, target_cos: Tensor) -> Tensor:
        return target_cos - self.margin

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"
