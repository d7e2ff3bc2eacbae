"""Contrastive and self-supervised losses: circle, NT-Xent, SupCon, SigLIP, alignment + uniformity, and
prototypical networks.

All but :class:`PrototypicalLoss` follow the pair-loss contract of :mod:`common.losses.base`: ``S`` is the
cosine-similarity matrix of the L2-normalised embeddings (queries x references), ``P_i`` and ``N_i`` the
positives and negatives of query ``i`` (same label / other label; self-pairs excluded when there is no
reference set) and ``A_i = P_i + N_i`` everything query ``i`` is contrasted with. For the self-supervised
losses the label is the identity of the source image, so the views of one image share a label ("two views as
labels"). :class:`PrototypicalLoss` works on raw (not normalised) embeddings: the batch is the query set and
``ref_emb``/``ref_labels`` the support set of an episode.

Every loss is vectorised over the whole matrix; masked rows go through :func:`_masked_logsumexp`, so that an
empty selection gives a zero that keeps the graph and finite (zero) gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import LOSSES
from .base import EmbeddingLoss, check_inputs, check_real, zero_loss


def _masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """``log sum_{mask} exp(x)`` along ``dim``; finite (and meaningless) where ``mask`` is empty.

    The caller gates empty rows with ``torch.where``; since an empty row is computed on finite values, its
    (zeroed) gradient stays finite instead of becoming ``0 * nan``.
    """
    keep = mask | ~mask.any(dim=dim, keepdim=True)
    return x.masked_fill(~keep, float("-inf")).logsumexp(dim=dim)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid``; zero with a live graph when nothing is valid (no host sync)."""
    return torch.where(valid, values, 0.0).sum() / valid.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------------------
# Circle loss
# ----------------------------------------------------------------------------------------------------------


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
        losses = F.softplus(_masked_logsumexp(logit_p, pos) + _masked_logsumexp(logit_n, neg))
        return _masked_mean(losses, pos.any(dim=1) & neg.any(dim=1))

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"


# ----------------------------------------------------------------------------------------------------------
# NT-Xent / InfoNCE
# ----------------------------------------------------------------------------------------------------------


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
        neg_lse = torch.where(neg.any(dim=1), _masked_logsumexp(logits, neg), float("-inf"))
        # l(i, j) = log(exp(l_ij) + exp(neg_lse_i)) - l_ij = softplus(neg_lse_i - l_ij)
        return _masked_mean(F.softplus(neg_lse.unsqueeze(1) - logits), pos)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


# ----------------------------------------------------------------------------------------------------------
# Supervised contrastive
# ----------------------------------------------------------------------------------------------------------

SUPCON_VARIANTS = ("outside", "inside")


@LOSSES.register("supcon")
class SupConLoss(EmbeddingLoss):
    r"""Supervised contrastive loss: Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan,
    "Supervised Contrastive Learning", NeurIPS 2020 (arXiv:2004.11362). With ``a_ij = S_ij / tau``:

    * ``variant="outside"``, Eq. (2), ``L_out``, the paper's recommended loss (Sec. 3.2, it trains better
      than ``L_in``)::

          L_i = -(tau / base_temperature) * 1/|P_i| sum_{p in P_i} log( exp(a_ip) / sum_{k in A_i} exp(a_ik) )

    * ``variant="inside"``, Eq. (3), ``L_in`` (the mean over positives inside the log)::

          L_i = -(tau / base_temperature) * log( 1/|P_i| sum_{p in P_i} exp(a_ip) / sum_{k in A_i} exp(a_ik) )

    ``A_i`` is every reference but ``i`` itself (the positives included). Reduction: the mean of ``L_i`` over
    the queries with at least one positive; zero (live graph) when no query has one.

    Defaults: ``temperature = 0.1``, the temperature of the paper's experiments.
    ``base_temperature`` reproduces the ``temperature / base_temperature`` factor of the official code
    (github.com/HobbitLong/SupContrast ``losses.py``, read at commit 02f458c, where both default to 0.07);
    ``None`` (the default) means ``base_temperature = temperature``, i.e. no factor, Eq. (2)/(3) as printed.
    Pass ``temperature=0.1, base_temperature=0.07`` for the official code's scale of the loss (the factor
    rescales the gradients, hence interacts with the learning rate).

    Checked against the official code: it builds the same ``A_i`` (all but self), the same mean over
    positives of the log-probabilities for ``L_out``, and averages over all anchors; every anchor of its
    multi-view batches has a positive (its other views), so the mean over anchors with a positive is the same
    there (an anchor without positive makes the official code divide by zero).

    pytorch-metric-learning's ``SupConLoss(temperature)`` is ``variant="outside"`` without the factor, with
    the same value and gradients (tested, also with ``ref_emb``) whenever the batch holds at least two labels.
    It averages over the queries with a non-zero loss (anchors without positive give exactly 0 there, so they
    are left out as here), and it returns 0 for a batch that has no negative pair at all (a single label),
    where Eq. (2) is still defined and non-zero (``L_i >= log |P_i|``) and this implementation computes it.
    """

    def __init__(
        self, temperature: float = 0.1, variant: str = "outside", base_temperature: float | None = None
    ) -> None:
        super().__init__()
        self.temperature = check_real("temperature", temperature, 0.0, low_open=True)
        if variant not in SUPCON_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(SUPCON_VARIANTS)}; got {variant!r}")
        self.variant = variant
        if base_temperature is None:
            self.base_temperature = None
        else:
            self.base_temperature = check_real("base_temperature", base_temperature, 0.0, low_open=True)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        logits = sim / self.temperature
        has_pos = pos.any(dim=1)
        log_denominator = _masked_logsumexp(logits, pos | neg)
        n_pos = pos.sum(dim=1)
        if self.variant == "outside":
            mean_pos_logit = torch.where(pos, logits, 0.0).sum(dim=1) / n_pos.clamp_min(1)
            losses = log_denominator - mean_pos_logit
        else:
            log_mean_pos = _masked_logsumexp(logits, pos) - n_pos.clamp_min(1).to(logits.dtype).log()
            losses = log_denominator - log_mean_pos
        if self.base_temperature is not None:
            losses = losses * (self.temperature / self.base_temperature)
        return _masked_mean(losses, has_pos)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, variant={self.variant!r}, "
            f"base_temperature={self.base_temperature}"
        )


