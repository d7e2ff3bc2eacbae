"""Alignment and uniformity: Wang, Isola, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere", ICML 2020; the loss ``align_uniform`` and the two terms,
:func:`alignment` and :func:`uniformity`, also usable as metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES
from .base import EmbeddingLoss, check_real, masked_logsumexp, masked_mean


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
        align = masked_mean(torch.where(pos, sq_dist, 1.0).pow(self.alpha / 2), pos)
        pairs = (pos | neg).flatten()
        n_pairs = pairs.sum()
        lse = masked_logsumexp(-self.t * sq_dist.flatten(), pairs, dim=0)
        uniform = torch.where(n_pairs > 0, lse - n_pairs.clamp_min(1).to(sim.dtype).log(), 0.0)
        return align + self.lam * uniform

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, t={self.t}, lam={self.lam}"
