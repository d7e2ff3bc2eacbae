"""Tests of the classification losses (common.losses.classification and the modules of cross_entropy, focal,
poly1, squentropy, square, ldam): plain-loop oracles, special cases that reduce to cross-entropy, torch's
cross_entropy, deferred re-weighting, build errors.

The oracles recompute each loss sample by sample straight from the docstring formulas (a per-sample
log-sum-exp, Python branches and sums over classes); their gradients come from autograd through the loop.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from common.losses import LOSSES, build
from common.losses.classification import ClassificationLoss, effective_number_weights
from common.registry import BuildError
from tests.unit.loss_testing import DTYPES, assert_close

COUNTS = [500, 200, 80, 30, 10]  # a long-tailed class distribution (C = 5)


def batch(dtype, seed, n=16, num_classes=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (n,), generator=g)
    logits = scale * torch.randn(n, num_classes, generator=g, dtype=torch.float64)
    return logits.to(dtype), targets


def value_and_grad(fn, logits):
    leaf = logits.detach().clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, [leaf])
    return value, grad


def compare(ours, reference, logits, dtype):
    value, grad = value_and_grad(ours, logits)
    expected, expected_grad = value_and_grad(reference, logits)
    assert value.dtype == dtype and value.ndim == 0
    assert_close(value, expected, dtype)
    assert_close(grad, expected_grad, dtype)


# ----------------------------------------------------------------------------------------------------------
# Plain-loop oracles
# ----------------------------------------------------------------------------------------------------------


def _log_p(z, j):
    return z[j] - torch.logsumexp(z, dim=0)


def oracle_cross_entropy(logits, targets, *, label_smoothing=0.0, weights=None):
    """Szegedy's smoothed target q, weighted as torch does: sum_ij w_j q_ij (-log p_ij) / sum_i w_yi."""
    c = logits.shape[1]
    w = [1.0] * c if weights is None else [float(v) for v in weights]
    total, norm = logits.sum() * 0, 0.0
    for i, y in enumerate(targets):
        for j in range(c):
            q = (1 - label_smoothing) * (j == y) + label_smoothing / c
            total = total - w[j] * q * _log_p(logits[i], j)
        norm += w[y]
    return total / norm


def oracle_focal(logits, targets, *, gamma=2.0, alpha=None):
    total = logits.sum() * 0
    for i, y in enumerate(targets):
        log_pt = _log_p(logits[i], y)
        a = 1.0 if alpha is None else alpha[y]
        total = total - a * (1 - torch.exp(log_pt)) ** gamma * log_pt
    return total / len(targets)


def oracle_poly1(logits, targets, *, epsilon=1.0, base="ce", gamma=2.0, alpha=None):
    total = logits.sum() * 0
    for i, y in enumerate(targets):
        log_pt = _log_p(logits[i], y)
        pt = torch.exp(log_pt)
        if base == "ce":
            total = total - log_pt + epsilon * (1 - pt)
        else:
            a = 1.0 if alpha is None else alpha[y]
            total = total - a * (1 - pt) ** gamma * log_pt + epsilon * (1 - pt) ** (gamma + 1)
    return total / len(targets)


def oracle_squentropy(logits, targets):
    c = logits.shape[1]
    total = logits.sum() * 0
    for i, y in enumerate(targets):
        squares = sum(logits[i, j] ** 2 for j in range(c) if j != y)
        total = total - _log_p(logits[i], y) + squares / (c - 1)
    return total / len(targets)


def oracle_square(logits, targets, k=1.0, m=1.0):
    c = logits.shape[1]
    total = logits.sum() * 0
    for i, y in enumerate(targets):
        terms = [k * (logits[i, j] - m) ** 2 if j == y else logits[i, j] ** 2 for j in range(c)]
        total = total + sum(terms) / c
    return total / len(targets)


