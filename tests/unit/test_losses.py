"""Tests of the pair losses (common.losses.multi_similarity, .contrastive, .triplet) and the miners:
plain-loop oracles, pytorch-metric-learning, empty cases, build errors.

The oracles below recompute each loss with Python loops over anchors and pairs on tiny inputs, straight
from the formulas in the docstrings (and, for the multi-similarity loss, from the control flow of the
official code: mine against the unmined sets, skip an anchor with no kept positive or negative, divide by
the batch size). Gradients of the oracle come from autograd through the loops.
"""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from common.losses import LOSSES, build
from common.losses.base import EmbeddingLoss
from common.losses.miners import MultiSimilarityMiner
from common.registry import BuildError
from tests.unit.loss_testing import DTYPES, assert_close, tiny_batch, value_and_grads

# (rtol, atol relative to the largest reference entry)

# Every configuration of the registered losses that the tests sweep.
CONFIGS = [
    ("multi_similarity", {}),
    ("multi_similarity", {"mining": False}),
    ("multi_similarity", {"beta": 40.0, "base": 0.5}),  # the official code's setting
    ("multi_similarity", {"beta": 40.0, "base": 0.5, "mining": False, "alpha": 3.0}),
    ("contrastive", {}),
    ("contrastive", {"pos_margin": 0.8, "neg_margin": 0.2}),
    ("triplet", {}),
    ("triplet", {"margin": 0.3}),
    ("triplet", {"triplets": "semi_hard"}),
    ("triplet", {"triplets": "semi_hard", "margin": 0.4}),
    ("triplet", {"triplets": "batch_hard"}),
    ("triplet", {"triplets": "batch_hard", "margin": 0.3}),
]
CONFIG_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CONFIGS]


# ----------------------------------------------------------------------------------------------------------
# Plain-loop oracles
# ----------------------------------------------------------------------------------------------------------


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a, b) / (a.norm() * b.norm())


def _anchor_pairs(x, labels, ref, ref_labels):
    """For each anchor, the lists of (positive similarities, negative similarities), built with loops."""
    refs, rlabels = (x, labels) if ref is None else (ref, ref_labels)
    out = []
    for i in range(len(x)):
        pos, neg = [], []
        for j in range(len(refs)):
            if ref is None and i == j:
                continue
            s = _cos(x[i], refs[j])
            (pos if labels[i] == rlabels[j] else neg).append(s)
        out.append((pos, neg))
    return out


def _mean_nonzero(losses, anchor):
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else anchor.sum() * 0


def oracle_multi_similarity(
    x, labels, ref=None, ref_labels=None, *, alpha=2.0, beta=50.0, base=1.0, epsilon=0.1, mining=True
):
    total = x.sum() * 0
    for pos, neg in _anchor_pairs(x, labels, ref, ref_labels):
        if mining and pos and neg:
            min_pos, max_neg = min(pos), max(neg)
            kept_neg = [s for s in neg if s + epsilon > min_pos]
            kept_pos = [s for s in pos if s - epsilon < max_neg]
        else:
            kept_pos, kept_neg = pos, neg
        if not kept_pos or not kept_neg:
            continue
        pos_sum = sum(torch.exp(-alpha * (s - base)) for s in kept_pos)
        neg_sum = sum(torch.exp(beta * (s - base)) for s in kept_neg)
        total = total + torch.log(1 + pos_sum) / alpha + torch.log(1 + neg_sum) / beta
    return total / len(x)


def oracle_contrastive(x, labels, ref=None, ref_labels=None, *, pos_margin=1.0, neg_margin=0.5):
    pos_losses, neg_losses = [], []
    for pos, neg in _anchor_pairs(x, labels, ref, ref_labels):
        pos_losses += [torch.relu(pos_margin - s) for s in pos]
        neg_losses += [torch.relu(s - neg_margin) for s in neg]
    return _mean_nonzero(pos_losses, x) + _mean_nonzero(neg_losses, x)


def oracle_triplet(x, labels, ref=None, ref_labels=None, *, margin=0.1, triplets="all"):
    losses = []
    for pos, neg in _anchor_pairs(x, labels, ref, ref_labels):
        if not pos or not neg:
            continue
        if triplets == "batch_hard":
            losses.append(torch.relu(max(neg) - min(pos) + margin))
            continue
        for s_ap in pos:
            for s_an in neg:
                if triplets == "semi_hard" and not s_an < s_ap:
                    continue
                losses.append(torch.relu(s_an - s_ap + margin))
    return _mean_nonzero(losses, x)


