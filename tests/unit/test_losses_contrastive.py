"""Tests of the contrastive and self-supervised losses (circle, ntxent, supcon, siglip, align_uniform,
prototypical): plain-loop oracles, pytorch-metric-learning, empty cases, build errors.

The oracles recompute each loss with Python loops over queries and pairs on tiny inputs, straight from the
formulas in the docstrings (the papers' equations); their gradients come from autograd through the loops.
Sums of exponentials go through ``torch.logsumexp`` of a stacked list so that the float32 oracles do not
overflow at the circle loss's scale (gamma up to 256).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from common.losses import LOSSES, build
from common.losses.align_uniform import alignment, uniformity
from common.losses.base import EmbeddingLoss
from common.losses.prototypical import prototype_logits
from common.registry import BuildError
from tests.unit.loss_testing import DTYPES, assert_close, tiny_batch, value_and_grads

# (rtol, atol relative to the largest reference entry)

CONFIGS = [
    ("circle", {}),
    ("circle", {"m": 0.25, "gamma": 256.0}),  # the paper's face-recognition setting
    ("ntxent", {}),
    ("ntxent", {"temperature": 0.1}),
    ("supcon", {}),
    ("supcon", {"variant": "inside"}),
    ("supcon", {"temperature": 0.5, "base_temperature": 0.07}),
    ("supcon", {"variant": "inside", "temperature": 0.2, "base_temperature": 0.07}),
    ("siglip", {}),
    ("siglip", {"t_init": 3.0, "b_init": 0.5}),
    ("align_uniform", {}),
    ("align_uniform", {"alpha": 1.0, "t": 3.0, "lam": 0.5}),
]
CONFIG_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CONFIGS]
NAMES = ["circle", "ntxent", "supcon", "siglip", "align_uniform", "prototypical"]


# ----------------------------------------------------------------------------------------------------------
# Plain-loop oracles
# ----------------------------------------------------------------------------------------------------------


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(_unit(a), _unit(b))


def _lse(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.logsumexp(torch.stack(values), dim=0)


def _rows(x, labels, ref, ref_labels):
    """For each query, the lists of (positive references, negative references) as row indices."""
    n_ref = len(x) if ref is None else len(ref)
    rlabels = labels if ref is None else ref_labels
    out = []
    for i in range(len(x)):
        pos, neg = [], []
        for j in range(n_ref):
            if ref is None and i == j:
                continue
            (pos if labels[i] == rlabels[j] else neg).append(j)
        out.append((pos, neg))
    return out


def _sims(x, ref, i, js):
    refs = x if ref is None else ref
    return [_cos(x[i], refs[j]) for j in js]


def oracle_circle(x, labels, ref=None, ref_labels=None, *, m=0.4, gamma=80.0):
    losses = []
    for i, (pos, neg) in enumerate(_rows(x, labels, ref, ref_labels)):
        if not pos or not neg:
            continue
        pos_terms = [-gamma * torch.relu(1 + m - s.detach()) * (s - (1 - m)) for s in _sims(x, ref, i, pos)]
        neg_terms = [gamma * torch.relu(s.detach() + m) * (s - m) for s in _sims(x, ref, i, neg)]
        losses.append(F.softplus(_lse(pos_terms) + _lse(neg_terms)))  # log(1 + sum_n * sum_p)
    return sum(losses) / len(losses) if losses else x.sum() * 0


def oracle_ntxent(x, labels, ref=None, ref_labels=None, *, temperature=0.5):
    losses = []
    for i, (pos, neg) in enumerate(_rows(x, labels, ref, ref_labels)):
        negs = [s / temperature for s in _sims(x, ref, i, neg)]
        for s in _sims(x, ref, i, pos):
            losses.append(_lse([s / temperature] + negs) - s / temperature)
    return sum(losses) / len(losses) if losses else x.sum() * 0


def oracle_supcon(
    x, labels, ref=None, ref_labels=None, *, temperature=0.1, variant="outside", base_temperature=None
):
    factor = 1.0 if base_temperature is None else temperature / base_temperature
    losses = []
    for i, (pos, neg) in enumerate(_rows(x, labels, ref, ref_labels)):
        if not pos:
            continue
        pos_logits = [s / temperature for s in _sims(x, ref, i, pos)]
        log_denominator = _lse([s / temperature for s in _sims(x, ref, i, pos + neg)])
        if variant == "outside":
            loss = -sum(a - log_denominator for a in pos_logits) / len(pos)
        else:
            loss = -(_lse(pos_logits) - math.log(len(pos)) - log_denominator)
        losses.append(factor * loss)
    return sum(losses) / len(losses) if losses else x.sum() * 0


def oracle_siglip(x, labels, ref=None, ref_labels=None, *, t_init=10.0, b_init=-10.0, t=None, b=None):
    t = t_init if t is None else t
    b = b_init if b is None else b
    total = x.sum() * 0
    for i, (pos, neg) in enumerate(_rows(x, labels, ref, ref_labels)):
        for z, js in ((1.0, pos), (-1.0, neg)):
            for s in _sims(x, ref, i, js):
                total = total - F.logsigmoid(z * (t * s + b))
    return total / len(x)


def oracle_align_uniform(x, labels, ref=None, ref_labels=None, *, alpha=2.0, t=2.0, lam=1.0):
    refs = x if ref is None else ref
    align_terms, unif_terms = [], []
    for i, (pos, neg) in enumerate(_rows(x, labels, ref, ref_labels)):
        for j in pos:
            align_terms.append((_unit(x[i]) - _unit(refs[j])).norm().pow(alpha))
        for j in pos + neg:
            unif_terms.append(-t * (_unit(x[i]) - _unit(refs[j])).norm().pow(2))
    align = sum(align_terms) / len(align_terms) if align_terms else x.sum() * 0
    uniform = _lse(unif_terms) - math.log(len(unif_terms)) if unif_terms else x.sum() * 0
    return align + lam * uniform


def oracle_prototypical(query, labels, support, support_labels, *, distance="squared_euclidean", scale=1.0):
    classes = sorted(set(support_labels))
    prototypes = []
    for c in classes:
        members = [support[j] for j in range(len(support)) if support_labels[j] == c]
        prototypes.append(sum(members) / len(members))
    losses = []
    for i in range(len(query)):
        if labels[i] not in classes:
            continue
        if distance == "cosine":
            logits = [scale * _cos(query[i], p) for p in prototypes]
        else:
            logits = [-scale * ((query[i] - p) ** 2).sum() for p in prototypes]
        losses.append(_lse(logits) - logits[classes.index(labels[i])])
    return sum(losses) / len(losses) if losses else query.sum() * 0


ORACLES = {
    "circle": oracle_circle,
    "ntxent": oracle_ntxent,
    "supcon": oracle_supcon,
    "siglip": oracle_siglip,
    "align_uniform": oracle_align_uniform,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_against_loop_oracle(name, kwargs, dtype, seed):
    x, labels, _, _ = tiny_batch(dtype, seed)
    loss = build(name, **kwargs)
    lab = labels.tolist()

    leaf = x.clone().requires_grad_(True)
    value = loss(leaf, labels)
    value.backward()
    expected, (expected_grad,) = value_and_grads(lambda t: ORACLES[name](t, lab, **kwargs), [x])

    assert value.dtype == dtype and value.ndim == 0
    assert float(expected.detach()) != 0, "the tiny batch should give a non-trivial loss"
    assert_close(value, expected, dtype)
    assert_close(leaf.grad, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_ref_emb_against_loop_oracle(name, kwargs, dtype):
    x, labels, ref, ref_labels = tiny_batch(dtype, seed=5, n=8, ref_n=11)
    loss = build(name, **kwargs)
    lab, rlab = labels.tolist(), ref_labels.tolist()

    value, grads = value_and_grads(lambda q, r: loss(q, labels, r, ref_labels), [x, ref])
    expected, expected_grads = value_and_grads(
        lambda q, r: ORACLES[name](q, lab, r, rlab, **kwargs), [x, ref]
    )
    assert float(expected.detach()) != 0
    assert_close(value, expected, dtype)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"distance": "cosine", "scale": 10.0}, {"scale": 0.5}],
    ids=["squared_euclidean", "cosine", "euclidean-scale"],
)
@pytest.mark.parametrize("unknown_query_class", [False, True], ids=["episode", "unknown-query-class"])
def test_prototypical_against_loop_oracle(kwargs, dtype, unknown_query_class):
    g = torch.Generator().manual_seed(3)
    support_labels = torch.tensor([7, 2, 7, 5, 2, 5, 7, 5])  # 3-way, unsorted, uneven shots
    query_labels = torch.tensor([2, 5, 7, 7, 2, 5])
    if unknown_query_class:
        query_labels[1] = 4  # no support sample: left out of the mean
    support = torch.randn(8, 5, generator=g, dtype=torch.float64).to(dtype)
    query = torch.randn(6, 5, generator=g, dtype=torch.float64).to(dtype)
    loss = build("prototypical", **kwargs)
    slab, qlab = support_labels.tolist(), query_labels.tolist()

    value, grads = value_and_grads(lambda q, s: loss(q, query_labels, s, support_labels), [query, support])
    expected, expected_grads = value_and_grads(
        lambda q, s: oracle_prototypical(q, qlab, s, slab, **kwargs), [query, support]
    )
    assert value.dtype == dtype and float(expected.detach()) > 0
    assert_close(value, expected, dtype)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
def test_siglip_learnable_parameters_get_the_oracle_gradients(dtype, with_ref):
    x, labels, ref, ref_labels = tiny_batch(dtype, seed=4, n=10, ref_n=7 if with_ref else None)
    loss = build("siglip", t_init=5.0, b_init=-2.0)
    params = dict(loss.named_parameters())
    assert set(params) == {"t_prime", "bias"} and all(p.requires_grad for p in params.values())
    assert_close(params["t_prime"].exp(), torch.tensor(5.0), torch.float32)
    assert_close(params["bias"], torch.tensor(-2.0), torch.float32)

    loss(x, labels, ref, ref_labels).backward()
    t_prime = params["t_prime"].detach().clone().requires_grad_(True)
    bias = params["bias"].detach().clone().requires_grad_(True)
    lab = labels.tolist()
    rlab = None if ref_labels is None else ref_labels.tolist()
    oracle = oracle_siglip(x, lab, ref, rlab, t=t_prime.exp(), b=bias)
    oracle.backward()
    for got, want in ((params["t_prime"].grad, t_prime.grad), (params["bias"].grad, bias.grad)):
        assert got is not None and float(got.abs()) > 0
        assert_close(got, want, dtype)


def test_siglip_learns_its_parameters():
    """A few Adam steps on the loss alone move t and b (they are real, optimised parameters)."""
    x, labels, _, _ = tiny_batch(torch.float32, seed=6)
    loss = build("siglip")
    before = [p.detach().clone() for p in loss.parameters()]
    opt = torch.optim.Adam(loss.parameters(), lr=0.1)
    first = float(loss(x, labels).detach())
    for _ in range(5):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    assert float(loss(x, labels).detach()) < first
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, loss.parameters(), strict=True))


# ----------------------------------------------------------------------------------------------------------
# pytorch-metric-learning
# ----------------------------------------------------------------------------------------------------------


def random_batch(dtype, seed, n=96, dim=24, classes=6, views=None):
    """Clustered embeddings; ``views=k``: ``n // k`` labels with exactly ``k`` samples each."""
    g = torch.Generator().manual_seed(seed)
    if views is None:
        labels = torch.randint(0, classes, (n,), generator=g)
        n_labels = classes
    else:
        n_labels = n // views
        labels = torch.arange(n_labels).repeat(views)
        labels = labels[torch.randperm(len(labels), generator=g)]
    centers = torch.randn(n_labels, dim, generator=g, dtype=torch.float64)
    x = 0.6 * centers[labels] + torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return x.to(dtype), labels


