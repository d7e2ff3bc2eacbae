"""Pair-based embedding losses on cosine similarity: multi-similarity, contrastive, triplet margin.

``S`` is the cosine-similarity matrix of the L2-normalised embeddings (queries x references), ``P_i`` and
``N_i`` the positives and negatives of query ``i`` (self-pairs excluded when there is no reference set);
see :mod:`common.losses.base`. Each loss is vectorised over the whole matrix and reduces with masked sums,
so an empty selection gives a zero that keeps the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, mean_of_positive
from .miners import multi_similarity_mining


def _log_one_plus_sum_exp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log(1 + sum_{j: mask_ij} exp(x_ij))``, stable, 0 for an empty row, finite gradients."""
    masked = x.masked_fill(~mask, float("-inf"))
    return torch.cat([masked, x.new_zeros(len(x), 1)], dim=1).logsumexp(dim=1)


@LOSSES.register("multi_similarity")
class MultiSimilarityLoss(EmbeddingLoss):
    r"""Multi-Similarity loss: Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning", CVPR 2019 (arXiv:1904.06627), Sec. 4.

    Mining step (Sec. 4, "pair mining"; :func:`common.losses.miners.multi_similarity_mining`): for anchor
    ``i`` keep the negatives with ``S_ij + epsilon > min_{k in P_i} S_ik`` and the positives with
    ``S_ij - epsilon < max_{k in N_i} S_ik``. Weighting step, the MS loss (Sec. 4, "pair weighting")::

        L = 1/m sum_i [ 1/alpha log(1 + sum_{k in P_i} exp(-alpha (S_ik - base)))
                      + 1/beta  log(1 + sum_{k in N_i} exp( beta  (S_ik - base))) ]

    with ``P_i``, ``N_i`` the mined sets and ``m`` the number of queries (the batch size).

    Checked against the official code (MalongTech/research-ms-loss, now msight-tech/research-ms-loss,
    ``ret_benchmark/losses/multi_similarity_loss.py``), which this implementation follows exactly:

    * the mining comparisons are the code's (``neg + margin > min(pos)``, ``pos - margin < max(neg)``), both
      against the unmined sets;
    * an anchor contributes only if it keeps at least one positive *and* one negative (the code's
      ``continue``); after mining the two kept sets are empty together (both conditions reduce to
      ``min(pos) - epsilon < max(neg)``), so this matters only for ``mining=False``;
    * the sum over anchors is divided by the full batch size, skipped anchors included.

    Differences from the official code, none of which changes the value on ordinary batches: the similarity
    is computed here on L2-normalised embeddings (the official model normalises in its head); self-pairs are
    excluded by index, not by the code's ``S < 1 - 1e-5`` filter (which also drops a positive identical to
    the anchor); an anchor without positives or negatives gives 0 instead of an error; an empty batch gives
    a zero with a live graph instead of a fresh leaf tensor.

    pytorch-metric-learning (v2.9) ``MultiSimilarityLoss`` with its ``MultiSimilarityMiner`` gives the same
    value and gradients (tested). Without a miner it keeps the negative (positive) term of an anchor that
    has no positive (negative) at all, where the official code and ``mining=False`` here skip the anchor;
    the two agree whenever every anchor has both (any P x K batch).

    Defaults: ``alpha = 2``, ``beta = 50``, ``base`` (the paper's lambda) ``= 1``, ``epsilon = 0.1`` are the
    values stated in the paper's text (experiments, implementation details). The official code uses
    ``alpha = 2`` (``SCALE_POS``), ``beta = 40`` (``SCALE_NEG`` in ``ret_benchmark/config/defaults.py``),
    ``lambda = 0.5`` (``self.thresh``) and ``epsilon = 0.1`` (``self.margin``); pytorch-metric-learning's
    defaults are ``alpha=2, beta=50, base=0.5``. Pass ``beta=40, base=0.5`` for the official code's setting.
    ``mining=False`` drops the mining step (all pairs are weighted), for the paper's ablation; the official
    code has a ``HARD_MINING`` config key but its loss never reads it and always mines.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 1.0,
        epsilon: float = 0.1,
        mining: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = check_real("alpha", alpha, 0.0, low_open=True)
        self.beta = check_real("beta", beta, 0.0, low_open=True)
        self.base = check_real("base", base, -1.0, 1.0)
        self.epsilon = check_real("epsilon", epsilon, 0.0)
        if not isinstance(mining, bool):
            raise ValueError(f"mining must be True or False, got {mining!r}")
        self.mining = mining

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        if self.mining:
            pos, neg = multi_similarity_mining(sim, pos, neg, self.epsilon)
        pos_term = _log_one_plus_sum_exp(-self.alpha * (sim - self.base), pos) / self.alpha
        neg_term = _log_one_plus_sum_exp(self.beta * (sim - self.base), neg) / self.beta
        contributes = pos.any(dim=1) & neg.any(dim=1)
        return torch.where(contributes, pos_term + neg_term, 0.0).sum() / len(sim)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, "
            f"mining={self.mining}"
        )


@LOSSES.register("contrastive")
class ContrastiveLoss(EmbeddingLoss):
    r"""Contrastive loss in similarity form: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR 2006, Eq. (4) (there on Euclidean distance: pull positives together, push
    negatives beyond a margin); the similarity form is the one the Multi-Similarity paper (Wang et al.,
    CVPR 2019, Sec. 3, contrastive loss in the general pair weighting analysis) uses for its baseline,
    ``(1 - I_ij) [S_ij - lambda]_+ - I_ij S_ij``.

    Per pair::

        positive (i, j):  relu(pos_margin - S_ij)
        negative (i, j):  relu(S_ij - neg_margin)

    Reduction: the mean over the positive pairs with non-zero loss plus the mean over the negative pairs
    with non-zero loss (each 0 if there is none). This is pytorch-metric-learning's
    ``ContrastiveLoss(pos_margin, neg_margin, distance=CosineSimilarity())`` with its default
    ``AvgNonZeroReducer`` applied to each sub-loss and the two summed; pairs already inside their margin
    do not dilute the average.

    Defaults: ``pos_margin = 1`` makes the positive term ``1 - S_ij``, the MS paper's ``-S_ij`` up to a
    constant; ``neg_margin = 0.5`` is our choice for the MS paper's lambda, whose value for the baseline the
    paper does not state (0.5 is the threshold of the official MS code). Unlike the triplet and MS losses,
    each term is a single pair, so a batch with positives only (one class) or negatives only still has a
    loss; it is zero only when every pair is inside its margin.
    """

    def __init__(self, pos_margin: float = 1.0, neg_margin: float = 0.5) -> None:
        super().__init__()
        self.pos_margin = check_real("pos_margin", pos_margin, -1.0, 1.0)
        self.neg_margin = check_real("neg_margin", neg_margin, -1.0, 1.0)
        if self.neg_margin > self.pos_margin:
            raise ValueError(
                f"neg_margin must not exceed pos_margin on a similarity, got neg_margin={neg_margin!r} > "
                f"pos_margin={pos_margin!r} (distance-style margins?)"
            )

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        pos_losses = torch.where(pos, F.relu(self.pos_margin - sim), 0.0)
        neg_losses = torch.where(neg, F.relu(sim - self.neg_margin), 0.0)
        return mean_of_positive(pos_losses) + mean_of_positive(neg_losses)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"


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
