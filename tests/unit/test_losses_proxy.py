"""Tests of the margin/proxy heads (common.losses.margin, normface, cosface, arcface, subcenter_arcface):
plain-loop oracles, pytorch-metric-learning, the theta + m > pi regime, sub-centers, parameters, build errors.

The oracle recomputes each head sample by sample from the formulas in the docstrings: per-sample dot
products and norms, a Python branch for the ArcFace threshold, a per-sample log-sum-exp. Gradients of the
oracle (with respect to the embeddings and the class weights) come from autograd through the loop.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from common.losses import LOSSES, build
from common.losses.arcface import ArcFaceHead
from common.losses.margin import MarginHead
from common.losses.subcenter_arcface import SubCenterArcFaceHead
from common.registry import BuildError
from tests.unit.loss_testing import DTYPES, assert_close

HEADS = ["normface", "cosface", "arcface", "subcenter_arcface"]

CONFIGS = [
    ("normface", {}),
    ("normface", {"scale": 10.0}),
    ("cosface", {}),
    ("cosface", {"scale": 30.0, "margin": 0.2}),
    ("arcface", {}),
    ("arcface", {"scale": 30.0, "margin": 0.3}),
    ("arcface", {"easy_margin": True}),
    ("subcenter_arcface", {}),
    ("subcenter_arcface", {"subcenters": 2, "margin": 0.3, "scale": 16.0}),
]
CONFIG_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CONFIGS]
DEFAULTS = {
    "normface": {"scale": 20.0},
    "cosface": {"scale": 64.0, "margin": 0.35},
    "arcface": {"scale": 64.0, "margin": 0.5, "easy_margin": False},
    "subcenter_arcface": {"scale": 64.0, "margin": 0.5, "subcenters": 3, "easy_margin": False},
}


# ----------------------------------------------------------------------------------------------------------
# Plain-loop oracle
# ----------------------------------------------------------------------------------------------------------


def _psi(name, c, margin, easy_margin):
    """The margin on one target cosine ``c`` (a 0-d tensor), with the branches written out."""
    if name == "normface":
        return c
    if name == "cosface":
        return c - margin
    if easy_margin:
        return torch.cos(torch.acos(c) + margin) if float(c.detach()) > 0 else c
    if float(c.detach()) > math.cos(math.pi - margin):
        return torch.cos(torch.acos(c) + margin)
    return c - margin * math.sin(margin)


def oracle(name, x, weight, labels, **kw):
    cfg = {**DEFAULTS[name], **kw}
    k = cfg.get("subcenters", 1)
    num_classes = len(weight) // k
    total = x.sum() * 0
    for i in range(len(x)):
        xi = x[i] / x[i].norm()
        cos = []
        for c in range(num_classes):
            sims = [torch.dot(xi, weight[c * k + j] / weight[c * k + j].norm()) for j in range(k)]
            cos.append(max(sims, key=lambda t: float(t.detach())))
        y = labels[i]
        logits = [cfg["scale"] * (_psi(name, s, cfg.get("margin"), cfg.get("easy_margin")) if c == y else s)
                  for c, s in enumerate(cos)]  # fmt: skip
        total = total + torch.logsumexp(torch.stack(logits), dim=0) - logits[y]
    return total / len(x)


def make_head(name, kwargs, dtype, num_classes=5, dim=8, seed=0):
    torch.manual_seed(seed)
    head = build(name, num_classes=num_classes, embedding_dim=dim, **kwargs).to(dtype)
    return head


def batch(dtype, seed, n=12, dim=8, num_classes=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64).to(dtype)
    return x, labels


def _grads(fn, x, weight):
    xl = x.detach().clone().requires_grad_(True)
    wl = weight.detach().clone().requires_grad_(True)
    value = fn(xl, wl)
    gx, gw = torch.autograd.grad(value, [xl, wl])
    return value, gx, gw


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_against_loop_oracle(name, kwargs, dtype, seed):
    head = make_head(name, kwargs, dtype, seed=seed)
    x, labels = batch(dtype, seed)
    lab = labels.tolist()

    x_leaf = x.clone().requires_grad_(True)
    value = head(x_leaf, labels)
    value.backward()
    expected, gx, gw = _grads(lambda t, w: oracle(name, t, w, lab, **kwargs), x, head.weight)

    assert value.dtype == dtype and value.ndim == 0 and float(value.detach()) > 0
    assert_close(value, expected, dtype)
    assert_close(x_leaf.grad, gx, dtype)
    assert_close(head.weight.grad, gw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_beyond_pi_minus_m_against_oracle(dtype, easy_margin):
    """Targets at angles beyond pi - m (and with cos <= 0): the replacement branches, values and gradients."""
    head = make_head("arcface", {"easy_margin": easy_margin}, dtype)
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(5).repeat(2)
    w = head.weight.detach().to(torch.float64)
    # half the samples nearly opposite to their class vector (theta > pi - 0.5), half at random
    x = torch.randn(10, 8, generator=g, dtype=torch.float64)
    x[:5] = -w[labels[:5]] / w[labels[:5]].norm(dim=1, keepdim=True) + 0.05 * x[:5]
    x = x.to(dtype)
    cos_t = head.cosine(x).gather(1, labels[:, None]).squeeze(1)
    assert (cos_t[:5] < -math.cos(0.5)).all()

    value, gx, gw = _grads(lambda t, wt: _with_weight(head, wt, t, labels), x, head.weight)

    def reference(t, wt):
        return oracle("arcface", t, wt, labels.tolist(), easy_margin=easy_margin)

    expected, ex, ew = _grads(reference, x, head.weight)
    assert_close(value, expected, dtype)
    assert_close(gx, ex, dtype)
    assert_close(gw, ew, dtype)


def _with_weight(head, weight, x, labels):
    """``head(x, labels)`` with ``weight`` in place of the head's own (a differentiable copy)."""
    return torch.func.functional_call(head, {"weight": weight}, (x, labels))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["cosface", "arcface", "subcenter_arcface"])