ORACLES = {
    "multi_similarity": oracle_multi_similarity,
    "contrastive": oracle_contrastive,
    "triplet": oracle_triplet,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_loop_oracle(name, kwargs, dtype, seed):
    x, labels, _, _ = tiny_batch(dtype, seed)
    loss = build(name, **kwargs)
    oracle = ORACLES[name]
    lab = labels.tolist()

    # ours through .backward() on a leaf, the oracle through autograd.grad
    leaf = x.clone().requires_grad_(True)
    value = loss(leaf, labels)
    value.backward()
    expected, (expected_grad,) = value_and_grads(lambda t: oracle(t, lab, **kwargs), [x])

    assert value.dtype == dtype and value.ndim == 0
    assert float(expected.detach()) > 0, "the tiny batch should give a non-trivial loss"
    assert_close(value, expected, dtype)
    assert_close(leaf.grad, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_ref_emb_against_loop_oracle(name, kwargs, dtype):
    x, labels, ref, ref_labels = tiny_batch(dtype, seed=5, n=8, ref_n=11)
    loss = build(name, **kwargs)
    oracle = ORACLES[name]
    lab, rlab = labels.tolist(), ref_labels.tolist()

    value, grads = value_and_grads(lambda q, r: loss(q, labels, r, ref_labels), [x, ref])
    expected, expected_grads = value_and_grads(lambda q, r: oracle(q, lab, r, rlab, **kwargs), [x, ref])

    assert float(expected.detach()) > 0
    assert_close(value, expected, dtype)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, dtype)


def test_ref_emb_counts_self_pairs():
    """With ref_emb given, the pair (i, i) of a query with its own copy in the reference set counts."""
    x, labels, _, _ = tiny_batch(torch.float64, seed=3)
    loss = build("multi_similarity", mining=False)  # smooth in S: no hinge boundary at S = 1
    with_ref = loss(x, labels, x.clone(), labels.clone())
    lab = labels.tolist()
    assert_close(with_ref, oracle_multi_similarity(x, lab, x.clone(), lab, mining=False), torch.float64)
    assert not torch.isclose(with_ref, loss(x, labels))


# ----------------------------------------------------------------------------------------------------------
# pytorch-metric-learning
# ----------------------------------------------------------------------------------------------------------


def random_batch(dtype, seed, n=96, dim=24, classes=6, balanced=False):
    """Clustered embeddings so that mining and margins select a strict, non-empty subset."""
    g = torch.Generator().manual_seed(seed)
    if balanced:  # every anchor has positives and negatives (a P x K batch, as in the MS paper)
        labels = torch.arange(classes).repeat_interleave(n // classes)
        labels = labels[torch.randperm(len(labels), generator=g)]
    else:
        labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    x = 0.6 * centers[labels] + torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x.to(dtype), labels


def _cos_distance():
    return pml_distances.CosineSimilarity()


def _compare(ours, reference, x, dtype):
    value, (grad,) = value_and_grads(ours, [x])
    expected, (expected_grad,) = value_and_grads(reference, [x])
    assert float(expected.detach()) > 0
    assert_close(value, expected, dtype)
    assert_close(grad, expected_grad, dtype)


SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("alpha", "beta", "base"), [(2.0, 50.0, 1.0), (2.0, 40.0, 0.5), (3.0, 30.0, 0.3)])
def test_multi_similarity_without_mining_matches_pml(dtype, seed, alpha, beta, base):
    x, labels = random_batch(dtype, seed, balanced=True)
    ours = build("multi_similarity", alpha=alpha, beta=beta, base=base, mining=False)
    ref = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
    _compare(lambda t: ours(t, labels), lambda t: ref(t, labels), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("beta", "base", "epsilon"), [(50.0, 1.0, 0.1), (40.0, 0.5, 0.1), (40.0, 0.5, 0.3)])
def test_multi_similarity_with_mining_matches_pml_loss_with_pml_miner(dtype, seed, beta, base, epsilon):
    x, labels = random_batch(dtype, seed, balanced=True)
    ours = build("multi_similarity", beta=beta, base=base, epsilon=epsilon)
    ref_loss = pml_losses.MultiSimilarityLoss(alpha=2.0, beta=beta, base=base)
    ref_miner = pml_miners.MultiSimilarityMiner(epsilon=epsilon)

    def reference(t):
        return ref_loss(t, labels, ref_miner(t, labels))

    # the mining must be selective for this comparison to mean anything
    a1, _, a2, _ = ref_miner(x, labels)
    n_pos = int((labels[:, None] == labels[None, :]).sum()) - len(labels)
    assert 0 < len(a1) <= n_pos and 0 < len(a2) < len(labels) ** 2 - n_pos - len(labels)
    _compare(lambda t: ours(t, labels), reference, x, dtype)


def _pairs(idx_a, idx_b):
    return set(zip(idx_a.tolist(), idx_b.tolist(), strict=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
def test_multi_similarity_miner_matches_pml_miner(dtype, seed, epsilon, with_ref):
    x, labels = random_batch(dtype, seed)
    ref_emb = ref_labels = None
    if with_ref:
        ref_emb, ref_labels = random_batch(dtype, seed + 100, n=50)
    a1, p, a2, n = MultiSimilarityMiner(epsilon)(x, labels, ref_emb, ref_labels)
    b1, q, b2, m = pml_miners.MultiSimilarityMiner(epsilon=epsilon)(x, labels, ref_emb, ref_labels)
    assert a1.dtype == p.dtype == a2.dtype == n.dtype == torch.long
    assert _pairs(a1, p) == _pairs(b1, q) and len(a1) == len(b1) > 0
    assert _pairs(a2, n) == _pairs(b2, m) and len(a2) == len(b2) > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_multi_similarity_miner_agrees_with_loss_mining(dtype, seed):
    """The pairs our miner returns are exactly the pairs our loss weights when mining=True."""
    x, labels = random_batch(dtype, seed, balanced=True)
    miner = MultiSimilarityMiner(epsilon=0.1)
    ours = build("multi_similarity", epsilon=0.1, beta=40.0, base=0.5)
    pml_loss = pml_losses.MultiSimilarityLoss(alpha=2.0, beta=40.0, base=0.5)
    _compare(lambda t: ours(t, labels), lambda t: pml_loss(t, labels, miner(t, labels)), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(1.0, 0.5), (0.8, 0.2), (0.9, 0.0)])
def test_contrastive_matches_pml(dtype, seed, pos_margin, neg_margin):
    x, labels = random_batch(dtype, seed)
    ours = build("contrastive", pos_margin=pos_margin, neg_margin=neg_margin)
    ref = pml_losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, distance=_cos_distance())
    _compare(lambda t: ours(t, labels), lambda t: ref(t, labels), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.1, 0.3])
