"""Multi-Similarity loss: Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting
for Deep Metric Learning", CVPR 2019; pair mining (:mod:`common.losses.miners`), then soft weighting of
the kept pairs on cosine similarity.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real
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
