"""Verification metric: true accept rate at a false accept rate (TAR@FAR).

The verification protocol of face recognition (e.g. IJB-B/C; Deng et al., ArcFace, CVPR 2019) on one
labelled set: every distinct pair ``i < j`` is scored by the cosine similarity of its L2-normalised
embeddings; a pair is *positive* if the labels are equal, *negative* otherwise, and it is *accepted* when
its score is strictly above a threshold ``tau``.

For a target ``far``, ``tau`` is the loosest threshold that accepts at most a fraction ``far`` of the
negative pairs: with the negative scores sorted in decreasing order ``s_1 >= s_2 >= ...`` and ``m`` the
largest count with ``m / N_neg <= far``, ``tau = s_{m+1}`` (ties at ``s_{m+1}`` are all rejected, so the
realised FAR, also returned, can be below ``far``). ``TAR`` is the fraction of positive pairs scored above
``tau``. This is the largest TPR with FPR <= far on scikit-learn's ``roc_curve`` (no interpolation). When
``m`` covers every negative pair, ``tau = -inf`` and TAR is 1.

Cost: two passes over the ``n (n - 1) / 2`` pairs in row chunks (the first finds the thresholds, the
second counts the positive pairs above them), each step holding a ``chunk_size x n`` block of scores.
Only the ``m + 1`` highest negative scores of the largest ``far`` are kept (an exact selection, merged chunk
by chunk), so memory is ``O(chunk_size * n + max(fars) * N_neg)``: with n = 10^4 and FAR 1e-2 that is
about 5 * 10^5 scores. A FAR near 1 keeps nearly every negative score.

This module imports only torch and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .retrieval import _as_labels, _check_chunk_size, _normalized_pair

__all__ = ["tar_at_far"]


def _far_key(far: float) -> str:
    return f"{far:g}"


def _max_accepted(far: float, num_negative: int) -> int:
    """The largest m with m / num_negative <= far (in floating point, as an ROC curve's FPR is)."""
    m = min(int(math.floor(far * num_negative)), num_negative)
    while m < num_negative and (m + 1) / num_negative <= far:
        m += 1
    while m > 0 and m / num_negative > far:
        m -= 1
    return m


def _pair_blocks(x: Tensor, ids: Tensor, chunk_size: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """For row chunks ``[start, stop)`` x columns ``[start + 1, n)``: the scores, which entries are pairs
    ``i < j``, and which of those are positive (same label)."""
    n = x.shape[0]
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n - 1)
        sims = x[start:stop] @ x[start + 1 :].T
        # j = start + 1 + c > i = start + r  <=>  c >= r
        upper = torch.ones_like(sims, dtype=torch.bool).triu_()
        same = ids[start:stop, None] == ids[None, start + 1 :]
        yield sims, upper & ~same, upper & same


@torch.no_grad()
def tar_at_far(
    embeddings: Tensor,
    labels: Tensor,
    fars: Sequence[float] = (1e-2, 1e-3),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """TAR at each FAR over all distinct pairs of ``embeddings`` (cosine similarity).

    Returns, for each ``far`` (keys formatted with ``{far:g}``, e.g. ``tar_at_far_0.001``):
    ``tar_at_far_<far>``, ``threshold_at_far_<far>`` (accept when the similarity is strictly above it) and
    ``achieved_far_at_far_<far>`` (the realised FAR, ``<= far``); plus ``num_positive_pairs`` and
    ``num_negative_pairs``. Without negative pairs every value is ``nan``; without positive pairs the TARs
    are ``nan``.
    """
    _check_chunk_size(chunk_size)
    fars = tuple(float(f) for f in fars)
    if not fars or any(not (0 < f <= 1) for f in fars):
        raise ValueError(f"fars must be a non-empty sequence of numbers in (0, 1], got {fars!r}")
    x, _ = _normalized_pair(embeddings, None)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"tar_at_far needs at least 2 embeddings, got {n}")
    ids = torch.unique(_as_labels(labels, n, "labels", x.device), return_inverse=True)[1]
    class_sizes = torch.bincount(ids).long()
    num_positive = int((class_sizes * (class_sizes - 1) // 2).sum())
    num_negative = n * (n - 1) // 2 - num_positive
    out: dict[str, float] = {}
    nan = float("nan")
    if num_negative == 0:
        for far in fars:
            for name in ("tar_at_far", "threshold_at_far", "achieved_far_at_far"):
                out[f"{name}_{_far_key(far)}"] = nan
        out.update(num_positive_pairs=float(num_positive), num_negative_pairs=0.0)
        return out

    accepted = [_max_accepted(f, num_negative) for f in fars]
    keep = min(max(accepted) + 1, num_negative)
    # pass 1: the `keep` highest negative scores, merged chunk by chunk
    top = x.new_empty(0)
    for scores, negative_mask, _ in _pair_blocks(x, ids, chunk_size):
        if len(top) == keep:
            negative_mask &= scores > top.min()  # the others cannot enter the top `keep`
        negative = scores[negative_mask]
        if len(negative) == 0:
            continue
        top = torch.cat([top, negative])
        if len(top) > keep:
            top = torch.topk(top, keep, sorted=False).values
    top = torch.sort(top, descending=True).values

    thresholds = []
    for m in accepted:
        thresholds.append(float("-inf") if m >= num_negative else float(top[m]))
    thr = torch.tensor(thresholds, dtype=x.dtype, device=x.device)

    # pass 2: positive pairs above each threshold
    hits = torch.zeros(len(fars), dtype=torch.long, device=x.device)
    if num_positive > 0:
        lowest = thr.min()
        for scores, _, positive_mask in _pair_blocks(x, ids, chunk_size):
            pos = scores[positive_mask & (scores > lowest)]
            if len(pos):
                hits += (pos[:, None] > thr[None, :]).sum(dim=0)

    for far, m, threshold, hit in zip(fars, accepted, thresholds, hits.tolist(), strict=True):
        key = _far_key(far)
        out[f"tar_at_far_{key}"] = hit / num_positive if num_positive else nan
        out[f"threshold_at_far_{key}"] = threshold
        realised = num_negative if m >= num_negative else int((top > threshold).sum())
        out[f"achieved_far_at_far_{key}"] = realised / num_negative
    out.update(num_positive_pairs=float(num_positive), num_negative_pairs=float(num_negative))
    return out