@pytest.mark.parametrize("triplets", ["all", "all+miner", "semi_hard", "batch_hard"])
def test_triplet_matches_pml(dtype, seed, margin, triplets):
    x, labels = random_batch(dtype, seed)
    ref_loss = pml_losses.TripletMarginLoss(margin=margin, distance=_cos_distance())
    if triplets == "all":
        miner = None
    elif triplets == "all+miner":
        miner = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="all", distance=_cos_distance())
    elif triplets == "semi_hard":
        miner = pml_miners.TripletMarginMiner(
            margin=margin, type_of_triplets="semihard", distance=_cos_distance()
        )
    else:
        miner = pml_miners.BatchHardMiner(distance=_cos_distance())
    ours = build("triplet", margin=margin, triplets=triplets.removesuffix("+miner"))

    def reference(t):
        return ref_loss(t, labels, None if miner is None else miner(t, labels))

    _compare(lambda t: ours(t, labels), reference, x, dtype)


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        (
            "multi_similarity",
            {"mining": False, "base": 0.5},
            lambda: pml_losses.MultiSimilarityLoss(base=0.5),
        ),
        ("contrastive", {}, lambda: pml_losses.ContrastiveLoss(1.0, 0.5, distance=_cos_distance())),
        ("triplet", {}, lambda: pml_losses.TripletMarginLoss(0.1, distance=_cos_distance())),
    ],
    ids=["multi_similarity", "contrastive", "triplet"],
)
def test_ref_emb_matches_pml(name, kwargs, reference):
    x, labels = random_batch(torch.float64, 7, n=40, balanced=True)
    ref_emb, ref_labels = random_batch(torch.float64, 8, n=60, balanced=True)
    ours, ref = build(name, **kwargs), reference()
    value, grads = value_and_grads(lambda q, r: ours(q, labels, r, ref_labels), [x, ref_emb])
    expected, expected_grads = value_and_grads(lambda q, r: ref(q, labels, None, r, ref_labels), [x, ref_emb])
    assert_close(value, expected, torch.float64)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, torch.float64)