def oracle_ldam(logits, targets, *, class_counts, max_m=0.5, s=30.0, weights=None):
    """Eq. (13): Delta_j = K n_j^(-1/4), the largest max_m; the target logit minus Delta_y, all times s."""
    raw = [n ** (-0.25) for n in class_counts]
    delta = [max_m * r / max(raw) for r in raw]
    w = [1.0] * len(class_counts) if weights is None else [float(v) for v in weights]
    total, norm = logits.sum() * 0, 0.0
    for i, y in enumerate(targets):
        z = torch.stack(
            [s * (logits[i, j] - delta[j]) if j == y else s * logits[i, j] for j in range(len(raw))]
        )
        total = total - w[y] * _log_p(z, y)
        norm += w[y]
    return total / norm


def oracle_effective_number(class_counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in class_counts]
    return [r / sum(raw) * len(raw) for r in raw]


ORACLES = {
    "cross_entropy": oracle_cross_entropy,
    "focal": oracle_focal,
    "poly1": oracle_poly1,
    "squentropy": oracle_squentropy,
    "square": oracle_square,
    "ldam": oracle_ldam,
}

LDAM_SMALL = {"class_counts": COUNTS, "max_m": 0.3, "s": 9.0}
CONFIGS = [
    ("cross_entropy", {}, {}),
    ("cross_entropy", {"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    ("cross_entropy", {"class_weights": [1.0, 2.0, 0.5, 3.0, 1.0]}, {"weights": [1.0, 2.0, 0.5, 3.0, 1.0]}),
    ("focal", {}, {}),
    ("focal", {"gamma": 0.5}, {"gamma": 0.5}),
    ("focal", {"gamma": 1.0, "alpha": [0.25, 0.5, 1, 1, 2]}, {"gamma": 1.0, "alpha": [0.25, 0.5, 1, 1, 2]}),
    ("poly1", {}, {}),
    ("poly1", {"epsilon": 2.0}, {"epsilon": 2.0}),
    ("poly1", {"epsilon": -1.0}, {"epsilon": -1.0}),
    ("poly1", {"base": "focal"}, {"base": "focal"}),
    ("poly1", {"base": "focal", "epsilon": -1.0, "gamma": 1.5, "alpha": [1, 2, 3, 4, 5]},
     {"base": "focal", "epsilon": -1.0, "gamma": 1.5, "alpha": [1, 2, 3, 4, 5]}),
    ("squentropy", {}, {}),
    ("square", {}, {}),
    ("square", {"k": 15.0, "m": 30.0}, {"k": 15.0, "m": 30.0}),
    ("ldam", {"class_counts": COUNTS}, {"class_counts": COUNTS}),
    ("ldam", LDAM_SMALL, LDAM_SMALL),
]  # fmt: skip
CONFIG_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw, _ in CONFIGS]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs", "oracle_kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_against_loop_oracle(name, kwargs, oracle_kwargs, dtype, seed):
    logits, targets = batch(dtype, seed, scale=0.5 if name == "ldam" else 2.0)  # LDAM: cosine-sized logits
    loss = build(name, **kwargs)
    tgt = targets.tolist()
    leaf = logits.clone().requires_grad_(True)
    value = loss(leaf, targets)
    value.backward()
    expected, expected_grad = value_and_grad(lambda t: ORACLES[name](t, tgt, **oracle_kwargs), logits)
    assert value.dtype == dtype and value.ndim == 0
    assert float(expected.detach()) > 0
    assert_close(value, expected, dtype)
    assert_close(leaf.grad, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(dtype, label_smoothing, weighted):
    logits, targets = batch(dtype, 3, n=40, num_classes=7)
    weights = [0.5, 1.0, 2.0, 1.5, 0.1, 3.0, 1.0] if weighted else None
    ours = build("cross_entropy", label_smoothing=label_smoothing, class_weights=weights)
    w = None if weights is None else torch.tensor(weights, dtype=dtype)
    compare(
        lambda t: ours(t, targets),
        lambda t: F.cross_entropy(t, targets, weight=w, label_smoothing=label_smoothing),
        logits,
        dtype,
    )


# ----------------------------------------------------------------------------------------------------------
# Special cases that reduce to the cross-entropy (or to focal)
# ----------------------------------------------------------------------------------------------------------


def _ce(t, targets):
    return F.cross_entropy(t, targets)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("focal", {"gamma": 0.0}),
        ("poly1", {"epsilon": 0.0}),
        ("poly1", {"epsilon": 0.0, "base": "focal", "gamma": 0.0}),
        ("ldam", {"class_counts": COUNTS, "max_m": 0.0, "s": 1.0}),
        ("cross_entropy", {"class_counts": COUNTS, "drw_epoch": 5}),  # before drw_epoch
    ],
    ids=["focal-gamma0", "poly1-eps0", "poly1-focal-eps0-gamma0", "ldam-m0-s1", "ce-before-drw"],
)
def test_reduces_to_cross_entropy(name, kwargs, dtype):
    logits, targets = batch(dtype, 5, n=30)
    loss = build(name, **kwargs)
    compare(lambda t: loss(t, targets), lambda t: _ce(t, targets), logits, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_poly1_focal_with_zero_epsilon_is_focal(dtype):
    logits, targets = batch(dtype, 6, n=30)
    poly = build("poly1", base="focal", epsilon=0.0, gamma=2.0, alpha=[1, 2, 1, 2, 1])
    focal = build("focal", gamma=2.0, alpha=[1, 2, 1, 2, 1])
    compare(lambda t: poly(t, targets), lambda t: focal(t, targets), logits, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ldam_margins_only_shift_the_target_logit(dtype):
    """LDAM = scaled CE on logits with Delta_y subtracted at the target; the rarest class gets max_m."""
    loss = build("ldam", class_counts=COUNTS, max_m=0.5, s=30.0)
    margins = loss.margins
    assert math.isclose(float(margins.max()), 0.5) and int(margins.argmax()) == len(COUNTS) - 1
    assert torch.all(margins[:-1] < margins[1:])  # fewer samples, larger margin
    assert math.isclose(float(margins[0] / margins[-1]), (COUNTS[-1] / COUNTS[0]) ** 0.25)
    logits, targets = batch(dtype, 7, n=20, scale=0.5)
    shifted = logits - F.one_hot(targets, 5).to(dtype) * margins.to(dtype)[targets, None]
    compare(
        lambda t: loss(t, targets),
        lambda t: F.cross_entropy(30.0 * (t - (logits - shifted)), targets),
        logits,
        dtype,
    )


def test_focal_saturated_logits_have_finite_gradients():
    """p_t == 1 in float32 (a huge target logit): finite gradients, also for gamma < 1."""
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 3.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    for gamma in (0.0, 0.5, 2.0):
        for loss in (build("focal", gamma=gamma), build("poly1", base="focal", gamma=gamma)):
            logits.grad = None
            loss(logits, targets).backward()
            assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------------------------------------
# Class-balanced weights and deferred re-weighting
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.9999])
def test_effective_number_weights_against_formula(beta):
    got = effective_number_weights(COUNTS, beta)
    assert got.dtype == torch.float64 and math.isclose(float(got.sum()), len(COUNTS))
    torch.testing.assert_close(got, torch.tensor(oracle_effective_number(COUNTS, beta), dtype=torch.float64))
    if beta == 0.0:
        assert torch.equal(got, torch.ones(len(COUNTS), dtype=torch.float64))
    else:
        assert torch.all(got[:-1] < got[1:])  # rarer classes weigh more