def test_zero_margin_is_normalised_softmax(name, dtype):
    k = 3 if name == "subcenter_arcface" else 1
    x, labels = batch(dtype, 4)
    head = make_head(name, {"margin": 0.0, "scale": 20.0}, dtype)
    norm = make_head("normface", {"scale": 20.0}, dtype)
    if k == 1:
        norm.weight.data.copy_(head.weight.data)
        assert_close(head(x, labels), norm(x, labels), dtype)
    # the margin-free logits are the loss's logits at zero margin, for every head
    assert_close(head(x, labels), torch.nn.functional.cross_entropy(head.logits(x), labels), dtype)


# ----------------------------------------------------------------------------------------------------------
# pytorch-metric-learning (weights copied into PML's layout: W is (embedding_size, classes * K) = weight.T)
# ----------------------------------------------------------------------------------------------------------


def _pml(name, num_classes, dim, cfg):
    if name == "normface":
        return pml_losses.NormalizedSoftmaxLoss(num_classes, dim, temperature=1.0 / cfg["scale"])
    if name == "cosface":
        return pml_losses.CosFaceLoss(num_classes, dim, margin=cfg["margin"], scale=cfg["scale"])
    if name == "arcface":
        return pml_losses.ArcFaceLoss(
            num_classes, dim, margin=math.degrees(cfg["margin"]), scale=cfg["scale"]
        )
    return pml_losses.SubCenterArcFaceLoss(
        num_classes=num_classes,
        embedding_size=dim,
        margin=math.degrees(cfg["margin"]),
        scale=cfg["scale"],
        sub_centers=cfg["subcenters"],
    )


def _compare_with_pml(name, kwargs, x, labels, dtype, num_classes=6, dim=16, weight=None):
    torch.manual_seed(1)
    head = build(name, num_classes=num_classes, embedding_dim=dim, **kwargs).to(dtype)
    if weight is not None:
        head.weight.data.copy_(weight)
    ref = _pml(name, num_classes, dim, {**DEFAULTS[name], **kwargs}).to(dtype)
    assert ref.W.shape == head.weight.T.shape
    ref.W.data = head.weight.detach().T.clone()

    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, theirs = head(x1, labels), ref(x2, labels)
    ours.backward()
    theirs.backward()
    assert float(theirs.detach()) > 0
    assert_close(ours, theirs, dtype)
    assert_close(x1.grad, x2.grad, dtype)
    assert_close(head.weight.grad, ref.W.grad.T, dtype)
    assert_close(head.logits(x), ref.get_logits(x), dtype)
    return head


