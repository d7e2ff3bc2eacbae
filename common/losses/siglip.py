"""Pairwise sigmoid loss: Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image Pre-Training"
(SigLIP), ICCV 2023, with a learnable temperature and bias, on pairs defined by labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import LOSSES
from .base import EmbeddingLoss, check_real


@LOSSES.register("siglip")
class SigLipLoss(EmbeddingLoss):
    r"""Pairwise sigmoid loss: Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image
    Pre-Training", ICCV 2023 (arXiv:2303.15343), Eq. (1) and Algorithm 1::

        L = -1/|B| sum_i sum_{j in A_i} log sigmoid( z_ij (t S_ij + b) ),   z_ij = +1 if j in P_i else -1

    with a learnable temperature ``t = exp(t')`` and bias ``b``, both ``nn.Parameter`` of this module (put
    ``loss.parameters()`` in the optimizer, as the trainer does). ``|B|`` is the number of queries: the
    normalisation of Algorithm 1 and of the official big_vision trainer
    (``big_vision/trainers/proj/image_text/siglip.py``: per-row sum of the log-likelihoods, then the mean over
    rows), and of open_clip's ``SigLipLoss`` (``-logsigmoid(labels * logits).sum() / n``).

    Labels instead of image-text pairs: ``P_i`` are the references with the label of query ``i`` (any number,
    not only the diagonal), every other pair is a negative. Self-pairs: without ``ref_emb`` the pair
    ``(i, i)`` is excluded, like in every loss here (it would be a positive with ``S = 1`` that teaches
    nothing); with two views per label each view then has exactly one positive, and each unordered pair is
    counted in both orders. With ``ref_emb`` (e.g. the other modality or the other view) every pair counts,
    which is the paper's setting when ``ref_emb`` holds the partners of the queries.

    Defaults: ``t_init = 10`` (``t' = log 10``) and ``b_init = -10``, the paper's initialisation (stated with
    Algorithm 1). A batch with a single sample and no reference set has no pair and gives a zero with a live
    graph (zero gradients, parameters included).
    """

    def __init__(self, t_init: float = 10.0, b_init: float = -10.0) -> None:
        super().__init__()
        t_init = check_real("t_init", t_init, 0.0, low_open=True)
        b_init = check_real("b_init", b_init)
        self.t_prime = nn.Parameter(torch.tensor(math.log(t_init)))
        self.bias = nn.Parameter(torch.tensor(b_init))

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        logits = self.t_prime.exp() * sim + self.bias
        signs = torch.where(pos, 1.0, -1.0).to(logits.dtype)
        loglik = torch.where(pos | neg, F.logsigmoid(signs * logits), 0.0)
        return -loglik.sum() / max(len(sim), 1)

    def extra_repr(self) -> str:
        return f"t={float(self.t_prime.detach().exp()):.4g}, b={float(self.bias.detach()):.4g}"
