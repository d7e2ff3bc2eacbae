"""Retrieval and clustering metrics for deep metric learning.

Every metric here compares L2-normalised embeddings by cosine similarity. Two evaluation modes:

* **leave-one-out** (``reference=None``): the query set is its own reference and a query never
  retrieves itself. This is the standard protocol on a class-disjoint test set (CUB-200, Cars196,
  SOP, ...).
* **query / reference** (``reference`` given): queries retrieve from a separate gallery (In-Shop),
  nothing is excluded.

Definitions (``R`` is the number of reference items that share the query's label, the query
itself excluded in leave-one-out mode):

* ``precision_at_1``: fraction of queries whose nearest neighbour has the query's label.
* ``recall_at_{k}``: Recall@K as used in deep metric learning (Song et al., "Deep Metric Learning
  via Lifted Structured Feature Embedding", CVPR 2016; Wang et al., "Multi-Similarity Loss",
  CVPR 2019): fraction of queries with at least one same-label item among their K nearest
  neighbours. Recall@1 equals P@1.
* ``r_precision``: R-Precision (Musgrave, Belongie and Lim, "A Metric Learning Reality Check",
  ECCV 2020): for each query, the fraction of its R nearest neighbours that share its label,
  averaged over queries.
* ``map_at_r``: MAP@R (same paper): for each query,
  ``AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i)``, where ``rel(i)`` is 1 if the i-th neighbour shares
  the query's label and ``P(i)`` is the precision among the first i neighbours; averaged over
  queries.
* ``nmi``: normalised mutual information (arithmetic-mean normalisation, scikit-learn's default)
  between the query labels and a seeded k-means clustering (k-means++ then Lloyd, see ``kmeans``)
  of the L2-normalised query embeddings with as many clusters as there are query labels.

Queries with no relevant item (``R == 0``: a singleton class in leave-one-out mode, or a label
absent from the reference set) have no defined R-Precision or MAP@R. As in
pytorch-metric-learning's ``AccuracyCalculator`` ("lone" query labels), such queries are left out
of P@1, R-Precision and MAP@R; we also leave them out of Recall@K so that all neighbour metrics
average over the same queries. A metric is ``nan`` when no query has a relevant item. NMI uses
every query.

Nearest neighbours are found in row chunks of ``chunk_size`` queries: each step holds a
``max(chunk_size, 16) x n_reference`` block of similarities (about 4 bytes each, plus a few bytes per
entry of temporaries), keeps its top k (k = the largest of ``max(ks)`` and the largest R) and drops
the block, so the full similarity matrix never exists. Lower ``chunk_size`` for huge galleries.
Within a block, the top k is found exactly but without a ``torch.topk`` over whole rows: the k-th
largest maximum of ``~3k`` strided column blocks is a threshold that at least k entries reach, and
only the entries at or above it (a few more than k on real data) are ranked: in float32 by one
stable sort of all the step's candidates on an int64 key (row, then value), in other dtypes
packed into rows and ranked with ``torch.topk``.

In leave-one-out mode (float32 on CPU) the similarity matrix is symmetric, so the block of
similarities between two chunks need only be computed once ("mirroring"): chunk i computes its
rows against its own columns and those of the later chunks, and keeps the block against chunk j,
transposed, for chunk j, which copies it instead of computing it. The kept blocks are capped at
``_MIRROR_STRIPS`` (2) strips' worth, ``2 x chunk_size x n`` floats, filled nearest chunk first; a
block that finds the cap reached is computed by its own chunk as usual. Peak memory in this mode is
thus about ``3 x chunk_size x n`` floats (4 bytes each) plus the temporaries. At n = 20,000 with
the default ``chunk_size`` of 1024 the call's peak memory grows by 330 MB (175 MB without
mirroring), and 120 of the 190 blocks above the diagonal are mirrored; keeping every block would
take up to ``n^2 / 4`` floats (400 MB there, 3.6 GB at n = 60,000). Chunks of fewer than 128 rows
are not mirrored (there the extra copies and Python cost as much as the GEMM they save).

Ties are broken deterministically: equal similarities are ordered by ascending reference index
(what a stable descending sort of each row gives), whatever the device's top-k does. Every GEMM has
at least 16 rows (a short last chunk is zero-padded) and 16 columns (a narrow column range is
widened), because BLAS small-matrix kernels round differently. On CPU (MKL) each float32 similarity
is then bit-identical for any ``chunk_size`` and whether it was computed directly or mirrored, so
neither the chunk size nor mirroring can change a result (the tests check both). In float64 MKL
rounds some GEMM shapes differently, so there a different ``chunk_size`` can change the last bit of
a similarity, and mirroring is not used.

This module imports only torch and the standard library.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["kmeans", "nearest_neighbors", "normalized_mutual_info", "retrieval_metrics"]


# --------------------------------------------------------------------------------------------
# nearest neighbours
# --------------------------------------------------------------------------------------------


def _as_embeddings(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(x.shape)}")
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _normalized_pair(query: Tensor, reference: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """L2-normalise both sets in a shared floating dtype (at least float32)."""
    query = _as_embeddings(query, "query")
    dtype = torch.promote_types(query.dtype, torch.float32)
    if reference is not None:
        reference = _as_embeddings(reference, "reference")
        if reference.shape[1] != query.shape[1]:
            raise ValueError(
                f"query and reference dimensions differ: {query.shape[1]} vs {reference.shape[1]}"
            )
        if reference.device != query.device:
            raise ValueError("query and reference must be on the same device")
        dtype = torch.promote_types(dtype, reference.dtype)
        reference = torch.nn.functional.normalize(reference.to(dtype), p=2, dim=1)
    query = torch.nn.functional.normalize(query.to(dtype), p=2, dim=1)
    return query, reference


def _block_size(n_reference: int, k: int) -> int:
    """Block width for the thresholded top-k (about 3k blocks); 1 means a plain top-k of each row."""
    if k <= 0 or n_reference < 16 * k:
        return 1
    return n_reference // (3 * k)


def _sorted_by_value_then_column(vals: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder rows of a top-k so that equal values are by increasing column (only rows with ties)."""
    if vals.shape[1] > 1:
        tied = (vals[:, 1:] == vals[:, :-1]).any(dim=1)
        if bool(tied.any()):
            t_cols, order = torch.sort(cols[tied], dim=1)
            t_vals = torch.gather(vals[tied], 1, order)
            t_vals, order = torch.sort(t_vals, dim=1, descending=True, stable=True)
            vals[tied] = t_vals
            cols[tied] = torch.gather(t_cols, 1, order)
    return vals, cols


