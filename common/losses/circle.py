"""Circle loss with pair-wise labels: Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, "Circle Loss: A Unified
Perspective of Pair Similarity Optimization", CVPR 2020: each similarity re-weighted by its distance
from its optimum.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, masked_logsumexp, masked_mean


@LOSSES.register("circle")
class CircleLoss(EmbeddingLoss):
    r"""Circle loss with pair-wise labels: Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, "Circle Loss: A Unified
    Perspective of Pair Similarity Optimization", CVPR 2020 (arXiv:2002.10857), Eq. (6) (Eq. (4), the
    re-weighted unified loss, with the optima ``O_p``, ``O_n`` and margins ``Delta_p``, ``Delta_n`` expressed
    through the single relaxation factor ``m``). Per query ``i``::

        L_i = log(1 + sum_{j in N_i} exp(gamma a_n^j (S_ij - Delta_n))
                    * sum_{k in P_i} exp(-gamma a_p^k (S_ik - Delta_p)))

        a_p^k = [O_p - S_ik]_+,  a_n^j = [S_ij - O_n]_+,  O_p = 1 + m, O_n = -m, Delta_p = 1 - m, Delta_n = m

    The self-paced weights ``a_p``, ``a_n`` are treated as constants in the backward pass (detached), as in
    pytorch-metric-learning: the gradient on each similarity is then the re-weighted one the paper describes
    (``gamma a_p`` and ``gamma a_n`` times the softmax-like pair weights). Reduction: the mean of ``L_i`` over
    the queries that have at least one positive and one negative (``L_i > 0`` for all of them); zero (live
    graph) when none.

    Defaults: ``m = 0.4``, ``gamma = 80``, the paper's setting for its pair-wise-label experiments
    (fine-grained image retrieval on CUB-200-2011, Cars196, SOP), which is the form implemented here;
    the paper uses ``gamma = 256, m = 0.25`` for face recognition and ``gamma = 128, m = 0.25`` for person
    re-identification, both trained with class-level labels (a classification head, not this pair loss).
    pytorch-metric-learning's ``CircleLoss`` has the same defaults and gives the same value and gradients
    (tested, also with ``ref_emb``).
    """

    def __init__(self, m: float = 0.4, gamma: float = 80.0) -> None:
        super().__init__()
        self.m = check_real("m", m, 0.0, 1.0)
        self.gamma = check_real("gamma", gamma, 0.0, low_open=True)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        s = sim.detach()
        alpha_p = F.relu(1 + self.m - s)
        alpha_n = F.relu(s + self.m)
        logit_p = -self.gamma * alpha_p * (sim - (1 - self.m))
        logit_n = self.gamma * alpha_n * (sim - self.m)
        losses = F.softplus(masked_logsumexp(logit_p, pos) + masked_logsumexp(logit_n, neg))
        return masked_mean(losses, pos.any(dim=1) & neg.any(dim=1))

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"