def _compare(ours, reference, x, dtype):
    value, (grad,) = value_and_grads(ours, [x])
    expected, (expected_grad,) = value_and_grads(reference, [x])
    assert float(expected.detach()) > 0
    assert_close(value, expected, dtype)
    assert_close(grad, expected_grad, dtype)


SEEDS = [0, 1]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("m", "gamma"), [(0.4, 80.0), (0.25, 256.0), (0.25, 128.0)])
def test_circle_matches_pml(dtype, seed, m, gamma):
    x, labels = random_batch(dtype, seed)
    ours = build("circle", m=m, gamma=gamma)
    ref = pml_losses.CircleLoss(m=m, gamma=gamma)
    _compare(lambda t: ours(t, labels), lambda t: ref(t, labels), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.5, 0.1])
@pytest.mark.parametrize("views", [2, 4, None], ids=["two-views", "four-views", "random-labels"])
def test_ntxent_matches_pml(dtype, seed, temperature, views):
    x, labels = random_batch(dtype, seed, views=views)
    ours = build("ntxent", temperature=temperature)
    ref = pml_losses.NTXentLoss(temperature=temperature)
    _compare(lambda t: ours(t, labels), lambda t: ref(t, labels), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("views", [2, None], ids=["two-views", "random-labels"])
def test_supcon_outside_matches_pml(dtype, seed, temperature, views):
    x, labels = random_batch(dtype, seed, views=views)
    if views is None:
        labels = labels.clone()
        labels[0] = 99  # a query without positive: left out by both
    ours = build("supcon", temperature=temperature)
    ref = pml_losses.SupConLoss(temperature=temperature)
    _compare(lambda t: ours(t, labels), lambda t: ref(t, labels), x, dtype)


def test_supcon_base_temperature_is_the_official_factor():
    x, labels = random_batch(torch.float64, 2, views=2)
    plain = build("supcon", temperature=0.1)(x, labels)
    official = build("supcon", temperature=0.1, base_temperature=0.07)(x, labels)
    assert_close(official, plain * (0.1 / 0.07), torch.float64)
    assert_close(build("supcon", temperature=0.1, base_temperature=0.1)(x, labels), plain, torch.float64)


def test_supcon_one_label_differs_from_pml_as_documented():
    """A batch without negatives: PML returns 0, Eq. (2) is defined (>= log|P_i|) and computed here."""
    x, _ = random_batch(torch.float64, 3, n=12)
    labels = torch.zeros(12, dtype=torch.long)
    ours = build("supcon")(x, labels)
    assert float(pml_losses.SupConLoss(temperature=0.1)(x, labels)) == 0.0
    assert float(ours) >= math.log(11) - 1e-12
    assert_close(ours, oracle_supcon(x, labels.tolist()), torch.float64)


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("circle", {}, lambda: pml_losses.CircleLoss()),
        ("ntxent", {"temperature": 0.2}, lambda: pml_losses.NTXentLoss(temperature=0.2)),
        ("supcon", {}, lambda: pml_losses.SupConLoss(temperature=0.1)),
    ],
    ids=["circle", "ntxent", "supcon"],
)
def test_ref_emb_matches_pml(name, kwargs, reference):
    x, labels = random_batch(torch.float64, 7, n=40)
    ref_emb, ref_labels = random_batch(torch.float64, 8, n=60)
    ours, ref = build(name, **kwargs), reference()
    value, grads = value_and_grads(lambda q, r: ours(q, labels, r, ref_labels), [x, ref_emb])
    expected, expected_grads = value_and_grads(lambda q, r: ref(q, labels, None, r, ref_labels), [x, ref_emb])
    assert_close(value, expected, torch.float64)
    for got, want in zip(grads, expected_grads, strict=True):
        assert_close(got, want, torch.float64)


