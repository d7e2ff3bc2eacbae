"""Prototypical networks: Snell, Swersky, Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS
2017. On raw (not normalised) embeddings: the batch is the query set of an episode and
``ref_emb``/``ref_labels`` its support set; :func:`prototype_logits` scores queries for few-shot
evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_inputs, check_real, masked_mean, zero_loss

PROTOTYPE_DISTANCES = ("squared_euclidean", "cosine")


def prototype_logits(
    query: Tensor,
    support: Tensor,
    support_labels: Tensor,
    distance: str = "squared_euclidean",
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Logits of the queries against the class prototypes of the support set (Snell et al. 2017, Eq. (1)-(2)).

    Returns ``(logits, classes)``: ``classes`` are the sorted distinct ``support_labels``, ``logits[q, k]``
    the score of query ``q`` for ``classes[k]``: ``-scale * ||query_q - c_k||^2`` (``"squared_euclidean"``)
    or ``scale * cos(query_q, c_k)`` (``"cosine"``), ``c_k`` the mean of the support embeddings of class
    ``classes[k]``.
    ``classes[logits.argmax(1)]`` is the few-shot prediction. No normalisation of the embeddings.
    """
    if distance not in PROTOTYPE_DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(PROTOTYPE_DISTANCES)}; got {distance!r}")
    scale = check_real("scale", scale, 0.0, low_open=True)
    classes, index = torch.unique(support_labels, sorted=True, return_inverse=True)
    counts = torch.bincount(index, minlength=len(classes)).to(support.dtype)
    sums = support.new_zeros(len(classes), support.shape[1]).index_add(0, index, support)
    prototypes = sums / counts.unsqueeze(1)
    if distance == "cosine":
        scores = F.normalize(query, p=2, dim=1) @ F.normalize(prototypes, p=2, dim=1).T
    else:
        sq_dist = (
            query.pow(2).sum(dim=1, keepdim=True) - 2 * query @ prototypes.T + prototypes.pow(2).sum(dim=1)
        )
        scores = -sq_dist.clamp_min(0)
    return scale * scores, classes


@LOSSES.register("prototypical")
class PrototypicalLoss(EmbeddingLoss):
    r"""Prototypical networks: Snell, Swersky, Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS
    2017 (arXiv:1703.05175), Eq. (1)-(2) and Algorithm 1::

        c_k = 1/|S_k| sum_{x in S_k} f(x)                        (Eq. 1, the prototype of class k)
        p(y = k | x) = softmax_k(-d(f(x), c_k))                   (Eq. 2)
        L = mean over queries of -log p(y = y_q | q)

    Episode API: ``loss(query, query_labels, support, support_labels)``, i.e. the batch is the query set and
    ``ref_emb``/``ref_labels`` the support set; both are required (``ValueError`` otherwise). The softmax runs
    over the classes present in the support set; a query whose class has no support sample cannot be scored
    and is left out of the mean (zero with a live graph if no query is left, or if the support is empty).

    ``distance="squared_euclidean"`` (default) is the paper's choice (a Bregman divergence, and better
    than cosine in its experiments); ``"cosine"`` uses the
    cosine similarity of query and prototype as the logit. ``scale`` multiplies the logits (1 by default, the
    paper has none; the cosine logits lie in ``[-scale, scale]`` and usually need a larger one, e.g. 10).
    Unlike the other losses here, the embeddings are NOT L2-normalised: the prototype is the mean of the raw
    support embeddings, and the squared Euclidean distance is taken on the raw embeddings, as in the paper.
    :func:`prototype_logits` gives the logits and the class order for few-shot evaluation.
    """

    def __init__(self, distance: str = "squared_euclidean", scale: float = 1.0) -> None:
        super().__init__()
        if distance not in PROTOTYPE_DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(PROTOTYPE_DISTANCES)}; got {distance!r}")
        self.distance = distance
        self.scale = check_real("scale", scale, 0.0, low_open=True)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        check_inputs(embeddings, labels, ref_emb, ref_labels)
        if ref_emb is None or ref_labels is None:
            raise ValueError(
                "prototypical needs a support set: pass ref_emb and ref_labels (the batch is the query set)"
            )
        if len(ref_emb) == 0 or len(embeddings) == 0:
            return zero_loss(embeddings, ref_emb)
        logits, classes = prototype_logits(embeddings, ref_emb, ref_labels, self.distance, self.scale)
        labels = labels.to(classes.dtype)
        target = torch.searchsorted(classes, labels).clamp_max(len(classes) - 1)
        known = classes[target] == labels
        nll = -logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        return masked_mean(nll, known)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        raise NotImplementedError("prototypical works on raw embeddings, not on a similarity matrix")

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, scale={self.scale}"
