"""Circle loss with class-level labels: Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, "Circle Loss: A Unified
Perspective of Pair Similarity Optimization", CVPR 2020, with the class weights as the similarity partners.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import check_real
from .margin import MarginHead


@LOSSES.register("circle_class")
class CircleClassHead(MarginHead):
    r"""Circle loss with class-level labels: Sun et al., CVPR 2020 (arXiv:2002.10857), Eq. (6) with the
    classification-layer form of Sec. 3.1: each sample has one within-class similarity, the cosine to its
    class's weight vector, and ``C - 1`` between-class similarities, the cosines to the other classes' weights::

        s_p = cos(x_i, w_{y_i}),  s_n^j = cos(x_i, w_j) for j != y_i
        L_i = log(1 + sum_{j != y_i} exp(gamma a_n^j (s_n^j - Delta_n)) * exp(-gamma a_p (s_p - Delta_p)))
        a_p = [1 + m - s_p]_+,  a_n^j = [s_n^j + m]_+,  Delta_p = 1 - m,  Delta_n = m

    which is the cross-entropy of the logits ``gamma a_p (s_p - Delta_p)`` (target) and
    ``gamma a_n^j (s_n^j - Delta_n)`` (others); mean over the batch. As in the pair-wise form
    (:class:`~common.losses.circle.CircleLoss`), ``a_p`` and ``a_n`` are constants in the backward pass.
    With ``a_p = a_n = 1`` and ``Delta_p = m``, ``Delta_n = 0`` it would be AM-Softmax (CosFace), the
    ``(s_n - s_p)`` form the paper generalizes.

    Defaults ``m = 0.25``, ``gamma = 256``: the paper's setting for face recognition, its class-level-label
    experiment. The head owns ``weight`` (``num_classes x embedding_dim``), like the other margin heads.
    """

    def __init__(self, num_classes: int, embedding_dim: int, m: float = 0.25, gamma: float = 256.0) -> None:
        super().__init__(num_classes, embedding_dim, scale=gamma)
        self.m = check_real("m", m, 0.0, 1.0)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check(embeddings, labels)
        cos = self.cosine(embeddings)
        s = cos.detach()
        target = F.one_hot(labels, self.num_classes).bool()
        alpha = torch.where(target, F.relu(1 + self.m - s), F.relu(s + self.m))
        delta = torch.where(target, 1 - self.m, self.m)
        return F.cross_entropy(self.scale * alpha * (cos - delta), labels)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, m={self.m}, gamma={self.scale}"