# ----------------------------------------------------------------------------------------------------------
# Alignment / uniformity functions, prototypes
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("alpha", "t"), [(2.0, 2.0), (1.0, 3.0)])
def test_alignment_and_uniformity_functions(dtype, alpha, t):
    g = torch.Generator().manual_seed(11)
    x, y = (torch.randn(9, 6, generator=g, dtype=torch.float64).to(dtype) for _ in range(2))
    u, v = F.normalize(x, dim=1), F.normalize(y, dim=1)
    expected_align = sum((u[i] - v[i]).norm() ** alpha for i in range(9)) / 9
    pair_terms = [-t * (u[i] - u[j]).norm() ** 2 for i in range(9) for j in range(i + 1, 9)]
    expected_unif = torch.log(sum(torch.exp(p) for p in pair_terms) / len(pair_terms))
    assert_close(alignment(x, y, alpha), expected_align, dtype)
    assert_close(uniformity(x, t), expected_unif, dtype)
    # the paper's one-liner on normalised features
    assert_close(uniformity(x, t), torch.pdist(u, p=2).pow(2).mul(-t).exp().mean().log(), dtype)
    assert_close(alignment(3 * x, y, alpha), alignment(x, y, alpha), dtype)  # normalised inside


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_align_uniform_loss_on_two_views_is_alignment_plus_pooled_uniformity(lam):
    g = torch.Generator().manual_seed(12)
    x, y = (torch.randn(16, 8, generator=g, dtype=torch.float64) for _ in range(2))
    labels = torch.arange(16).repeat(2)
    value = build("align_uniform", lam=lam)(torch.cat([x, y]), labels)
    assert_close(value, alignment(x, y) + lam * uniformity(torch.cat([x, y])), torch.float64)


