"""Tests of common.metrics.retrieval: hand-computed cases, pytorch-metric-learning's AccuracyCalculator,
brute-force loops, scikit-learn's NMI, chunking and tie invariance."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.metrics import normalized_mutual_info_score

from common.metrics import retrieval as retrieval_module
from common.metrics.retrieval import kmeans, nearest_neighbors, normalized_mutual_info, retrieval_metrics

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def on_circle(degrees: list[float]) -> torch.Tensor:
    """Unit vectors at the given angles: cosine similarity orders neighbours by angular distance."""
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=1)


def clustered(
    n: int, num_classes: int, dim: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class centers plus Gaussian noise: metrics well away from 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return centers[labels] + noise * torch.randn(n, dim, generator=g), labels


def tied_embeddings(n: int, dim: int, seed: int) -> torch.Tensor:
    """Vectors with four +-1 entries (norm 2): cosine similarities are exact multiples of 1/4 in any
    summation order, so ties are real ties and there are many of them (and exact duplicates)."""
    g = torch.Generator().manual_seed(seed)
    cols = torch.argsort(torch.rand(n, dim, generator=g), dim=1)[:, :4]
    signs = torch.randint(0, 2, (n, 4), generator=g).float() * 2 - 1
    return torch.zeros(n, dim).scatter_(1, cols, signs)


def stable_reference_neighbors(query, reference, k, exclude_self):
    """All similarities at once, stable descending sort: ties by ascending reference index."""
    q = torch.nn.functional.normalize(query.double(), dim=1)
    r = torch.nn.functional.normalize(reference.double(), dim=1)
    sims = q @ r.T
    if exclude_self:
        sims.fill_diagonal_(float("-inf"))
    vals, idx = torch.sort(sims, dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


def pml_metrics(query, query_labels, reference=None, reference_labels=None):
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(CosineSimilarity()),
    )
    return calc.get_accuracy(query, query_labels, reference, reference_labels)


# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------

# Six points on the unit circle. Neighbour order by angular distance (leave-one-out):
#   p0   0 deg  A: p1 A(30)  p2 B(45)  p3 B(100) p5 C(110) p4 A(120)  rel 1 0 0 0 1   R=2
#   p1  30 deg  A: p2 B(15)  p0 A(30)  p3 B(70)  p4 A(90)  p5 C(140)  rel 0 1 0 1 0   R=2
#   p2  45 deg  B: p1 A(15)  p0 A(45)  p3 B(55)  p4 A(75)  p5 C(155)  rel 0 0 1 0 0   R=1
#   p3 100 deg  B: p4 A(20)  p2 B(55)  p1 A(70)  p0 A(100) p5 C(150)  rel 0 1 0 0 0   R=1
#   p4 120 deg  A: p3 B(20)  p2 B(75)  p1 A(90)  p0 A(120) p5 C(130)  rel 0 0 1 1 0   R=2
#   p5 250 deg  C: the only C, so R=0: a "lone" query, left out of every neighbour metric.
# P@1 = Recall@1 = 1/5 (p0); Recall@2 = 3/5 (p0, p1, p3); Recall@4 = 5/5.
# R-Precision: p0 1/2, p1 1/2, others 0 -> 1/5.
# MAP@R: p0 (1/2)(1/1) = 1/2, p1 (1/2)(1/2) = 1/4, others 0 -> (3/4)/5 = 3/20.
HAND_ANGLES = [0.0, 30.0, 45.0, 100.0, 120.0, 250.0]
HAND_LABELS = torch.tensor([0, 0, 1, 1, 0, 2])


def test_hand_computed_leave_one_out():
    out = retrieval_metrics(on_circle(HAND_ANGLES), HAND_LABELS, ks=(1, 2, 4))
    assert out["precision_at_1"] == 0.2
    assert out["recall_at_1"] == 0.2
    assert out["recall_at_2"] == 0.6
    assert out["recall_at_4"] == 1.0
    assert out["r_precision"] == 0.2
    assert out["map_at_r"] == 0.15
    assert set(out) == {
        "precision_at_1",
        "recall_at_1",
        "recall_at_2",
        "recall_at_4",
        "r_precision",
        "map_at_r",
        "nmi",
    }


def test_hand_computed_neighbors():
    sims, idx = nearest_neighbors(on_circle(HAND_ANGLES), None, 5, exclude_self=True)
    assert idx.tolist() == [
        [1, 2, 3, 5, 4],
        [2, 0, 3, 4, 5],
        [1, 0, 3, 4, 5],
        [4, 2, 1, 0, 5],
        [3, 2, 1, 0, 5],
        [0, 4, 1, 3, 2],
    ]
    assert sims[0, 0].item() == pytest.approx(math.cos(math.radians(30)), abs=1e-12)


def test_hand_computed_query_reference():
    # reference = the six points above (labels A A B B A C), no exclusion.
    # q0 10 deg A: p0 A(10) p1 A(20) p2 B(35) p3 B(90) p4 A(110) p5 C(120); R=3 -> rel 1 1 0
    #   P@1 1, R-Precision 2/3, AP@R (1/3)(1 + 1) = 2/3
    # q1 112 deg B: p4 A(8) p3 B(12) p2 B(67) p1 A(82); R=2 -> rel 0 1
    #   P@1 0, R-Precision 1/2, AP@R (1/2)(1/2) = 1/4
    # q2 label D is absent from the reference: lone, left out.
    query = on_circle([10.0, 112.0, 300.0])
    out = retrieval_metrics(query, torch.tensor([0, 1, 3]), on_circle(HAND_ANGLES), HAND_LABELS, ks=(1, 2))
    assert out["precision_at_1"] == 0.5
    assert out["recall_at_1"] == 0.5
    assert out["recall_at_2"] == 1.0
    assert out["r_precision"] == pytest.approx((2 / 3 + 1 / 2) / 2, rel=1e-15)
    assert out["map_at_r"] == pytest.approx((2 / 3 + 1 / 4) / 2, rel=1e-15)


def test_all_queries_lone_gives_nan():
    out = retrieval_metrics(on_circle([0.0, 90.0, 180.0]), torch.tensor([0, 1, 2]))
    for key in ("precision_at_1", "recall_at_1", "recall_at_8", "r_precision", "map_at_r"):
        assert math.isnan(out[key])
    assert out["nmi"] == 1.0  # three points, three clusters: a perfect clustering


def test_perfect_and_scale_invariant():
    x, y = clustered(300, 6, 8, noise=0.01, seed=1)
    out = retrieval_metrics(x, y)
    assert out["precision_at_1"] == out["r_precision"] == out["map_at_r"] == out["recall_at_8"] == 1.0
    assert out["nmi"] == pytest.approx(1.0)
    # cosine similarity: rescaling rows changes nothing
    scales = torch.rand(300, 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.1
    assert retrieval_metrics(x * scales, y) == out


# --------------------------------------------------------------------------------------------
# pytorch-metric-learning's AccuracyCalculator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "num_classes", "dim", "noise", "seed"),
    [(2000, 50, 32, 1.5, 0), (1500, 100, 16, 3.0, 1), (1500, 10, 64, 0.0, 2)],
)
def test_matches_pml_leave_one_out(n, num_classes, dim, noise, seed):
    if noise == 0.0:  # plain random embeddings, metrics near chance
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(n, dim, generator=g), torch.randint(0, num_classes, (n,), generator=g)
    else:
        x, y = clustered(n, num_classes, dim, noise, seed)
    y[:3] = torch.tensor([1000, 1001, 1002])  # singleton classes: lone queries
    ours = retrieval_metrics(x, y)
    ref = pml_metrics(x, y)
    assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert 0.0 < ours["map_at_r"] < 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pml_query_reference(seed):
    x, y = clustered(2000, 40, 32, noise=1.5, seed=seed)
    query, query_labels = x[:700], y[:700].clone()
    reference, reference_labels = x[700:], y[700:]
    query_labels[:5] = 999  # absent from the reference: lone queries
    ours = retrieval_metrics(query, query_labels, reference, reference_labels)
    ref = pml_metrics(query, query_labels, reference, reference_labels)
    assert ours["precision_at_1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)


# --------------------------------------------------------------------------------------------
# brute force
# --------------------------------------------------------------------------------------------


def brute_force(query, query_labels, reference, reference_labels, ks, exclude_self):
    """One query at a time: full similarity row, stable sort, plain Python counting."""
    q = torch.nn.functional.normalize(query.double(), dim=1)
    r = torch.nn.functional.normalize(reference.double(), dim=1)
    recall = {k: [] for k in ks}
    p1, r_prec, ap_r = [], [], []
    for i in range(len(q)):
        order = torch.sort(r @ q[i], descending=True, stable=True).indices.tolist()
        if exclude_self:
            order.remove(i)
        rel = [int(reference_labels[j] == query_labels[i]) for j in order]
        big_r = sum(rel)
        if big_r == 0:
            continue
        p1.append(rel[0])
        for k in ks:
            recall[k].append(int(any(rel[:k])))
        r_prec.append(sum(rel[:big_r]) / big_r)
        ap_r.append(sum(sum(rel[: i + 1]) / (i + 1) for i in range(big_r) if rel[i]) / big_r)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    out = {"precision_at_1": mean(p1), "r_precision": mean(r_prec), "map_at_r": mean(ap_r)}
    out.update({f"recall_at_{k}": mean(recall[k]) for k in ks})
    return out


def test_matches_brute_force_leave_one_out():
    x, y = clustered(400, 20, 8, noise=1.0, seed=3)
    y[0] = 77  # a singleton class
    ks = (1, 2, 3, 5, 10, 50, 1000)  # K beyond the set size counts every item
    ours = retrieval_metrics(x, y, ks=ks)
    ref = brute_force(x, y, x, y, ks, exclude_self=True)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_matches_brute_force_query_reference():
    x, y = clustered(700, 25, 8, noise=1.0, seed=4)
    y[:4] = 55  # absent from the reference
    ks = (1, 4, 16)
    ours = retrieval_metrics(x[:300], y[:300], x[300:], y[300:], ks=ks)
    ref = brute_force(x[:300], y[:300], x[300:], y[300:], ks, exclude_self=False)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


# --------------------------------------------------------------------------------------------
# nearest neighbours, ties and chunking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 18, 100])
@pytest.mark.parametrize("chunk_size", [7, 64, 300])
def test_neighbors_ties_match_stable_sort(k, chunk_size):
    # 300 points in 12-D with four +-1 entries: duplicates and exact ties everywhere; k=1..18 takes the
    # thresholded (block maxima) path, k=100 the plain top-k path
    assert retrieval_module._block_size(300, 18) > 1 and retrieval_module._block_size(300, 100) == 1
    x = tied_embeddings(300, 12, seed=0)
    sims, idx = nearest_neighbors(x, None, k, chunk_size, exclude_self=True)
    ref_sims, ref_idx = stable_reference_neighbors(x, x, k, exclude_self=True)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(sims.double(), ref_sims)


def test_neighbors_collapsed_embeddings():
    # every similarity is exactly 1: the thresholded path would keep whole rows and falls back to the
    # plain one; ties go to the lowest index
    x = torch.ones(400, 4)
    x[::3] *= 2.0  # another norm, the same direction
    assert retrieval_module._block_size(400, 5) > 1
    sims, idx = nearest_neighbors(x, None, 5, chunk_size=64, exclude_self=True)
    assert torch.equal(sims, torch.ones(400, 5))
    assert idx[10].tolist() == [0, 1, 2, 3, 4] and idx[2].tolist() == [0, 1, 3, 4, 5]
    # every query's nearest neighbour is item 0 (item 1 for item 0): hits are the other label-0 items
    out = retrieval_metrics(x, torch.arange(400) % 4)
    assert out["precision_at_1"] == 99 / 400


def test_neighbors_query_reference_and_block_path():
    g = torch.Generator().manual_seed(5)
    q, r = torch.randn(300, 24, generator=g), torch.randn(5000, 24, generator=g)
    assert retrieval_module._block_size(5000, 20) > 1
    sims, idx = nearest_neighbors(q, r, 20, chunk_size=64)
    ref_sims, ref_idx = stable_reference_neighbors(q, r, 20, exclude_self=False)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sims.double(), ref_sims, rtol=0, atol=1e-6)
    assert sims.dtype == torch.float32


def test_chunk_size_does_not_change_results():
    x, y = clustered(250, 8, 16, noise=1.5, seed=6)
    results = [retrieval_metrics(x, y, chunk_size=c) for c in (7, 64, len(x))]
    assert results[0] == results[1] == results[2]
    neighbors = [nearest_neighbors(x, None, 40, c, exclude_self=True) for c in (7, 64, len(x))]
    for sims, idx in neighbors[1:]:
        assert torch.equal(idx, neighbors[0][1])
        assert torch.equal(sims, neighbors[0][0])


def test_chunk_size_does_not_change_results_with_ties():
    x = tied_embeddings(300, 12, seed=1)
    y = torch.randint(0, 15, (300,), generator=torch.Generator().manual_seed(0))
    results = [retrieval_metrics(x, y, chunk_size=c) for c in (7, 64, 300)]
    assert results[0] == results[1] == results[2]


def test_neighbors_validation():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError):
        nearest_neighbors(x, None, 10, exclude_self=True)  # only 9 others
    with pytest.raises(ValueError):
        nearest_neighbors(x, torch.randn(5, 4), 2, exclude_self=True)
    with pytest.raises(ValueError):
        nearest_neighbors(x, torch.randn(5, 3), 2)
    with pytest.raises(ValueError):
        nearest_neighbors(x, None, 2, chunk_size=0)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError):
        nearest_neighbors(bad, None, 2)
    sims, idx = nearest_neighbors(x, None, 0)
    assert sims.shape == idx.shape == (10, 0)


def test_metrics_validation():
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    with pytest.raises(ValueError):
        retrieval_metrics(x, y[:9])
    with pytest.raises(ValueError):
        retrieval_metrics(x, y, reference=x)  # reference without labels
    with pytest.raises(ValueError):
        retrieval_metrics(x, y, ks=(0, 1))
    with pytest.raises(ValueError):
        retrieval_metrics(x, y, ks=())


def test_dtypes_and_no_grad():
    x, y = clustered(200, 5, 8, noise=1.0, seed=7)
    x.requires_grad_(True)
    out32 = retrieval_metrics(x, y)
    out64 = retrieval_metrics(x.detach().double(), y)
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert out32[key] == pytest.approx(out64[key], abs=1e-12)
    assert all(isinstance(v, float) for v in out32.values())


def test_nonzero_flat_matches_nonzero():
    g = torch.Generator().manual_seed(14)
    for shape, p in [((64, 48), 0.02), ((37, 41), 0.05), ((16, 800), 0.5), ((3, 8), 1.0), ((5, 16), 0.0)]:
        mask = torch.rand(shape, generator=g) < p
        expected = torch.nonzero(mask.view(-1)).squeeze(1)
        assert torch.equal(retrieval_module._nonzero_flat(mask, mask.numel()), expected)
        if len(expected) > 0:
            assert retrieval_module._nonzero_flat(mask, len(expected) - 1) is None


def test_ranked_float32_candidates_follow_the_tie_rule():
    # the int64 sort keys order float32 values exactly: ties (including -0.0 and +0.0), negatives,
    # subnormals and the extremes come out as a stable descending sort, equal values by column
    g = torch.Generator().manual_seed(15)
    pool = torch.tensor([1.0, 0.5, 0.5, 0.0, -0.0, -0.25, 1e-40, -1e-40, -3.0, 3.4e38, -3.4e38])
    rows, width, k = 7, 60, 25
    sims = pool[torch.randint(len(pool), (rows, width), generator=g)]
    keep = torch.rand(rows, width, generator=g) < 0.6
    keep[:, :k] = True  # at least k candidates a row
    flat = torch.nonzero(keep.view(-1)).squeeze(1)
    row = flat // width
    counts = torch.bincount(row, minlength=rows)
    vals, cols = retrieval_module._ranked_float32_candidates(
        sims.view(-1)[flat], flat, row, torch.cumsum(counts, 0) - counts, width, k
    )
    masked = torch.where(keep, sims, torch.tensor(float("-inf")))
    ref_vals, ref_cols = torch.sort(masked, dim=1, descending=True, stable=True)
    assert torch.equal(cols, ref_cols[:, :k])
    assert torch.equal(vals, ref_vals[:, :k])


def test_neighbors_float64_block_path():
    # float64 takes the packed-rows ranking instead of the float32 sort keys: same tie rule
    x = tied_embeddings(300, 12, seed=4).double()
    assert retrieval_module._block_size(300, 18) > 1
    sims, idx = nearest_neighbors(x, None, 18, chunk_size=64, exclude_self=True)
    ref_sims, ref_idx = stable_reference_neighbors(x, x, 18, exclude_self=True)
    assert torch.equal(idx, ref_idx) and torch.equal(sims, ref_sims)
    assert sims.dtype == torch.float64


# --------------------------------------------------------------------------------------------
# leave-one-out mirroring: each similarity block computed once, its transpose reused
# --------------------------------------------------------------------------------------------


needs_mkl = pytest.mark.skipif(
    not torch.backends.mkl.is_available(), reason="mirroring is used (and checked) only with MKL"
)


@pytest.fixture
def mirror_caches(monkeypatch):
    """Every _MirrorCache made while the test runs (mirroring on for chunks of 16 rows and more)."""
    made = []

    class Recorded(retrieval_module._MirrorCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(retrieval_module, "_MirrorCache", Recorded)
    monkeypatch.setattr(retrieval_module, "_MIRROR_MIN_CHUNK", 16)
    return made


def padded_reference(x: torch.Tensor) -> torch.Tensor:
    """x^T with zero columns up to a multiple of 16, as _iter_topk lays out the reference."""
    ref_t = torch.zeros(x.shape[1], -(-len(x) // 16) * 16, dtype=x.dtype)
    ref_t[:, : len(x)] = x.T
    return ref_t


@needs_mkl
@pytest.mark.parametrize("dim", [3, 12, 64, 128])
def test_mirrored_blocks_are_bit_identical(dim):
    # the premise of mirroring, on this machine: a block computed as (rows b) x (columns a) and transposed
    # equals the block (rows a) x (columns b), and a GEMM over a column range equals the same columns of the
    # full-width GEMM (at least 16 rows and 16 columns), so mirroring cannot change a similarity
    g = torch.Generator().manual_seed(dim)
    x = torch.nn.functional.normalize(torch.randn(700, dim, generator=g), dim=1)
    ref_t = padded_reference(x)
    full = torch.mm(x, ref_t)
    assert torch.equal(full[:, :700], full[:, :700].T)
    for start, stop in [(0, 64), (64, 100), (100, 333), (333, 700), (690, 700)]:
        q = x[start:stop]
        if len(q) < 16:
            q = torch.cat([q, q.new_zeros(16 - len(q), dim)])
        for lo, hi in [(0, 16), (start, ref_t.shape[1]), (17, 350), (ref_t.shape[1] - 16, ref_t.shape[1])]:
            part = torch.mm(q, ref_t[:, lo:hi])[: stop - start]
            assert torch.equal(part, full[start:stop, lo:hi]), (start, lo, hi)


def tied_and_clustered() -> list[torch.Tensor]:
    x, _ = clustered(600, 12, 16, noise=1.5, seed=11)
    return [tied_embeddings(500, 12, seed=2), x]


@needs_mkl
@pytest.mark.parametrize("strips", [0.5, 1, 100])
@pytest.mark.parametrize("chunk_size", [16, 20, 64, 150])
def test_mirrored_neighbors_equal_direct(mirror_caches, strips, chunk_size, monkeypatch):
    # the leave-one-out search (reference=None: mirrored) against the same rows given as a reference (direct
    # GEMM of every block): same neighbours, same similarities, same tie order, bit for bit; 0.5 strip keeps
    # a few blocks, 100 keeps all of them
    monkeypatch.setattr(retrieval_module, "_MIRROR_STRIPS", strips)
    for x in tied_and_clustered():
        for k in (1, 10, 40, 150):  # 150: the plain top-k path
            mirror_caches.clear()
            sims, idx = nearest_neighbors(x, None, k, chunk_size, exclude_self=True)
            direct_sims, direct_idx = nearest_neighbors(x, x, k, chunk_size, exclude_self=True)
            assert torch.equal(idx, direct_idx), (k, chunk_size)
            assert torch.equal(sims, direct_sims), (k, chunk_size)
            (cache,) = mirror_caches
            assert cache.mirrored > 0 and cache.held == 0
    # ties (duplicates, exact multiples of 1/4) also match the stable-sort oracle
    x = tied_embeddings(500, 12, seed=2)
    sims, idx = nearest_neighbors(x, None, 30, chunk_size, exclude_self=True)
    ref_sims, ref_idx = stable_reference_neighbors(x, x, 30, exclude_self=True)
    assert torch.equal(idx, ref_idx) and torch.equal(sims.double(), ref_sims)


@needs_mkl
@pytest.mark.parametrize("chunk_size", [16, 64, 100, 1024])
def test_mirrored_metrics_equal_direct(mirror_caches, chunk_size, monkeypatch):
    # retrieval_metrics in leave-one-out mode, mirrored and not: exactly the same numbers
    for x in [*tied_and_clustered(), torch.cat([tied_embeddings(200, 12, seed=3)] * 2)]:  # last: duplicates
        y = torch.randint(0, 15, (len(x),), generator=torch.Generator().manual_seed(1))
        y[:2] = torch.tensor([100, 101])  # lone queries
        mirrored = retrieval_metrics(x, y, ks=(1, 4, 16), chunk_size=chunk_size, nmi_seed=None)
        with monkeypatch.context() as m:
            m.setattr(retrieval_module, "_mirror_ok", lambda t: False)
            direct = retrieval_metrics(x, y, ks=(1, 4, 16), chunk_size=chunk_size, nmi_seed=None)
        assert mirrored == direct
    if chunk_size < 400:
        assert len(mirror_caches) == 3 and all(c.mirrored > 0 for c in mirror_caches)
    else:  # one chunk: nothing to mirror
        assert mirror_caches == []


@needs_mkl
@pytest.mark.parametrize("strips", [0.5, 1, 3])
def test_mirror_cache_memory_is_bounded(mirror_caches, strips, monkeypatch):
    # at most strips * n / chunk_size blocks of chunk_size^2 floats are held at once, i.e. at most `strips`
    # chunk x n strips; the chunk x chunk tensors are reused, so many more blocks are mirrored than allocated
    monkeypatch.setattr(retrieval_module, "_MIRROR_STRIPS", strips)
    x, _ = clustered(2000, 20, 16, noise=1.5, seed=12)
    nearest_neighbors(x, None, 20, chunk_size=100, exclude_self=True)
    (cache,) = mirror_caches
    assert cache.max_blocks == int(strips * 2000) // 100
    assert 0 < cache.allocated <= cache.max_blocks
    assert cache.allocated * 100 * 100 <= strips * 100 * 2000
    assert cache.mirrored > 2 * cache.allocated
    # all 190 blocks above the diagonal (20 chunks) fit in 100 blocks (5 strips): the largest set held at
    # once, after chunk 10 of 20, is 10 x 10 blocks (n^2 / 4 floats)
    monkeypatch.setattr(retrieval_module, "_MIRROR_STRIPS", 5)
    nearest_neighbors(x, None, 20, chunk_size=100, exclude_self=True)
    assert mirror_caches[-1].mirrored == 190 and mirror_caches[-1].allocated == 100


@needs_mkl
def test_mirroring_only_where_checked(mirror_caches):
    x, y = clustered(300, 5, 8, noise=1.0, seed=13)
    nearest_neighbors(x, x, 5, chunk_size=64, exclude_self=True)  # a reference given: direct
    nearest_neighbors(x.double(), None, 5, chunk_size=64, exclude_self=True)  # float64: direct
    nearest_neighbors(x, None, 5, chunk_size=300)  # one chunk: nothing to mirror
    assert mirror_caches == []
    nearest_neighbors(x, None, 5, chunk_size=64)  # without exclusion too: the matrix is symmetric
    assert len(mirror_caches) == 1


# --------------------------------------------------------------------------------------------
# NMI and k-means
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_nmi_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 3000, (1,), generator=g))
    a = torch.randint(0, int(torch.randint(1, 60, (1,), generator=g)), (n,), generator=g)
    b = torch.randint(0, int(torch.randint(1, 60, (1,), generator=g)), (n,), generator=g)
    b = torch.where(torch.rand(n, generator=g) < 0.5, a * 7 + 3, b)  # partly dependent
    ours = normalized_mutual_info(a, b)
    ref = normalized_mutual_info_score(a.numpy(), b.numpy())
    assert ours == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0, 0, 0], [1, 1, 1]),  # one cluster each: 1.0
        ([0, 1, 2], [5, 5, 5]),  # one side a single cluster: 0.0
        ([0, 0, 1, 1], [1, 1, 0, 0]),  # a relabelling: 1.0
        ([0, 0, 1, 1], [0, 1, 0, 1]),  # independent: 0.0
        ([3, 3, 1, 2, 2, 2], [0, 0, 0, 1, 1, 9]),
    ],
)
def test_nmi_edge_cases_match_sklearn(a, b):
    assert normalized_mutual_info(torch.tensor(a), torch.tensor(b)) == pytest.approx(
        normalized_mutual_info_score(a, b), abs=1e-12
    )


def test_kmeans_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(12, 32, generator=g), dim=1) * 10
    labels = torch.arange(600) % 12
    x = centers[labels] + 0.05 * torch.randn(600, 32, generator=g)
    assert normalized_mutual_info(labels, kmeans(x, 12, seed=0)) == 1.0
    assert retrieval_metrics(x, labels)["nmi"] == pytest.approx(1.0, abs=1e-12)


def test_kmeans_seeded_and_valid():
    x, _ = clustered(800, 10, 16, noise=2.0, seed=8)
    a, b = kmeans(x, 10, seed=3, tol=0.0, max_iter=300), kmeans(x, 10, seed=3, tol=0.0, max_iter=300)
    assert torch.equal(a, b)
    assert a.dtype == torch.long and a.shape == (800,)
    assert int(a.min()) >= 0 and int(a.max()) < 10
    assert len(torch.unique(a)) == 10  # no empty cluster
    # converged (tol=0 stops only when no label changes): every point sits at its nearest center
    centers = torch.stack([x[a == c].mean(0) for c in range(10)])
    assert torch.equal(torch.cdist(x, centers).argmin(1), a)
    assert kmeans(x, 1).eq(0).all()
    assert len(torch.unique(kmeans(x[:10], 10))) == 10  # as many clusters as points
    dup = kmeans(torch.cat([x[:5], x[:5]]), 10)  # more clusters than distinct points still works
    assert dup.shape == (10,) and torch.equal(dup[:5], dup[5:])
    with pytest.raises(ValueError):
        kmeans(x, 0)


def sq(a: list[int], b: list[int]) -> int:
    return sum((p - q) ** 2 for p, q in zip(a, b, strict=True))


def greedy_kmeans_pp(points: list[list[int]], k: int, seed: int) -> list[int]:
    """Greedy k-means++ in plain loops, on the seeded stream ``kmeans`` documents: a uniform index for the
    first centre, then for each further centre ``2 + floor(ln k)`` uniform draws u, each giving the candidate
    at which the running sum of squared distances to the nearest chosen centre first reaches u times its total;
    the candidate that leaves the lowest total is kept (the first of equal ones). The chosen points' indices."""
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(points), (1,), generator=generator))]
    closest = [sq(p, points[chosen[0]]) for p in points]
    for _ in range(1, k):
        total = sum(closest)
        best = None
        for u in torch.rand(2 + int(math.log(k)), generator=generator, dtype=torch.float64).tolist():
            candidate, running = len(points) - 1, 0
            for i, d in enumerate(closest):
                running += d
                if running >= u * total:
                    candidate = i
                    break
            after = [min(c, sq(p, points[candidate])) for c, p in zip(closest, points, strict=True)]
            if best is None or sum(after) < sum(best[1]):
                best = (candidate, after)
        chosen.append(best[0])
        closest = best[1]
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_seeding_keeps_the_best_candidate_of_each_greedy_kmeans_pp_step(seed):
    # integer points: every squared distance and sum is exact, so ties and candidates match the oracle's
    points = [[0, 0], [1, 0], [0, 2], [9, 9], [10, 9], [9, 11], [20, 0], [21, 1], [20, 3], [5, 5], [15, 15]]
    points += [[0, 20], [3, 1], [11, 12], [18, 2], [2, 19]]
    centers = [points[i] for i in greedy_kmeans_pp(points, 4, seed)]
    nearest = [min(range(4), key=lambda c: sq(point, centers[c])) for point in points]  # the first on ties
    # no Lloyd iteration: every point is labelled by its nearest initial centre
    assert kmeans(torch.tensor(points, dtype=torch.float32), 4, seed=seed, max_iter=0).tolist() == nearest


