"""Contrastive loss: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
CVPR 2006, in the similarity form of the Multi-Similarity paper (Wang et al., CVPR 2019): positive pairs
are pulled above one margin, negative pairs pushed below another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, mean_of_positive


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