def test_prototype_logits_classes_and_predictions():
    support_labels = torch.tensor([9, 3, 9, 3, 6])
    centers = {3: torch.tensor([5.0, 0.0]), 6: torch.tensor([0.0, 5.0]), 9: torch.tensor([-5.0, -5.0])}
    support = torch.stack([centers[int(c)] for c in support_labels]) + 0.1
    query = torch.stack([centers[6], centers[9], centers[3]]) - 0.2
    for distance in ("squared_euclidean", "cosine"):
        logits, classes = prototype_logits(query, support, support_labels, distance)
        assert classes.tolist() == [3, 6, 9] and logits.shape == (3, 3)
        assert classes[logits.argmax(dim=1)].tolist() == [6, 9, 3]
    logits, _ = prototype_logits(query, support, support_labels)
    expected = -((query[:, None, :] - torch.stack([centers[c] + 0.1 for c in (3, 6, 9)])) ** 2).sum(-1)
    assert_close(logits, expected, torch.float32)


def test_prototypical_does_not_normalise():
    """Scaling every embedding changes the squared-Euclidean loss; the cosine loss is invariant."""
    x, labels = random_batch(torch.float64, 9, n=30, classes=5)
    q, ql, s, sl = x[:15], labels[:15], x[15:], labels[15:]
    euclid, cosine = build("prototypical"), build("prototypical", distance="cosine", scale=10.0)
    assert not torch.isclose(euclid(q, ql, s, sl), euclid(3 * q, ql, 3 * s, sl))
    assert_close(cosine(3 * q, ql, 3 * s, sl), cosine(q, ql, s, sl), torch.float64)