def test_nmi_seed_is_used():
    # overlapping classes: k-means ends in a different local optimum from a different seeding
    x, y = clustered(100, 5, 8, noise=1.5, seed=9)
    nmi = {seed: retrieval_metrics(x, y, nmi_seed=seed)["nmi"] for seed in range(3)}
    assert retrieval_metrics(x, y, nmi_seed=1)["nmi"] == nmi[1]
    assert len(set(nmi.values())) > 1, "every seed gave the same NMI"
    assert all(0.0 < v < 1.0 for v in nmi.values())
    assert not torch.equal(kmeans(x, 5, seed=0), kmeans(x, 5, seed=1))


def test_cluster_sums_segmented_path_matches_index_add():
    # the path used off-CPU (sorted prefix sums), checked here against index_add_
    g = torch.Generator().manual_seed(10)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 9, (500,), generator=g)
    labels[labels == 4] = 5  # an empty cluster
    counts = torch.bincount(labels, minlength=9)
    expected = torch.zeros(9, 6, dtype=torch.float64).index_add_(0, labels, x)
    segmented = retrieval_module._cluster_sums(x, labels, counts, segmented=True)
    torch.testing.assert_close(segmented, expected, rtol=0, atol=1e-12)
    assert torch.equal(retrieval_module._cluster_sums(x, labels, counts), expected)