# ----------------------------------------------------------------------------------------------------------
# SigLIP
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Alignment and uniformity
# ----------------------------------------------------------------------------------------------------------


def _sq_dist_of_unit(sim: Tensor) -> Tensor:
    """``|x - y|^2 = 2 - 2 <x, y>`` for unit vectors, clamped at 0 against rounding."""
    return (2 - 2 * sim).clamp_min(0)


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment of Wang & Isola (ICML 2020, Sec. 4.1): ``E ||f(x) - f(y)||_2^alpha`` over positive pairs.

    ``x[i]`` and ``y[i]`` are the two views of sample ``i``; both are L2-normalised here (the paper's
    features live on the unit sphere). Lower is better; a metric as well as a loss term.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must be 2-D of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    alpha = check_real("alpha", alpha, 0.0, low_open=True)
    diff = F.normalize(x, p=2, dim=1) - F.normalize(y, p=2, dim=1)
    return diff.norm(p=2, dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity of Wang & Isola (ICML 2020, Sec. 4.1): ``log E exp(-t ||f(x) - f(y)||_2^2)`` over the
    distinct pairs ``i < j`` of ``x`` (L2-normalised here), the log of the average Gaussian potential.

    Lower is better (at most 0). Needs at least two rows.
    """
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x must be 2-D with at least two rows, got shape {tuple(x.shape)}")
    t = check_real("t", t, 0.0, low_open=True)
    u = F.normalize(x, p=2, dim=1)
    i, j = torch.triu_indices(len(u), len(u), offset=1, device=u.device)
    sq_dist = _sq_dist_of_unit((u[i] * u[j]).sum(dim=1))
    return (-t * sq_dist).logsumexp(dim=0) - math.log(len(sq_dist))


@LOSSES.register("align_uniform")
class AlignUniformLoss(EmbeddingLoss):
    r"""Alignment + uniformity: Wang, Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020 (arXiv:2005.10242), the definitions of
    ``L_align`` and ``L_uniform`` (Sec. 4.1) used as a training loss::

        L = L_align(alpha) + lambda * L_uniform(t)
        L_align   = mean over positive pairs (i, j in P_i) of ||x_i - x_j||^alpha
        L_uniform = log mean over all pairs (i, j in A_i) of exp(-t ||x_i - x_j||^2)

    on L2-normalised embeddings, with ``||x_i - x_j||^2 = 2 - 2 S_ij``. Positives are the views sharing a
    label; the uniformity pools every distinct pair of the batch (every query x reference pair with
    ``ref_emb``). With exactly two views per label this is ``alignment(x, y) + lam * uniformity(cat(x, y))``
    (see :func:`alignment`, :func:`uniformity`; tested); the paper's training snippet instead averages the
    uniformity of each view's batch, ``(uniformity(x) + uniformity(y)) / 2``, which leaves out the cross-view
    pairs, the positive pairs among them: a view assignment that a label does not carry.

    Defaults ``alpha = 2``, ``t = 2``, ``lam = 1``: the paper's reference snippet (``align_loss(x, y,
    alpha=2)``, ``uniform_loss(x, t=2)``) and the official repository's STL-10 training defaults
    (github.com/SsnL/align_uniform ``examples/stl10/main.py``: ``--align_w 1 --unif_w 1 --align_alpha 2
    --unif_t 2``; checked). The uniformity term is at most 0, so the loss can be
    negative. Without positives only the uniformity remains; without any pair (a single sample and no
    reference set) the loss is a zero with a live graph. Note that ``alpha < 2`` has an infinite gradient at
    two identical views (``||x - y|| = 0``), as the paper's ``norm().pow(alpha)`` has.
    """

    def __init__(self, alpha: float = 2.0, t: float = 2.0, lam: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_real("alpha", alpha, 0.0, low_open=True)
        self.t = check_real("t", t, 0.0, low_open=True)
        self.lam = check_real("lam", lam, 0.0)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        sq_dist = _sq_dist_of_unit(sim)
        # pow on the positives only: the diagonal (d = 0) has an infinite derivative for alpha < 2
        align = _masked_mean(torch.where(pos, sq_dist, 1.0).pow(self.alpha / 2), pos)
        pairs = (pos | neg).flatten()
        n_pairs = pairs.sum()
        lse = _masked_logsumexp(-self.t * sq_dist.flatten(), pairs, dim=0)
        uniform = torch.where(n_pairs > 0, lse - n_pairs.clamp_min(1).to(sim.dtype).log(), 0.0)
        return align + self.lam * uniform

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, t={self.t}, lam={self.lam}"


# ----------------------------------------------------------------------------------------------------------
# Prototypical networks
# ----------------------------------------------------------------------------------------------------------

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
        return _masked_mean(nll, known)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        raise NotImplementedError("prototypical works on raw embeddings, not on a similarity matrix")

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, scale={self.scale}"