@pytest.mark.parametrize("name", ["cross_entropy", "ldam"])
@pytest.mark.parametrize("drw_epoch", [0, 3])
def test_drw_switches_on_exactly_after_drw_epoch_epochs(name, drw_epoch):
    kwargs = {"class_counts": COUNTS, "drw_epoch": drw_epoch}
    loss = build(name, **kwargs)
    uniform = build(name, **({"class_counts": COUNTS} if name == "ldam" else {}))
    weights = effective_number_weights(COUNTS, 0.9999)
    logits, targets = batch(torch.float64, 8, n=40, scale=0.5)
    tgt = targets.tolist()
    oracle_kw = {"class_counts": COUNTS} if name == "ldam" else {}
    weighted = ORACLES[name](logits, tgt, weights=weights.tolist(), **oracle_kw)

    assert loss.reweighting == (drw_epoch == 0)  # before any set_epoch: before the first epoch
    for epoch in [1, 2, 3, 4, 5, 11, 3, 1]:  # 1-based, as the engine counts; also back (resuming earlier)
        loss.set_epoch(epoch)
        on = epoch > drw_epoch  # drw_epoch uniform epochs, then weighted
        assert loss.reweighting is on
        expected = weighted if on else uniform(logits, targets)
        assert_close(loss(logits, targets), expected, torch.float64)
    assert not torch.isclose(weighted, uniform(logits, targets))


