"""Pair miners: they select pairs and return index tuples ``(a1, p, a2, n)`` like pytorch-metric-learning.

``(a1[k], p[k])`` are the kept positive pairs and ``(a2[k], n[k])`` the kept negative pairs, as indices
into ``embeddings`` (first) and the reference set (second; the batch itself when ``ref_emb`` is None).
Similarity is cosine similarity of L2-normalised embeddings (see :mod:`common.losses.base`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import check_inputs, check_real, cosine_similarity_matrix, label_masks


def multi_similarity_mining(sim: Tensor, pos: Tensor, neg: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
    """Masks of the pairs kept by the mining step of the Multi-Similarity loss (Wang et al., CVPR 2019).

    For anchor ``i``, a negative ``j`` is kept if ``S_ij + epsilon > min_{k in P_i} S_ik`` (it is more similar
    than the least similar positive, up to ``epsilon``), and a positive ``j`` if
    ``S_ij - epsilon < max_{k in N_i} S_ik``. The comparisons are written exactly as in the official code
    (MalongTech/research-ms-loss, ``ret_benchmark/losses/multi_similarity_loss.py``), with ``P_i`` and ``N_i``
    the unmined sets. An anchor with no positive keeps no negative and one with no negative keeps no positive.
    Selection only: it runs on ``sim.detach()``.
    """
    s = sim.detach()
    inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
    min_pos = torch.where(pos, s, inf).amin(dim=1, keepdim=True)
    max_neg = torch.where(neg, s, -inf).amax(dim=1, keepdim=True)
    return pos & (s - epsilon < max_neg), neg & (s + epsilon > min_pos)


class MultiSimilarityMiner(nn.Module):
    """The Multi-Similarity mining step as a stand-alone miner (see :func:`multi_similarity_mining`).

    ``MultiSimilarityMiner(epsilon)(embeddings, labels, ref_emb=None, ref_labels=None) -> (a1, p, a2, n)``.
    ``epsilon = 0.1`` as in the paper's text and the official code. The ``multi_similarity`` loss with
    ``mining=True`` uses the same function, so the pairs it weights are exactly the pairs returned here.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = check_real("epsilon", epsilon, 0.0)

    @torch.no_grad()
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_inputs(embeddings, labels, ref_emb, ref_labels)
        sim = cosine_similarity_matrix(embeddings, ref_emb)
        pos, neg = label_masks(labels, ref_labels)
        pos_keep, neg_keep = multi_similarity_mining(sim, pos, neg, self.epsilon)
        a1, p = torch.nonzero(pos_keep, as_tuple=True)
        a2, n = torch.nonzero(neg_keep, as_tuple=True)
        return a1, p, a2, n

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