def _exact_topk(values: Tensor, cols: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """Top k of each row, ties by position, for rows whose entries are in increasing column order.

    ``torch.topk`` picks among equal values arbitrarily; rows with a tie across the k-th value are
    redone with a stable sort, rows with ties inside the top k are reordered. ``cols`` maps
    positions to columns (``None``: the position is the column).
    """
    vals, pos = torch.topk(values, k, dim=1)
    ambiguous = torch.count_nonzero(values >= vals[:, -1:], dim=1) > k
    if bool(ambiguous.any()):
        a_vals, a_pos = torch.sort(values[ambiguous], dim=1, descending=True, stable=True)
        vals[ambiguous] = a_vals[:, :k]
        pos[ambiguous] = a_pos[:, :k]
    out_cols = pos if cols is None else torch.gather(cols, 1, pos)
    return _sorted_by_value_then_column(vals, out_cols)


def _nonzero_flat(mask: Tensor, limit: int) -> Tensor | None:
    """Flat indices of the true entries of a contiguous ``mask``, increasing; ``None`` above ``limit``.

    ``torch.nonzero`` costs about the same per element whatever the dtype, so with few true entries it
    is cheaper to find the nonzero 8-byte words first and then the true entries among their 8 bytes.
    """
    flat = mask.view(-1)
    if flat.numel() % 8:
        nz = torch.nonzero(flat).squeeze(1)
        return nz if len(nz) <= limit else None
    words = torch.nonzero(flat.view(torch.int64)).squeeze(1)
    if len(words) > limit:  # every such word holds at least one true entry
        return None
    entries = flat.view(-1, 8).index_select(0, words)
    if int(torch.count_nonzero(entries)) > limit:
        return None
    sub = torch.nonzero(entries.view(-1)).squeeze(1)
    return words.index_select(0, sub >> 3) * 8 + (sub & 7)


def _ranked_float32_candidates(
    values: Tensor, flat: Tensor, row: Tensor, starts: Tensor, width: int, k: int
) -> tuple[Tensor, Tensor]:
    """Top k of each row from float32 candidates listed row by row, columns increasing (``flat``).

    One stable sort of int64 keys: the row in the high 32 bits, the value's bits (made monotone,
    reversed) in the low 32. Each row then comes out by decreasing value, equal values keeping
    their column order, and its first k entries are its top k (every row has at least k).
    """
    bits = values.view(torch.int32).long()
    descending = torch.where(bits >= 0, -bits, bits + 2**31) + 2**31  # in [1, 2^32); -0.0 == +0.0
    order = torch.sort((row << 32) | descending, stable=True).indices
    rows = len(starts)
    top = order.index_select(0, (starts[:, None] + torch.arange(k, device=starts.device)).view(-1))
    vals = values.index_select(0, top).view(rows, k)
    cols = flat.index_select(0, top).view(rows, k) - width * torch.arange(rows, device=flat.device)[:, None]
    return vals, cols


def _topk_rows(sims: Tensor, k: int, block: int, max_candidates: int) -> tuple[Tensor, Tensor]:
    """Top k of each row of ``sims`` (contiguous; descending; ties by ascending column); exact.

    With ``block > 1`` the row is cut into strided blocks (block j holds the columns j, j + m,
    j + 2m, ... for m blocks) and the threshold is the k-th largest block maximum. Those k maxima
    are k distinct entries, so at least k entries reach the threshold and every entry of the top k
    does. The entries at or above it (a few more than k on real data) are gathered in column order
    and the top k is taken among them: far less work than ``torch.topk`` over the whole row. With
    many ties (collapsed embeddings) the candidates can be the whole row; above ``max_candidates``
    the chunk takes the plain path.
    """
    rows, width = sims.shape
    if block > 1:
        num_blocks = width // block
        block_max = sims.view(rows, block, num_blocks).amax(dim=1)
        threshold = torch.topk(block_max, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
        flat = _nonzero_flat(sims >= threshold, max_candidates)  # row-major: columns increase in a row
        if flat is not None:
            # index_select / index_copy_: much faster than advanced indexing on CPU
            values = sims.view(-1).index_select(0, flat)
            r = torch.div(flat, width, rounding_mode="floor")
            counts = torch.bincount(r, minlength=rows)
            starts = torch.cumsum(counts, 0) - counts
            if sims.dtype == torch.float32:
                return _ranked_float32_candidates(values, flat, r, starts, width, k)
            # other dtypes: candidates packed into rows (padded with -inf), then ranked row by row
            width_c = int(counts.max())
            pos = r * width_c + (torch.arange(len(r), device=r.device) - starts.index_select(0, r))
            cand = torch.full((rows * width_c,), float("-inf"), dtype=sims.dtype, device=sims.device)
            cand.index_copy_(0, pos, values)
            cand_cols = torch.zeros(rows * width_c, dtype=torch.long, device=sims.device)
            cand_cols.index_copy_(0, pos, flat - r * width)
            return _exact_topk(cand.view(rows, width_c), cand_cols.view(rows, width_c), k)
    return _exact_topk(sims, None, k)


# BLAS libraries switch to differently-rounding small-matrix kernels for a GEMM with few rows (MKL: fewer
# than 16, except some sizes) or, in float32, few columns (MKL: 9 to 11). Every GEMM here has at least this
# many rows (a short chunk is zero-padded) and columns (a narrow column range is widened), which keeps each
# float32 similarity bit-identical whatever the chunk size, so chunking cannot flip a near-tie.
_MIN_GEMM_ROWS = 16

# Leave-one-out mirroring (_MirrorCache): at most this many chunk x n strips' worth of similarity blocks are
# kept at a time, and chunks of fewer rows are not mirrored (small blocks cost more than the GEMM they save).
_MIRROR_STRIPS = 2
_MIRROR_MIN_CHUNK = 128


def _mirror_ok(x: Tensor) -> bool:
    """Whether a mirrored (transposed) similarity block is bit-identical to the directly computed one.

    Checked by the tests for float32 on CPU with MKL (other BLAS libraries are not checked, so they
    compute every block). In float64, MKL's rounding depends on the GEMM's
    shape (not even the chunk size is neutral there); other devices are not checked.
    """
    return x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkl.is_available()


def _mm_cols(q: Tensor, ref_t: Tensor, out: Tensor, lo: int, hi: int) -> None:
    """``out[:, lo:hi] = q @ ref_t[:, lo:hi]``, the range widened to at least 16 columns."""
    if hi <= lo:
        return
    hi = min(max(hi, lo + _MIN_GEMM_ROWS), ref_t.shape[1])
    lo = min(lo, hi - _MIN_GEMM_ROWS)
    torch.mm(q, ref_t[:, lo:hi], out=out[:, lo:hi])


class _MirrorCache:
    """Similarity blocks kept, transposed, for later chunks of a symmetric (leave-one-out) search.

    Rows of chunk i against the columns of chunk j are, transposed, rows of chunk j against the
    columns of chunk i: chunk i puts that block here and chunk j takes it instead of computing it.
    At most ``max_blocks`` blocks are held at a time, each in a ``chunk_size x chunk_size`` tensor
    that is reused once taken (fresh tensors would cost page faults at every block).
    """

    def __init__(self, num_chunks: int, chunk_size: int, max_blocks: int, like: Tensor) -> None:
        self._blocks: list[list[tuple[int, Tensor, Tensor]]] = [[] for _ in range(num_chunks)]
        self._free: list[Tensor] = []
        self._chunk_size, self._like = chunk_size, like
        self.max_blocks = max_blocks
        self.held = 0
        self.allocated = 0  # chunk x chunk tensors created: the most blocks held at once
        self.mirrored = 0  # blocks taken, each one GEMM block saved

    @property
    def full(self) -> bool:
        return self.held >= self.max_blocks

    def put(self, chunk: int, column: int, block: Tensor) -> None:
        """Keep ``block.T`` for ``chunk``, at its first ``column`` (the cache must not be full)."""
        if self._free:
            store = self._free.pop()
        else:
            # rows 16 floats longer than the block: a power-of-two row stride would send the transposed
            # writes of one column to a few cache sets
            store = self._like.new_empty(self._chunk_size, self._chunk_size + 16)
            self.allocated += 1
        kept = store[: block.shape[1], : block.shape[0]]
        kept.copy_(block.T)
        self._blocks[chunk].append((column, kept, store))
        self.held += 1

    def take(self, chunk: int) -> list[tuple[int, Tensor]]:
        """The blocks kept for ``chunk`` as ``(first column, block)``, by column; valid until the next put."""
        blocks, self._blocks[chunk] = self._blocks[chunk], []
        self._free.extend(store for _, _, store in blocks)
        self.held -= len(blocks)
        self.mirrored += len(blocks)
        return [(column, kept) for column, kept, _ in blocks]


def _iter_topk(
    query: Tensor,
    reference: Tensor,
    k: int,
    chunk_size: int,
    exclude_self: bool,
    symmetric: bool = False,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Yield ``(start, similarities, indices)`` for consecutive chunks of normalised queries.

    ``symmetric``: the reference is the query set (same rows, same order). A chunk then computes only
    its own block and the columns to its right; the columns of each earlier chunk come from the
    mirror cache where that chunk kept them, or are computed too where it could not (cache full).
    After its GEMM, a chunk keeps the blocks of the later chunks, nearest first, while the cache
    holds fewer than ``_MIRROR_STRIPS * n_ref // chunk_size`` blocks.
    """
    n_query, dim = query.shape
    n_ref = reference.shape[0]
    block = _block_size(n_ref, k)
    num_blocks = -(-n_ref // block)
    while (num_blocks * block) % 16:  # a row length of a multiple of 16 floats keeps the GEMM fast
        num_blocks += 1
    width = num_blocks * block
    max_candidates = 8 * k * min(chunk_size, n_query)
    # reference^T padded to a whole number of blocks; padding columns are set to -inf below
    ref_t = torch.zeros(dim, width, dtype=reference.dtype, device=reference.device)
    ref_t[:, :n_ref] = reference.T
    # one reused buffer: allocating a fresh chunk x n_ref block at every step costs page faults
    buf_rows = max(min(chunk_size, n_query), _MIN_GEMM_ROWS)
    buf = torch.empty(buf_rows, width, dtype=query.dtype, device=query.device)
    bounds = [(s, min(s + chunk_size, n_query)) for s in range(0, n_query, chunk_size)]
    cache = None
    if symmetric and len(bounds) > 1 and chunk_size >= _MIRROR_MIN_CHUNK and _mirror_ok(query):
        max_blocks = int(_MIRROR_STRIPS * n_ref) // chunk_size
        cache = _MirrorCache(len(bounds), chunk_size, max_blocks, buf)
    for i, (start, stop) in enumerate(bounds):
        rows = stop - start
        q = query[start:stop]
        if len(q) < _MIN_GEMM_ROWS:
            q = torch.cat([q, q.new_zeros(_MIN_GEMM_ROWS - len(q), dim)])
        out = buf[: len(q)]
        if cache is None:
            torch.mm(q, ref_t, out=out)
        else:
            done = 0  # columns [done, column) were not kept: computed here
            for column, kept in cache.take(i):
                if column > done:
                    _mm_cols(q, ref_t, out, done, column)
                out[:rows, column : column + kept.shape[1]].copy_(kept)
                done = column + kept.shape[1]
            if start > done:
                _mm_cols(q, ref_t, out, done, start)
            # the own block and all later columns in one GEMM; then the blocks of later chunks, nearest
            # first, are kept (transposed) while the cache has room
            _mm_cols(q, ref_t, out, start, width)
            for j in range(i + 1, len(bounds)):
                if cache.full:
                    break
                cache.put(j, start, out[:rows, bounds[j][0] : bounds[j][1]])
        sims = out[:rows]
        if width > n_ref:
            sims[:, n_ref:] = float("-inf")
        if exclude_self:
            diag = torch.arange(rows, device=sims.device)
            sims[diag, diag + start] = float("-inf")
        vals, cols = _topk_rows(sims, k, block, max_candidates)
        yield start, vals, cols


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


@torch.no_grad()
def nearest_neighbors(
    query: Tensor,
    reference: Tensor | None,
    k: int,
    chunk_size: int = 1024,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """The k nearest reference items of each query by cosine similarity, computed in chunks.

    Args:
        query: ``(n_query, dim)`` embeddings (normalised here).
        reference: ``(n_ref, dim)`` embeddings, or ``None`` to search the query set itself.
        k: number of neighbours; at most ``n_ref`` (``n_ref - 1`` with ``exclude_self``).
        chunk_size: queries per step; memory per step is about ``chunk_size * n_ref`` floats (with
            ``reference=None``, in float32 on CPU, up to twice that again for the mirrored blocks;
            see the module docstring).
        exclude_self: query ``i`` never retrieves reference ``i`` (leave-one-out). Requires the
            reference to be the query set (``reference=None`` or the same rows in the same order).

    Returns:
        ``(similarities, indices)``, both ``(n_query, k)``, sorted by decreasing similarity; equal
        similarities are ordered by increasing reference index.
    """
    _check_chunk_size(chunk_size)
    query, reference = _normalized_pair(query, reference)
    symmetric = reference is None  # the query set is its own reference: a symmetric similarity matrix
    if reference is None:
        reference = query
    if exclude_self and reference.shape[0] != query.shape[0]:
        raise ValueError("exclude_self needs the reference to be the query set (same length)")
    available = reference.shape[0] - int(exclude_self)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > available:
        raise ValueError(f"k must be an int in [0, {available}], got {k!r}")
    n_query = query.shape[0]
    sims = torch.empty(n_query, k, dtype=query.dtype, device=query.device)
    indices = torch.empty(n_query, k, dtype=torch.long, device=query.device)
    if k == 0 or n_query == 0:
        return sims, indices
    for start, vals, cols in _iter_topk(query, reference, k, chunk_size, exclude_self, symmetric):
        sims[start : start + len(vals)] = vals
        indices[start : start + len(cols)] = cols
    return sims, indices


# --------------------------------------------------------------------------------------------
# clustering: k-means and NMI
# --------------------------------------------------------------------------------------------


def _sq_distances(x: Tensor, x_sq: Tensor, centers: Tensor) -> Tensor:
    """Squared Euclidean distances ``(len(x), len(centers))``."""
    c_sq = (centers * centers).sum(dim=1)
    return torch.addmm(c_sq[None, :], x, centers.T, alpha=-2.0).add_(x_sq[:, None]).clamp_min_(0.0)


def _assign(x: Tensor, x_sq: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest center of each point (the first one on ties) and its squared distance, in chunks."""
    n = x.shape[0]
    step = max(1, (1 << 22) // max(1, centers.shape[0]))
    c_sq = (centers * centers).sum(dim=1)[None, :]
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    dists = torch.empty(n, dtype=x.dtype, device=x.device)
    for s in range(0, n, step):
        # ||x||^2 is the same for every center: add it after the argmin
        part = torch.addmm(c_sq, x[s : s + step], centers.T, alpha=-2.0)
        dists[s : s + step], labels[s : s + step] = part.min(dim=1)
    dists.add_(x_sq).clamp_min_(0.0)
    return labels, dists


def _cluster_sums(x: Tensor, labels: Tensor, counts: Tensor, segmented: bool | None = None) -> Tensor:
    """Per-cluster sums of the rows of ``x``, in an order that does not depend on scheduling.

    On CPU ``index_add_`` is sequential; on other devices it uses atomics (sums in a run-dependent
    order), so there (``segmented``) the rows are sorted by cluster and summed as differences of a
    prefix sum.
    """
    if segmented is None:
        segmented = x.device.type != "cpu"
    if not segmented:
        return torch.zeros(len(counts), x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    prefix = torch.cumsum(x[torch.argsort(labels, stable=True)], dim=0)
    prefix = torch.cat([prefix.new_zeros(1, x.shape[1]), prefix])
    ends = torch.cumsum(counts, dim=0)
    return prefix[ends] - prefix[ends - counts]


@torch.no_grad()
def kmeans(x: Tensor, num_clusters: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4) -> Tensor:
    """Seeded k-means; returns the cluster index of every row of ``x`` (``(n,)`` long).

    Initialisation is greedy k-means++ (Arthur and Vassilvitskii, "k-means++: the advantages of
    careful seeding", SODA 2007; ``2 + floor(ln k)`` candidates per step, as scikit-learn), then
    Lloyd iterations until the assignment no longer changes, the centers move by less than
    ``tol`` times the mean per-feature variance (scikit-learn's criterion), or ``max_iter``.
    An empty cluster is moved onto the point farthest from its center. Random draws come from a
    CPU ``torch.Generator`` seeded with ``seed``, so a seed gives the same clustering on any device
    (up to floating-point differences between devices).
    """
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError("x must be a 2-D tensor")
    n = x.shape[0]
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be an int in [1, {n}], got {num_clusters!r}")
    x = _as_embeddings(x, "x")
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    device = x.device
    gen = torch.Generator().manual_seed(int(seed))
    x_sq = (x * x).sum(dim=1)

    # greedy k-means++
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    closest = _sq_distances(x, x_sq, x[first : first + 1])[:, 0].double()
    potential = closest.sum()
    n_trials = 2 + int(math.log(num_clusters))
    for _ in range(1, num_clusters):
        draws = torch.rand(n_trials, generator=gen, dtype=torch.float64).to(device)
        if float(potential) > 0:
            cands = torch.searchsorted(torch.cumsum(closest, 0), draws * potential)
            cands = cands.clamp_max_(n - 1)
        else:  # every point sits on a center: draw uniformly
            cands = (draws * n).long().clamp_max_(n - 1)
        d = _sq_distances(x, x_sq, x[cands]).double()
        new_closest = torch.minimum(closest[:, None], d)
        potentials = new_closest.sum(dim=0)
        best = int(torch.argmin(potentials))
        chosen.append(int(cands[best]))
        closest, potential = new_closest[:, best].contiguous(), potentials[best]

    # Lloyd iterations
    centers = x[torch.tensor(chosen, device=device)].clone()
    x64 = x.double()
    threshold = tol * float(x64.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    labels, dists = _assign(x, x_sq, centers)
    for _ in range(max_iter):
        counts = torch.bincount(labels, minlength=num_clusters)
        sums = _cluster_sums(x64, labels, counts)
        new_centers = (sums / counts.clamp_min(1)[:, None].double()).to(x.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty) > 0:
            far = torch.sort(dists, descending=True, stable=True).indices[: len(empty)]
            new_centers[empty] = x[far]
        shift = float(((new_centers.double() - centers.double()) ** 2).sum())
        centers = new_centers
        new_labels, dists = _assign(x, x_sq, centers)
        converged = torch.equal(new_labels, labels) or shift <= threshold
        labels = new_labels
        if converged:
            break
    return labels


def _entropy_from_counts(counts: Tensor) -> float:
    counts = counts[counts > 0].double()
    total = counts.sum()
    return float(-((counts / total) * (torch.log(counts) - torch.log(total))).sum())


def normalized_mutual_info(labels_true: Tensor, labels_pred: Tensor) -> float:
    """NMI with arithmetic-mean normalisation: ``MI(U, V) / ((H(U) + H(V)) / 2)``.

    Natural logarithms; the same value and edge cases as scikit-learn's
    ``normalized_mutual_info_score`` with its default ``average_method="arithmetic"`` (1.0 when
    both labelings are a single cluster, 0.0 when the mutual information is 0). The contingency
    table is kept sparse (only its non-zero cells), so 10^4 classes x 10^4 clusters is cheap.
    """
    a = torch.as_tensor(labels_true).reshape(-1)
    b = torch.as_tensor(labels_pred).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"label tensors differ in length: {a.numel()} vs {b.numel()}")
    b = b.to(a.device)
    a_ids, a_inv = torch.unique(a, return_inverse=True)
    b_ids, b_inv = torch.unique(b, return_inverse=True)
    na, nb = len(a_ids), len(b_ids)
    if na == nb == 1 or na == nb == 0:
        return 1.0
    if na == 1 or nb == 1:
        return 0.0
    n = float(a.numel())
    cells, n_ij = torch.unique(a_inv * nb + b_inv, return_counts=True)
    pi = torch.bincount(a_inv, minlength=na).double()
    pj = torch.bincount(b_inv, minlength=nb).double()
    n_ij = n_ij.double()
    outer = pi[cells // nb] * pj[cells % nb]
    p_ij = n_ij / n
    terms = p_ij * (torch.log(n_ij) - math.log(n)) + p_ij * (-torch.log(outer) + 2.0 * math.log(n))
    terms = torch.where(terms.abs() < torch.finfo(torch.float64).eps, torch.zeros_like(terms), terms)
    mi = max(float(terms.sum()), 0.0)
    if mi == 0.0:
        return 0.0
    h_true = _entropy_from_counts(pi)
    h_pred = _entropy_from_counts(pj)
    return mi / ((h_true + h_pred) / 2.0)


# --------------------------------------------------------------------------------------------
# the metrics
# --------------------------------------------------------------------------------------------


def _as_labels(labels: Tensor, n: int, name: str, device: torch.device) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    labels = labels.detach().reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels.detach()
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    return labels.to(device)


@torch.no_grad()
def retrieval_metrics(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    chunk_size: int = 1024,
    nmi_seed: int | None = 0,
) -> dict[str, float]:
    """P@1, Recall@K, R-Precision, MAP@R and NMI of embeddings under cosine similarity.

    See the module docstring for the definitions (R-Precision and MAP@R as in Musgrave et al.,
    "A Metric Learning Reality Check", ECCV 2020) and for how queries without any relevant item
    are treated (left out, like pytorch-metric-learning's ``AccuracyCalculator``).

    Args:
        query: ``(n_query, dim)`` embeddings.
        query_labels: ``(n_query,)`` class labels (any integer or float tensor).
        reference: ``(n_ref, dim)`` gallery embeddings, or ``None`` for leave-one-out retrieval
            within the query set.
        reference_labels: ``(n_ref,)`` labels; given if and only if ``reference`` is.
        ks: the K of each ``recall_at_{K}``; K larger than the reference size counts every item.
        chunk_size: queries per similarity block (memory about ``chunk_size * n_ref`` floats; in
            leave-one-out mode, in float32 on CPU, up to 3x that with the mirrored blocks, see the
            module docstring).
        nmi_seed: seed of the k-means behind ``nmi``; ``None`` skips the clustering (no ``nmi`` key).

    Returns:
        ``{"precision_at_1", "recall_at_{K}" for K in ks, "r_precision", "map_at_r", "nmi"}`` as
        Python floats.
    """
    _check_chunk_size(chunk_size)
    given = tuple(ks)
    try:
        ks = tuple(operator.index(k) for k in given if not isinstance(k, bool))
    except TypeError:
        ks = ()
    if not ks or len(ks) != len(given) or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {given!r}")
    if (reference is None) != (reference_labels is None):
        raise ValueError("give both reference and reference_labels, or neither")
    same_set = reference is None
    q, r = _normalized_pair(query, reference)
    n_query = q.shape[0]
    if n_query == 0:
        raise ValueError("query is empty")
    q_labels = _as_labels(query_labels, n_query, "query_labels", q.device)
    if same_set:
        r = q
        all_labels = q_labels
    else:
        if r.shape[0] == 0:
            raise ValueError("reference is empty")
        r_labels = _as_labels(reference_labels, r.shape[0], "reference_labels", q.device)
        all_labels = torch.cat([q_labels, r_labels.to(q_labels.dtype)])
    _, ids = torch.unique(all_labels, return_inverse=True)
    q_ids = ids[:n_query]
    r_ids = q_ids if same_set else ids[n_query:]
    n_ref = r.shape[0]

    # R: relevant reference items per query (the query itself excluded in leave-one-out mode)
    num_relevant = torch.bincount(r_ids, minlength=int(ids.max()) + 1)[q_ids] - int(same_set)
    valid = num_relevant > 0
    available = n_ref - int(same_set)
    k = min(max(max(ks), int(num_relevant.max())), available)

    hit_at_1 = torch.zeros(n_query, dtype=torch.bool, device=q.device)
    hit_at = {kk: torch.zeros(n_query, dtype=torch.bool, device=q.device) for kk in ks}
    r_prec = torch.zeros(n_query, dtype=torch.float64, device=q.device)
    ap_r = torch.zeros(n_query, dtype=torch.float64, device=q.device)
    if k > 0:
        ranks = torch.arange(1, k + 1, device=q.device)
        for start, _, cols in _iter_topk(q, r, k, chunk_size, same_set, same_set):
            stop = start + len(cols)
            same = r_ids[cols] == q_ids[start:stop, None]
            big_r = num_relevant[start:stop]
            hit_at_1[start:stop] = same[:, 0]
            for kk in ks:
                hit_at[kk][start:stop] = same[:, : min(kk, k)].any(dim=1)
            relevant = same & (ranks[None, :] <= big_r[:, None])
            cum = torch.cumsum(relevant, dim=1)
            denom = big_r.clamp_min(1).double()
            r_prec[start:stop] = cum[:, -1].double() / denom
            precision_at_i = cum.double() / ranks.double()
            ap_r[start:stop] = (precision_at_i * relevant).sum(dim=1) / denom

    def mean(values: Tensor) -> float:
        return float(values[valid].double().mean()) if bool(valid.any()) else float("nan")

    out = {"precision_at_1": mean(hit_at_1)}
    for kk in ks:
        out[f"recall_at_{kk}"] = mean(hit_at[kk])
    out["r_precision"] = mean(r_prec)
    out["map_at_r"] = mean(ap_r)
    if nmi_seed is not None:
        num_classes = int(torch.unique(q_ids).numel())
        out["nmi"] = normalized_mutual_info(q_ids, kmeans(q, num_classes, seed=nmi_seed))
    return out