def test_drw_schedule_is_the_official_one():
    """cifar_train.py: 0-based epoch e of 200 has beta = [0, 0.9999][e // 160]; we get set_epoch(e + 1)."""
    loss = build("ldam", class_counts=COUNTS, drw_epoch=160)
    for e in range(200):
        loss.set_epoch(e + 1)
        assert loss.reweighting is (e // 160 == 1)


def test_drw_weights_are_a_non_persistent_buffer():
    loss = build("cross_entropy", class_counts=COUNTS, drw_epoch=0)
    assert loss.state_dict() == {} and list(loss.parameters()) == []
    assert dict(loss.named_buffers())["_class_weights"].dtype == torch.float64
    ldam = build("ldam", class_counts=COUNTS)
    assert ldam.state_dict() == {}
    ldam.set_epoch(7)  # no DRW: a no-op
    assert ldam.reweighting is False and ldam.drw_epoch is None


def test_set_epoch_checks_its_argument():
    loss = build("cross_entropy", class_counts=COUNTS, drw_epoch=2)
    with pytest.raises(ValueError, match="^epoch "):
        loss.set_epoch(0)  # epochs are 1-based
    with pytest.raises(ValueError, match="^epoch "):
        loss.set_epoch(1.5)


def test_every_loss_has_set_epoch_only_where_it_reweights():
    assert hasattr(build("cross_entropy"), "set_epoch") and hasattr(
        build("ldam", class_counts=[3, 4]), "set_epoch"
    )
    for name in ("focal", "poly1", "squentropy"):
        assert not hasattr(build(name), "set_epoch")


# ----------------------------------------------------------------------------------------------------------
# Registry, defaults, errors
# ----------------------------------------------------------------------------------------------------------

NAMES = ["cross_entropy", "focal", "poly1", "squentropy", "ldam"]


def test_registered_with_paper_defaults_and_citations():
    assert LOSSES.accepted_params("cross_entropy") == {
        "label_smoothing": 0.0,
        "class_weights": None,
        "class_counts": None,
        "drw_epoch": None,
        "beta": 0.9999,
    }
    assert LOSSES.accepted_params("focal") == {"gamma": 2.0, "alpha": None}
    assert LOSSES.accepted_params("poly1") == {"epsilon": 1.0, "base": "ce", "gamma": 2.0, "alpha": None}
    assert LOSSES.accepted_params("squentropy") == {}
    params = LOSSES.accepted_params("ldam")
    assert params.pop("class_counts") is inspect.Parameter.empty
    assert params == {"max_m": 0.5, "s": 30.0, "drw_epoch": None, "beta": 0.9999}
    for name in NAMES:
        assert issubclass(LOSSES.get(name), ClassificationLoss)
        doc = LOSSES.get(name).__doc__ or ""
        assert any(str(year) in doc for year in range(2000, 2030)), f"{name} cites no paper"


def test_ldam_without_class_counts_names_it():
    with pytest.raises(
        BuildError, match="^loss 'ldam' needs class_counts; accepted: class_counts, max_m=0.5"
    ):
        build("ldam")


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [
        ("cross_entropy", {"smoothing": 0.1}, "smoothing"),
        ("focal", {"alpha_t": 0.25}, "alpha_t"),
        ("ldam", {"class_counts": [1, 2], "margin": 0.5}, "margin"),
        ("squentropy", {"scale": 1.0}, "scale"),
    ],
)
def test_build_unknown_kwarg(name, kwargs, bad):
    with pytest.raises(BuildError, match=f"does not accept '{bad}'; accepted: "):
        build(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("cross_entropy", {"label_smoothing": -0.1}, "label_smoothing"),
        ("cross_entropy", {"label_smoothing": 1.5}, "label_smoothing"),
        ("cross_entropy", {"class_weights": [1.0, -1.0]}, "class_weights"),
        ("cross_entropy", {"class_weights": [0.0, 0.0]}, "class_weights"),
        ("cross_entropy", {"class_weights": 2.0}, "class_weights"),
        ("cross_entropy", {"class_counts": [10, 0, 5], "drw_epoch": 1}, "class_counts"),
        ("cross_entropy", {"drw_epoch": 3}, "drw_epoch"),  # without class_counts
        ("cross_entropy", {"class_weights": [1.0, 2.0], "drw_epoch": 0}, "class_weights"),
        ("cross_entropy", {"class_counts": [10, 5], "drw_epoch": -1}, "drw_epoch"),
        ("cross_entropy", {"class_counts": [10, 5], "drw_epoch": 1, "beta": 1.0}, "beta"),
        ("focal", {"gamma": -1.0}, "gamma"),
        ("focal", {"alpha": 0.25}, "alpha"),
        ("focal", {"alpha": [0.25, -1.0]}, "alpha"),
        ("poly1", {"epsilon": -1.5}, "epsilon"),
        ("poly1", {"base": "bce"}, "base"),
        ("poly1", {"alpha": [1.0, 2.0]}, "alpha"),  # alpha with base="ce"
        ("poly1", {"base": "focal", "gamma": math.nan}, "gamma"),
        ("ldam", {"class_counts": [10, 0, 5]}, "class_counts"),
        ("ldam", {"class_counts": [10]}, "class_counts"),
        ("ldam", {"class_counts": [10, 2.5]}, "class_counts"),
        ("ldam", {"class_counts": "10,5"}, "class_counts"),
        ("ldam", {"class_counts": [10, 5], "max_m": -0.5}, "max_m"),
        ("ldam", {"class_counts": [10, 5], "s": 0.0}, "s"),
        ("ldam", {"class_counts": [10, 5], "drw_epoch": 2.0}, "drw_epoch"),
        ("ldam", {"class_counts": [10, 5], "drw_epoch": 1, "beta": -0.1}, "beta"),
    ],
)
def test_out_of_range_hyperparameters(name, kwargs, arg):
    with pytest.raises(BuildError, match=rf"^loss '{name}': {arg} "):
        build(name, **kwargs)
    with pytest.raises(ValueError, match=rf"^{arg} "):
        LOSSES.get(name)(**kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "logits", "targets"),
    [
        ("cross_entropy", {}, torch.randn(4), torch.zeros(4, dtype=torch.long)),  # 1-D logits
        ("focal", {}, torch.randn(4, 3), torch.zeros(3, dtype=torch.long)),  # wrong length
        ("poly1", {}, torch.randn(4, 3), torch.zeros(4)),  # float targets
        ("squentropy", {}, torch.randn(4, 1), torch.zeros(4, dtype=torch.long)),  # one class
        ("ldam", {"class_counts": [3, 4, 5]}, torch.randn(4, 5), torch.zeros(4, dtype=torch.long)),
        ("cross_entropy", {"class_weights": [1.0, 2.0]}, torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
        ("focal", {"alpha": [1.0, 2.0]}, torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
    ],
    ids=["1d", "length", "float-targets", "one-class", "ldam-classes", "weights-classes", "alpha-classes"],
)
def test_bad_inputs_raise_value_error(name, kwargs, logits, targets):
    with pytest.raises(ValueError):
        build(name, **kwargs)(logits, targets)


def test_cross_entropy_with_class_counts_but_no_drw_epoch_is_the_plain_cross_entropy():
    logits, targets = batch(torch.float64, 5, num_classes=5)
    engine_built = build("cross_entropy", class_counts=COUNTS)  # the engine always passes the counts
    assert torch.equal(engine_built(logits, targets), F.cross_entropy(logits, targets))