def test_multi_similarity_anchor_without_positive_differs_from_pml_as_documented():
    """PML keeps the negative term of an anchor without positives; the official code (and we) skip it."""
    x, labels = random_batch(torch.float64, 0, n=30, balanced=True)
    labels = labels.clone()
    labels[0] = 99  # a singleton: no positive
    ours = build("multi_similarity", mining=False, base=0.5)(x, labels)
    pml = pml_losses.MultiSimilarityLoss(base=0.5)(x, labels)
    s = torch.nn.functional.normalize(x, dim=1)
    neg_term_of_singleton = torch.log1p(torch.exp(50 * (s[0] @ s[1:].T - 0.5)).sum()) / 50
    assert_close(pml - ours, neg_term_of_singleton / len(x), torch.float64)


# ----------------------------------------------------------------------------------------------------------
# No valid pairs: zero, still in the graph, zero gradients
# ----------------------------------------------------------------------------------------------------------


def _assert_live_zero(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    assert value.ndim == 0 and value.requires_grad and value.grad_fn is not None
    assert float(value.detach()) == 0.0
    value.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf))


NEEDS_TRIPLES = [(n, kw) for n, kw in CONFIGS if n != "contrastive"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["one_class", "all_different", "single", "ref_disjoint"])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    NEEDS_TRIPLES,
    ids=[i for i, (n, _) in zip(CONFIG_IDS, CONFIGS, strict=True) if n != "contrastive"],
)
def test_no_valid_pairs_gives_live_zero(name, kwargs, case, dtype):
    loss = build(name, **kwargs)
    x = torch.randn(12, 8, dtype=dtype)
    if case == "one_class":
        _assert_live_zero(lambda t: loss(t, torch.zeros(12, dtype=torch.long)), x)
    elif case == "all_different":
        _assert_live_zero(lambda t: loss(t, torch.arange(12)), x)
    elif case == "single":
        _assert_live_zero(lambda t: loss(t, torch.tensor([3])), x[:1])
    else:  # no query shares a label with the reference set: no positive
        ref = torch.randn(7, 8, dtype=dtype)
        _assert_live_zero(lambda q, r: loss(q, torch.zeros(12, dtype=torch.long), r, torch.ones(7)), x, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_contrastive_zero_cases(dtype):
    """Each contrastive term is one pair: zero when there is no pair, or every pair is inside its margin."""
    loss = build("contrastive")  # pos_margin=1, neg_margin=0.5
    _assert_live_zero(lambda t: loss(t, torch.tensor([0])), torch.randn(1, 8, dtype=dtype))
    # one class, identical directions: every positive has S = 1 exactly
    same = torch.zeros(6, 8, dtype=dtype)
    same[:, 0] = torch.arange(1, 7, dtype=dtype)
    _assert_live_zero(lambda t: loss(t, torch.zeros(6, dtype=torch.long)), same)
    # all classes different, orthogonal: every negative has S = 0 < neg_margin
    _assert_live_zero(lambda t: loss(t, torch.arange(8)), 3 * torch.eye(8, dtype=dtype))
    # one class in general position: only the positive term, not zero (documented)
    x = torch.randn(6, 8, dtype=dtype)
    one = torch.zeros(6, dtype=torch.long)
    assert_close(loss(x, one), oracle_contrastive(x, one.tolist()), dtype)
    assert float(loss(x, one)) > 0


def test_zero_grads_when_everything_is_satisfied():
    """Well separated classes: the margins are met, the losses are zero, and so are the gradients."""
    x = torch.zeros(9, 9, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(3)
    x[torch.arange(9), labels * 3] = 1.0  # each class on one axis: S = 1 within, 0 across
    for name, kwargs in [
        ("triplet", {}),
        ("triplet", {"triplets": "batch_hard"}),
        ("triplet", {"triplets": "semi_hard"}),
        ("contrastive", {}),
    ]:
        _assert_live_zero(lambda t, n=name, k=kwargs: build(n, **k)(t, labels), x)


# ----------------------------------------------------------------------------------------------------------
# Registry, defaults, errors
# ----------------------------------------------------------------------------------------------------------


def test_registry_names_defaults_and_docstrings():
    assert {"contrastive", "multi_similarity", "triplet"} <= set(LOSSES.names())
    assert LOSSES.accepted_params("multi_similarity") == {
        "alpha": 2.0,
        "beta": 50.0,
        "base": 1.0,
        "epsilon": 0.1,
        "mining": True,
    }
    assert LOSSES.accepted_params("contrastive") == {"pos_margin": 1.0, "neg_margin": 0.5}
    assert LOSSES.accepted_params("triplet") == {"margin": 0.1, "triplets": "all"}
    for name in ("contrastive", "multi_similarity", "triplet"):
        assert isinstance(build(name), EmbeddingLoss)


def test_build_unknown_name_lists_accepted():
    accepted = "accepted: " + ", ".join(LOSSES.names())
    with pytest.raises(BuildError, match=f"unknown loss 'nope'; {accepted}"):
        build("nope")


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [
        ("multi_similarity", {"lambda_": 1.0}, "lambda_"),
        ("contrastive", {"margin": 0.5}, "margin"),
        ("triplet", {"mrgin": 0.1}, "mrgin"),
    ],
)
def test_build_unknown_kwarg(name, kwargs, bad):
    with pytest.raises(BuildError, match=f"does not accept '{bad}'; accepted: "):
        build(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("multi_similarity", {"alpha": -1.0}, "alpha"),
        ("multi_similarity", {"alpha": 0}, "alpha"),
        ("multi_similarity", {"beta": 0.0}, "beta"),
        ("multi_similarity", {"base": 1.5}, "base"),
        ("multi_similarity", {"epsilon": -0.1}, "epsilon"),
        ("multi_similarity", {"epsilon": math.inf}, "epsilon"),
        ("multi_similarity", {"mining": "yes"}, "mining"),
        ("multi_similarity", {"alpha": "2"}, "alpha"),
        ("contrastive", {"pos_margin": 1.5}, "pos_margin"),
        ("contrastive", {"neg_margin": -2.0}, "neg_margin"),
        ("contrastive", {"pos_margin": 0.0, "neg_margin": 1.0}, "neg_margin"),  # distance-style margins
        ("triplet", {"margin": -0.1}, "margin"),
        ("triplet", {"margin": math.nan}, "margin"),
        ("triplet", {"margin": True}, "margin"),
        ("triplet", {"triplets": "hardest"}, "triplets"),
    ],
)
def test_out_of_range_hyperparameters(name, kwargs, arg):
    with pytest.raises(BuildError, match=rf"^loss '{name}': {arg} "):
        build(name, **kwargs)
    with pytest.raises(ValueError, match=rf"^{arg} "):
        LOSSES.get(name)(**kwargs)


def test_miner_epsilon_is_checked():
    with pytest.raises(ValueError, match="^epsilon "):
        MultiSimilarityMiner(epsilon=-0.5)


@pytest.mark.parametrize(
    "call",
    [
        lambda f, x: f(x, torch.zeros(5, dtype=torch.long)),  # labels of the wrong length
        lambda f, x: f(x[0], torch.zeros(1, dtype=torch.long)),  # 1-D embeddings
        lambda f, x: f(x, torch.zeros(6, dtype=torch.long), x),  # ref_emb without ref_labels
        lambda f, x: f(x, torch.zeros(6, dtype=torch.long), x[:, :3], torch.zeros(6)),  # ref of another dim
    ],
    ids=["labels-length", "1d", "ref-without-labels", "ref-dim"],
)
@pytest.mark.parametrize("module", [build("triplet"), MultiSimilarityMiner()], ids=["loss", "miner"])
def test_bad_inputs_raise_value_error(call, module):
    with pytest.raises(ValueError):
        call(module, torch.randn(6, 4))