def test_prototypical_requires_a_support_set():
    x, labels = random_batch(torch.float32, 0, n=8)
    with pytest.raises(ValueError, match="support set"):
        build("prototypical")(x, labels)
    with pytest.raises(ValueError, match="together"):
        build("prototypical")(x, labels, x, None)


# ----------------------------------------------------------------------------------------------------------
# No valid pairs: zero, still in the graph, zero gradients
# ----------------------------------------------------------------------------------------------------------


def _assert_live_zero(fn, *tensors, module=None):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    assert value.ndim == 0 and value.requires_grad and value.grad_fn is not None
    assert float(value.detach()) == 0.0
    value.backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf))
    for p in [] if module is None else module.parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))


# which cases leave each loss with nothing to compute (documented): e.g. SupCon on one label is Eq. (2) with
# only positives (non-zero); SigLIP and align_uniform still have the negatives' / uniformity terms.
ZERO_CASES = {
    "circle": ["one_class", "all_different", "single", "ref_disjoint"],
    "ntxent": ["one_class", "all_different", "single", "ref_disjoint"],
    "supcon": ["all_different", "single", "ref_disjoint"],
    "siglip": ["single"],
    "align_uniform": ["single"],
}
ZERO_PARAMS = [(n, kw, case) for n, kw in CONFIGS for case in ZERO_CASES[n]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("name", "kwargs", "case"),
    ZERO_PARAMS,
    ids=[f"{i}-{case}" for (n, kw), i in zip(CONFIGS, CONFIG_IDS, strict=True) for case in ZERO_CASES[n]],
)
def test_no_valid_pairs_gives_live_zero(name, kwargs, case, dtype):
    loss = build(name, **kwargs)
    x = torch.randn(12, 8, dtype=dtype)
    if case == "one_class":
        _assert_live_zero(lambda t: loss(t, torch.zeros(12, dtype=torch.long)), x, module=loss)
    elif case == "all_different":
        _assert_live_zero(lambda t: loss(t, torch.arange(12)), x, module=loss)
    elif case == "single":
        _assert_live_zero(lambda t: loss(t, torch.tensor([3])), x[:1], module=loss)
    else:  # no query shares a label with the reference set: no positive
        ref = torch.randn(7, 8, dtype=dtype)
        _assert_live_zero(
            lambda q, r: loss(q, torch.zeros(12, dtype=torch.long), r, torch.ones(7)), x, ref, module=loss
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("name", "labels"), [("siglip", "all_different"), ("align_uniform", "all_different")]
)
def test_negatives_only_still_has_a_loss(name, labels, dtype):
    """No positives: SigLIP keeps its negative pairs, align_uniform its uniformity term (documented)."""
    x, _, _, _ = tiny_batch(dtype, seed=1)
    lab = list(range(10))
    value = build(name)(x, torch.tensor(lab))
    assert float(value.detach()) != 0
    assert_close(value, ORACLES[name](x, lab), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["no_known_class", "empty_support", "one_way"])