PML_CONFIGS = [
    ("normface", {}),
    ("normface", {"scale": 32.0}),
    ("cosface", {}),
    ("cosface", {"margin": 0.2, "scale": 30.0}),
    ("arcface", {}),
    ("arcface", {"margin": 0.3, "scale": 30.0}),
    ("subcenter_arcface", {}),
    ("subcenter_arcface", {"subcenters": 2, "margin": 0.3, "scale": 30.0}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "kwargs"), PML_CONFIGS, ids=[n + str(k) for n, k in PML_CONFIGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pml(name, kwargs, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (40,), generator=g)
    centers = torch.randn(6, 16, generator=g, dtype=torch.float64)
    x = (0.5 * centers[labels] + torch.randn(40, 16, generator=g, dtype=torch.float64)).to(dtype)
    _compare_with_pml(name, kwargs, x, labels, dtype)


@pytest.mark.parametrize("name", ["arcface", "subcenter_arcface"])
def test_matches_pml_beyond_pi_minus_m(name):
    """Deep in the theta + m > pi regime PML applies the same replacement, cos(theta) - m sin(m)."""
    torch.manual_seed(1)
    head = build(name, num_classes=6, embedding_dim=16).double()
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(6).repeat(5)
    # the sub-centers of a class close together, each sample nearly opposite to its class
    base = torch.randn(6, 16, generator=g, dtype=torch.float64)
    noise = torch.randn(6 * head.subcenters, 16, generator=g, dtype=torch.float64)
    head.weight.data = base.repeat_interleave(head.subcenters, dim=0) + 0.1 * noise
    x = -base[labels] / base[labels].norm(dim=1, keepdim=True)
    x = x + 0.02 * torch.randn(30, 16, generator=g, dtype=torch.float64)
    cos_t = head.cosine(x).gather(1, labels[:, None])
    assert (cos_t < math.cos(math.pi - 0.5)).float().mean() > 0.5
    _compare_with_pml(name, {}, x, labels, torch.float64, weight=head.weight.detach())


def test_arcface_margin_function_matches_pml_off_the_threshold_and_jumps_down_at_it():
    """psi(theta) over a grid of angles: equal to PML's except at theta = pi - m; decreasing, with the
    documented jump of cos(m) + m sin(m) - 1 at the threshold."""
    m = 0.5
    head = ArcFaceHead(2, 2, margin=m).double()
    ref = pml_losses.ArcFaceLoss(2, 2, margin=math.degrees(m))
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)[1:-1]
    theta = theta[(theta - (math.pi - m)).abs() > 1e-9]
    cos = torch.cos(theta)
    ours = head.apply_margin(cos)
    assert_close(ours, ref.modify_cosine_of_target_classes(cos), torch.float64)
    assert (ours[1:] <= ours[:-1]).all()  # non-increasing in theta
    edge = torch.tensor([math.pi - m - 1e-9, math.pi - m + 1e-9], dtype=torch.float64)
    below, above = head.apply_margin(torch.cos(edge))
    assert math.isclose(float(below - above), math.cos(m) + m * math.sin(m) - 1, abs_tol=1e-7)


def test_arcface_gradient_is_finite_at_cos_one():
    """An embedding exactly on its class vector (cos = 1): sqrt(1 - cos^2) has a zero, not infinite, grad."""
    head = ArcFaceHead(3, 4).double()
    x = head.weight.detach()[:1].clone().requires_grad_(True)
    head(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


# ----------------------------------------------------------------------------------------------------------
# Sub-centers
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcenters", [1, 3])
def test_dominant_subcenter_against_loop(subcenters):
    head = SubCenterArcFaceHead(5, 8, subcenters=subcenters).double()
    x, labels = batch(torch.float64, 7, n=30)
    got = head.dominant_subcenter(x, labels)
    w = head.weight.detach()
    expected = []
    for i in range(len(x)):
        y = int(labels[i])
        sims = [float(torch.dot(x[i], w[y * subcenters + j]) / (x[i].norm() * w[y * subcenters + j].norm()))
                for j in range(subcenters)]  # fmt: skip
        expected.append(max(range(subcenters), key=sims.__getitem__))
    assert got.dtype == torch.long and got.tolist() == expected
    assert not got.requires_grad


def test_dominant_subcenter_finds_planted_subcenters():
    """Samples placed next to sub-center k of their class are assigned k, whatever the class."""
    head = SubCenterArcFaceHead(4, 16, subcenters=3).double()
    labels = torch.arange(4).repeat_interleave(3)
    planted = torch.arange(3).repeat(4)
    x = head.weight.detach()[labels * 3 + planted] + 1e-4 * torch.randn(12, 16, dtype=torch.float64)
    assert head.dominant_subcenter(x, labels).tolist() == planted.tolist()


def test_subcenter_cosine_is_max_over_subcenters():
    head = SubCenterArcFaceHead(4, 6, subcenters=3).double()
    x, _ = batch(torch.float64, 2, n=9, dim=6, num_classes=4)
    per_center = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T
    assert_close(head.cosine(x), per_center.view(9, 4, 3).amax(dim=2), torch.float64)
    assert_close(head.logits(x), 64.0 * head.cosine(x), torch.float64)


# ----------------------------------------------------------------------------------------------------------
# Parameters, devices, state
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEADS)
def test_head_owns_its_weights_and_they_train(name):
    head = build(name, num_classes=7, embedding_dim=10)
    k = 3 if name == "subcenter_arcface" else 1
    params = dict(head.named_parameters())
    assert list(params) == ["weight"] and params["weight"].shape == (7 * k, 10)
    assert list(head.state_dict()) == ["weight"]
    assert isinstance(head, MarginHead)
    x, labels = batch(torch.float32, 0, n=16, dim=10, num_classes=7)
    head(x, labels).backward()
    grad = head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # one SGD step on the head alone lowers the loss
    before = float(head(x, labels).detach())
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        head(x, labels).backward()
        opt.step()
    assert float(head(x, labels).detach()) < before


def test_logits_have_no_margin_and_predict():
    head = build("cosface", num_classes=5, embedding_dim=8).double()
    x, labels = batch(torch.float64, 1)
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T
    assert_close(head.logits(x), 64.0 * cos, torch.float64)
    assert head.logits(x).argmax(dim=1).shape == labels.shape


# ----------------------------------------------------------------------------------------------------------
# Registry, defaults, errors
# ----------------------------------------------------------------------------------------------------------


def test_registered_with_paper_defaults_and_citations():
    for name in HEADS:
        params = LOSSES.accepted_params(name)
        assert params["num_classes"] is params["embedding_dim"] is inspect.Parameter.empty
        assert {k: v for k, v in params.items() if k not in ("num_classes", "embedding_dim")} == DEFAULTS[
            name
        ]
        doc = LOSSES.get(name).__doc__ or ""
        assert any(str(year) in doc for year in range(2000, 2030)) and ("Eq." in doc or "Sec." in doc)


@pytest.mark.parametrize("name", HEADS)
def test_build_without_num_classes_names_it(name):
    with pytest.raises(
        BuildError, match=rf"^loss '{name}' needs num_classes; accepted: num_classes, embedding_dim"
    ):
        build(name, embedding_dim=8)
    with pytest.raises(BuildError, match="embedding_dim"):
        build(name, num_classes=8)


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [("arcface", {"m": 0.5}, "m"), ("cosface", {"s": 30.0}, "s"), ("normface", {"margin": 0.1}, "margin")],
)
def test_build_unknown_kwarg_lists_accepted(name, kwargs, bad):
    with pytest.raises(
        BuildError, match=f"does not accept '{bad}'; accepted: num_classes, embedding_dim, scale="
    ):
        build(name, num_classes=3, embedding_dim=4, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "arg"),
    [
        ("cosface", {"margin": -0.1}, "margin"),
        ("cosface", {"margin": 2.5}, "margin"),
        ("arcface", {"margin": -0.5}, "margin"),
        ("arcface", {"margin": math.pi / 2}, "margin"),
        ("arcface", {"margin": 28.6}, "margin"),  # degrees, PML-style
        ("subcenter_arcface", {"margin": -1.0}, "margin"),
        ("arcface", {"easy_margin": 1}, "easy_margin"),
        ("normface", {"scale": 0.0}, "scale"),
        ("cosface", {"scale": -64.0}, "scale"),
        ("arcface", {"scale": math.inf}, "scale"),
        ("subcenter_arcface", {"subcenters": 0}, "subcenters"),
        ("subcenter_arcface", {"subcenters": 2.0}, "subcenters"),
        ("normface", {"num_classes": 1}, "num_classes"),
        ("normface", {"num_classes": 10.0}, "num_classes"),
        ("arcface", {"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_out_of_range_hyperparameters(name, kwargs, arg):
    full = {"num_classes": 4, "embedding_dim": 8, **kwargs}
    with pytest.raises(BuildError, match=rf"^loss '{name}': {arg} "):
        build(name, **full)
    with pytest.raises(ValueError, match=rf"^{arg} "):
        LOSSES.get(name)(**full)


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h(torch.randn(4, 7), torch.zeros(4, dtype=torch.long)),  # wrong embedding dim
        lambda h: h(torch.randn(4, 8), torch.zeros(3, dtype=torch.long)),  # labels of the wrong length
        lambda h: h(torch.randn(8), torch.zeros(1, dtype=torch.long)),  # 1-D embeddings
        lambda h: h.logits(torch.randn(4, 7)),
    ],
    ids=["dim", "labels-length", "1d", "logits-dim"],
)
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call(build("arcface", num_classes=4, embedding_dim=8))


# ----------------------------------------------------------------------------------------------------------
# Circle loss with class-level labels
# ----------------------------------------------------------------------------------------------------------


def _circle_class_oracle(x, labels, weight, m, gamma):
    """Sun et al. (2020) Eq. (6) per sample with the class weights as partners, a_p and a_n detached."""
    total = x.new_zeros(())
    for i in range(len(x)):
        y = int(labels[i])
        cos = [torch.dot(x[i], w) / (x[i].norm() * w.norm()) for w in weight]
        s_p = cos[y]
        a_p = torch.clamp(1 + m - s_p.detach(), min=0)
        positive = torch.exp(-gamma * a_p * (s_p - (1 - m)))
        negative = sum(
            torch.exp(gamma * torch.clamp(c.detach() + m, min=0) * (c - m))
            for j, c in enumerate(cos)
            if j != y
        )
        total = total + torch.log(1 + negative * positive)
    return total / len(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kwargs", [{"m": 0.25, "gamma": 8.0}, {"m": 0.4, "gamma": 2.0}])
@pytest.mark.parametrize("seed", [0, 1])
def test_circle_class_against_loop_oracle(kwargs, dtype, seed):
    torch.manual_seed(seed)
    head = build("circle_class", num_classes=5, embedding_dim=8, **kwargs).to(dtype)
    head.weight.data.normal_()
    x, labels = batch(dtype, seed, n=12)
    x.requires_grad_(True)
    loss = head(x, labels)
    loss.backward()
    got_x, got_w = x.grad.clone(), head.weight.grad.clone()
    x.grad = None
    weight = head.weight.detach().clone().requires_grad_(True)
    expected = _circle_class_oracle(x, labels, weight, kwargs["m"], kwargs["gamma"])
    expected.backward()
    assert_close(loss, expected, dtype)
    assert_close(got_x, x.grad, dtype)
    assert_close(got_w, weight.grad, dtype)


def test_circle_class_defaults_are_the_papers_face_setting():
    head = build("circle_class", num_classes=3, embedding_dim=4)
    assert (head.m, head.scale) == (0.25, 256.0)
    assert "Sun" in type(head).__doc__ and "Eq. (6)" in type(head).__doc__
