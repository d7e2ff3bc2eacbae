"""NT-Xent / InfoNCE: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations" (SimCLR), ICML 2020; van den Oord, Li, Vinyals, "Representation Learning with
Contrastive Predictive Coding", 2018. Self-supervised with two views as labels: the views of one image
share a label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, masked_logsumexp, masked_mean


@LOSSES.register("ntxent")
class NTXentLoss(EmbeddingLoss):
    r"""NT-Xent (normalised temperature-scaled cross-entropy): Chen, Kornblith, Norouzi, Hinton, "A Simple
    Framework for Contrastive Learning of Visual Representations" (SimCLR), ICML 2020, Eq. (1); the InfoNCE
    loss of van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
    arXiv:1807.03748, 2018. For each positive pair ``(i, j)``, ``j in P_i``::

        l(i, j) = -log( exp(S_ij / tau) / (exp(S_ij / tau) + sum_{k in N_i} exp(S_ik / tau)) )

    and the loss is the mean of ``l(i, j)`` over all positive pairs, both orders (SimCLR's
    ``1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``). Two views as labels: the batch holds the ``2N`` views, the
    two views of an image share a label. With exactly two views per label, ``P_i + N_i`` is every ``k != i``
    and this is Eq. (1) exactly. With more views per label, each positive pair is scored against the
    negatives only (the other positives are left out of its denominator), as in pytorch-metric-learning's
    ``NTXentLoss``; :class:`SupConLoss` is the variant that keeps them.

    Default ``temperature = 0.5``: SimCLR's setting for CIFAR-10 (Appendix B.9); its ImageNet runs use 0.1
    (pytorch-metric-learning defaults to 0.07, MoCo's value). Equal to pytorch-metric-learning's
    ``NTXentLoss(temperature)`` in value and gradients (tested, also with ``ref_emb``). A batch without
    positive pairs gives a zero with a live graph; a positive pair without negatives contributes ``0``.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = check_real("temperature", temperature, 0.0, low_open=True)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        logits = sim / self.temperature
        neg_lse = torch.where(neg.any(dim=1), masked_logsumexp(logits, neg), float("-inf"))
        # l(i, j) = log(exp(l_ij) + exp(neg_lse_i)) - l_ij = softplus(neg_lse_i - l_ij)
        return masked_mean(F.softplus(neg_lse.unsqueeze(1) - logits), pos)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
