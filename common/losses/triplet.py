"""Triplet margin loss: Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition
and Clustering", CVPR 2015, on cosine similarity, with all, semi-hard or batch-hard (Hermans, Beyer,
Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017) triplet selection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, mean_of_positive

TRIPLET_SELECTIONS = ("all", "batch_hard", "semi_hard")


@LOSSES.register("triplet")
class TripletMarginLoss(EmbeddingLoss):
    r"""Triplet margin loss on cosine similarity, ``relu(S_an - S_ap + margin)`` per triplet ``(a, p, n)``
    (Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
    CVPR 2015, Sec. 3.1, the triplet loss, there on squared Euclidean distances of unit vectors).

    ``triplets`` selects the triplets:

    * ``"all"``: every triplet with ``y_a = y_p != y_n`` (Hermans et al.'s "batch all");
    * ``"semi_hard"``: the negatives farther than the positive but inside the margin,
      ``S_ap - margin < S_an < S_ap`` (FaceNet Sec. 3.2, semi-hard negatives; all of them, not one per pair);
    * ``"batch_hard"``: per anchor, the least similar positive and the most similar negative (Hermans, Beyer,
      Leibe, "In Defense of the Triplet Loss for Person Re-Identification", arXiv:1703.07737, 2017, Sec. 2,
      "batch hard").

    Reduction: the mean over selected triplets with non-zero loss (Hermans et al.'s choice for batch all;
    for batch hard they average over all anchors). This matches pytorch-metric-learning's
    ``TripletMarginLoss(margin, distance=CosineSimilarity())`` (default ``AvgNonZeroReducer``) alone or with
    ``TripletMarginMiner(margin, type_of_triplets="all" | "semihard")``, and with ``BatchHardMiner``.

    Default ``margin = 0.1``: on unit vectors ``|a - p|^2 = 2 - 2 S_ap``, so FaceNet's ``alpha = 0.2`` on
    squared distances is exactly a margin of 0.1 on cosine similarity (the loss is halved, the selection
    identical).

    ``"all"`` and ``"semi_hard"`` never build the ``m x m x m`` triplet tensor: the negatives of each anchor
    are sorted once, and for each positive the number and sum of the negatives inside its window come from
    a binary search and suffix sums (``O(m^2 log m)`` time, ``O(m^2)`` memory).
    """

    def __init__(self, margin: float = 0.1, triplets: str = "all") -> None:
        super().__init__()
        self.margin = check_real("margin", margin, 0.0, 2.0)
        if triplets not in TRIPLET_SELECTIONS:
            raise ValueError(f"triplets must be one of {', '.join(TRIPLET_SELECTIONS)}; got {triplets!r}")
        self.triplets = triplets

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        if self.triplets == "batch_hard":
            return self._batch_hard(sim, pos, neg)
        return self._windowed(sim, pos, neg, semi_hard=self.triplets == "semi_hard")

    def _batch_hard(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        s = sim.detach()
        inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
        hardest_pos = torch.where(pos, s, inf).argmin(dim=1, keepdim=True)
        hardest_neg = torch.where(neg, s, -inf).argmax(dim=1, keepdim=True)
        s_ap = sim.gather(1, hardest_pos).squeeze(1)
        s_an = sim.gather(1, hardest_neg).squeeze(1)
        has_triplet = pos.any(dim=1) & neg.any(dim=1)
        return mean_of_positive(torch.where(has_triplet, F.relu(s_an - s_ap + self.margin), 0.0))

    def _windowed(self, sim: Tensor, pos: Tensor, neg: Tensor, semi_hard: bool) -> Tensor:
        # Triplet (a, p, n) is active iff S_an > S_ap - margin (and S_an < S_ap for semi-hard). Sort each
        # row's negatives (non-negatives go to -inf, before every window): the active negatives of (a, p) are
        # the contiguous block keys[lo:hi], whose count is hi - lo and whose sum is suffix[lo] - suffix[hi].
        s = sim.detach()
        keys, order = s.masked_fill(~neg, float("-inf")).sort(dim=1)
        values = torch.where(neg.gather(1, order), sim.gather(1, order), 0.0)
        suffix = F.pad(values.flip(1).cumsum(dim=1).flip(1), (0, 1))
        lo = torch.searchsorted(keys, s - self.margin, right=True)
        if semi_hard:
            hi = torch.searchsorted(keys, s, right=False)
        else:
            hi = torch.full_like(lo, keys.shape[1])
        count = torch.where(pos, (hi - lo).clamp_min(0), 0)
        active = count > 0
        window_sum = suffix.gather(1, lo) - suffix.gather(1, hi)
        total = torch.where(active, window_sum + count * (self.margin - sim), 0.0).sum()
        return total / count.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, triplets={self.triplets!r}"
