"""Shared base class and helpers of the pair/embedding losses.

Every loss here works on **cosine similarity**: embeddings (and reference embeddings) are
L2-normalised, ``S = normalize(x) @ normalize(ref).T``, so ``S[i, j]`` lies in ``[-1, 1]`` and larger
means closer. There are no distance objects; a margin is always a margin on similarity.

Pairs. With ``ref_emb=None`` the reference set is the batch itself and the self-pairs ``(i, i)`` are
neither positive nor negative. With ``ref_emb`` given (a memory bank, the gathered global batch),
every query x reference pair counts: ``pos[i, j] = labels[i] == ref_labels[j]``, ``neg = ~pos``.

A loss subclasses :class:`EmbeddingLoss` and implements :meth:`EmbeddingLoss.loss_from_similarity`
on the dense similarity matrix and the two boolean masks; everything is vectorised, no Python loop
over the batch. When nothing contributes, a loss returns zero still connected to the inputs (backward works
and gives zero gradients); masked rows go through :func:`masked_logsumexp` and :func:`masked_mean`, which keep
the gradients of an empty selection finite (zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cosine_similarity_matrix(embeddings: Tensor, ref_emb: Tensor | None = None) -> Tensor:
    """``S[i, j] = <x_i / |x_i|, r_j / |r_j|>`` of shape ``(len(embeddings), len(ref_emb))``."""
    x = F.normalize(embeddings, p=2, dim=1)
    r = x if ref_emb is None else F.normalize(ref_emb, p=2, dim=1)
    return x @ r.T


def label_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Boolean ``(positive, negative)`` masks; without ``ref_labels`` the diagonal is in neither."""
    same = labels.unsqueeze(1) == (labels if ref_labels is None else ref_labels).unsqueeze(0)
    diff = ~same
    if ref_labels is None:
        same.fill_diagonal_(False)
    return same, diff


def zero_loss(*tensors: Tensor) -> Tensor:
    """A scalar zero that keeps the autograd graph of ``tensors`` alive (zero gradients)."""
    return sum(t.sum() for t in tensors) * 0


def mean_of_positive(losses: Tensor) -> Tensor:
    """Mean of the strictly positive entries of non-negative ``losses`` (PML's ``AvgNonZeroReducer``).

    Entries that are zero (inactive or masked out) count in neither the sum nor the count; with no positive
    entry the result is a zero that keeps the graph. No host synchronisation.
    """
    return losses.sum() / (losses > 0).sum().clamp_min(1)


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """``log sum_{mask} exp(x)`` along ``dim``; finite (and meaningless) where ``mask`` is empty.

    The caller gates empty rows with ``torch.where``; since an empty row is computed on finite values, its
    (zeroed) gradient stays finite instead of becoming ``0 * nan``.
    """
    keep = mask | ~mask.any(dim=dim, keepdim=True)
    return x.masked_fill(~keep, float("-inf")).logsumexp(dim=dim)


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid``; zero with a live graph when nothing is valid (no host sync)."""
    return torch.where(valid, values, 0.0).sum() / valid.sum().clamp_min(1)


def check_int(name: str, value: object, low: int) -> int:
    """Return ``value`` or raise ``ValueError`` naming ``name`` if it is not an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value


def check_real(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming ``name`` if it is not a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


def check_inputs(
    embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
) -> None:
    """Raise ``ValueError`` unless the shapes follow the loss/miner contract."""
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise ValueError(f"labels must be 1-D of length {len(embeddings)}, got shape {tuple(labels.shape)}")
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    if ref_emb is not None:
        if ref_emb.ndim != 2 or ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(f"ref_emb must be 2-D of dim {embeddings.shape[1]}, got {tuple(ref_emb.shape)}")
        if ref_labels.ndim != 1 or len(ref_labels) != len(ref_emb):
            raise ValueError(f"ref_labels must be 1-D of length {len(ref_emb)}: {tuple(ref_labels.shape)}")


class EmbeddingLoss(nn.Module):
    """``loss(embeddings, labels, ref_emb=None, ref_labels=None) -> scalar`` on cosine similarity.

    Subclasses implement :meth:`loss_from_similarity`; the base checks shapes and builds the similarity
    matrix and the label masks. Subclasses reduce with masked sums, so that an empty selection gives a zero
    connected to the graph without a data-dependent branch (no host synchronisation on an accelerator).
    """

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        check_inputs(embeddings, labels, ref_emb, ref_labels)
        sim = cosine_similarity_matrix(embeddings, ref_emb)
        pos, neg = label_masks(labels, ref_labels)
        return self.loss_from_similarity(sim, pos, neg)

    def loss_from_similarity(self, sim: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The loss from ``sim`` (queries x references) and the boolean ``pos``/``neg`` masks."""
        raise NotImplementedError