def test_prototypical_live_zero(case, dtype):
    loss = build("prototypical")
    q, s = torch.randn(6, 4, dtype=dtype), torch.randn(5, 4, dtype=dtype)
    if case == "no_known_class":
        _assert_live_zero(lambda a, b: loss(a, torch.full((6,), 8), b, torch.arange(5)), q, s)
    elif case == "empty_support":
        _assert_live_zero(
            lambda a, b: loss(a, torch.zeros(6, dtype=torch.long), b[:0], torch.arange(0)), q, s
        )
    else:  # one class in the support set: a softmax over one class is certain
        _assert_live_zero(lambda a, b: loss(a, torch.zeros(6, dtype=torch.long), b, torch.zeros(5)), q, s)


# ----------------------------------------------------------------------------------------------------------
# Registry, defaults, errors
# ----------------------------------------------------------------------------------------------------------


def test_registry_names_defaults_and_docstrings():
    assert set(NAMES) <= set(LOSSES.names())
    assert LOSSES.accepted_params("circle") == {"m": 0.4, "gamma": 80.0}
    assert LOSSES.accepted_params("ntxent") == {"temperature": 0.5}
    assert LOSSES.accepted_params("supcon") == {
        "temperature": 0.1,
        "variant": "outside",
        "base_temperature": None,
    }
    assert LOSSES.accepted_params("siglip") == {"t_init": 10.0, "b_init": -10.0}
    assert LOSSES.accepted_params("align_uniform") == {"alpha": 2.0, "t": 2.0, "lam": 1.0}
    assert LOSSES.accepted_params("prototypical") == {"distance": "squared_euclidean", "scale": 1.0}
    for name in NAMES:
        loss = build(name)
        assert isinstance(loss, EmbeddingLoss)
        doc = type(loss).__doc__ or ""
        assert any(str(year) in doc for year in range(2000, 2030)), f"{name} cites no paper"
        assert "Eq. (" in doc or "Sec. " in doc, f"{name} names no equation or section"
    assert {n for n in NAMES if list(build(n).parameters())} == {"siglip"}


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [
        ("circle", {"margin": 0.25}, "margin"),
        ("ntxent", {"tau": 0.5}, "tau"),
        ("supcon", {"contrast_mode": "all"}, "contrast_mode"),
        ("siglip", {"temperature": 10.0}, "temperature"),
        ("align_uniform", {"lambda_": 1.0}, "lambda_"),
        ("prototypical", {"metric": "cosine"}, "metric"),
    ],
)
def test_build_unknown_kwarg(name, kwargs, bad):
    with pytest.raises(BuildError, match=f"does not accept '{bad}'; accepted: "):
        build(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("circle", {"m": -0.1}, "m"),
        ("circle", {"m": 1.5}, "m"),
        ("circle", {"gamma": 0.0}, "gamma"),
        ("circle", {"gamma": math.inf}, "gamma"),
        ("ntxent", {"temperature": 0.0}, "temperature"),
        ("ntxent", {"temperature": -0.5}, "temperature"),
        ("ntxent", {"temperature": "0.5"}, "temperature"),
        ("supcon", {"temperature": 0}, "temperature"),
        ("supcon", {"variant": "out"}, "variant"),
        ("supcon", {"base_temperature": 0.0}, "base_temperature"),
        ("siglip", {"t_init": 0.0}, "t_init"),
        ("siglip", {"b_init": math.nan}, "b_init"),
        ("align_uniform", {"alpha": 0.0}, "alpha"),
        ("align_uniform", {"t": -1.0}, "t"),
        ("align_uniform", {"lam": -1.0}, "lam"),
        ("align_uniform", {"lam": True}, "lam"),
        ("prototypical", {"distance": "euclidean"}, "distance"),
        ("prototypical", {"scale": 0.0}, "scale"),
    ],
)
def test_out_of_range_hyperparameters(name, kwargs, arg):
    with pytest.raises(BuildError, match=rf"^loss '{name}': {arg} "):
        build(name, **kwargs)
    with pytest.raises(ValueError, match=rf"^{arg} "):
        LOSSES.get(name)(**kwargs)


def test_function_arguments_are_checked():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="^alpha "):
        alignment(x, x, alpha=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        alignment(x, x[:4])
    with pytest.raises(ValueError, match="^t "):
        uniformity(x, t=0.0)
    with pytest.raises(ValueError, match="at least two rows"):
        uniformity(x[:1])
    with pytest.raises(ValueError, match="^distance "):
        prototype_logits(x, x, torch.arange(5), "l1")


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name):
    x = torch.randn(6, 4)
    loss = build(name)
    with pytest.raises(ValueError):
        loss(x, torch.zeros(5, dtype=torch.long), x, torch.zeros(6))  # labels of the wrong length
    with pytest.raises(ValueError):
        loss(x, torch.zeros(6, dtype=torch.long), x[:, :3], torch.zeros(6))  # ref of another dim
