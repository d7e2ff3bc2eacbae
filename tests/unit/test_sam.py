"""SAM / ASAM (common.optim.sam): the perturbation, the restore, a hand-written two-pass reference, a
quadratic with a known SAM gradient, the registry, state_dict, and a real Accelerator on CPU."""

import copy

import pytest
import torch
from torch import nn

from common.optim import build
from common.optim.sam import SAM, unwrap_sam
from common.registry import BuildError


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def test_first_step_moves_the_weights_by_rho_along_the_normalised_gradient():
    model, (x, y) = _model(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.07, lr=0.1)
    _loss(model, x, y).backward()
    w = _flat(p.detach().clone() for p in model.parameters())
    g = _flat(p.grad for p in model.parameters())
    optimizer.first_step()
    e = _flat(p.detach() for p in model.parameters()) - w
    assert torch.linalg.vector_norm(e).item() == pytest.approx(0.07, rel=1e-9)
    assert torch.allclose(e, 0.07 * g / torch.linalg.vector_norm(g), rtol=0, atol=1e-12)


def test_adaptive_perturbation_is_rho_t2_g_over_norm_tg():
    model, (x, y) = _model(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.5, adaptive=True, eta=0.01, lr=0.1)
    _loss(model, x, y).backward()
    w = _flat(p.detach().clone() for p in model.parameters())
    g = _flat(p.grad for p in model.parameters())
    optimizer.first_step()
    t_w = w.abs() + 0.01
    expected = 0.5 * t_w**2 * g / torch.linalg.vector_norm(t_w * g)
    assert torch.allclose(_flat(p.detach() for p in model.parameters()) - w, expected, rtol=0, atol=1e-12)


def test_second_step_restores_the_weights_exactly_before_the_base_step():
    model, (x, y) = _model(), _batch()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    original = [p.detach().clone() for p in model.parameters()]
    seen = []
    optimizer.base_optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.detach().clone() for p in model.parameters()])
    )
    _loss(model, x, y).backward()
    optimizer.first_step(zero_grad=True)
    assert not any(torch.equal(p, o) for p, o in zip(model.parameters(), original, strict=True))
    with pytest.raises(RuntimeError, match="already perturbed"):
        optimizer.first_step()
    _loss(model, x, y).backward()
    optimizer.second_step(zero_grad=True)
    assert len(seen) == 1 and all(torch.equal(s, o) for s, o in zip(seen[0], original, strict=True))
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError, match="without first_step"):
        optimizer.second_step()


def _reference_sam_sgd(model, batches, rho, lr, momentum, weight_decay):
    """Algorithm 1 of Foret et al. with SGD (heavy ball, weight decay in the gradient), by hand."""
    params = list(model.parameters())
    buffers = [None] * len(params)
    for x, y in batches:
        grads = torch.autograd.grad(_loss(model, x, y), params)
        norm = torch.linalg.vector_norm(_flat(grads))
        w = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(rho * g / norm)
        sam_grads = torch.autograd.grad(_loss(model, x, y), params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, sam_grads, strict=True)):
                d = g + weight_decay * w[i]
                buffers[i] = d.clone() if buffers[i] is None else momentum * buffers[i] + d
                p.copy_(w[i] - lr * buffers[i])


def test_three_updates_equal_a_hand_written_two_pass_reference():
    batches = [_batch(s) for s in range(3)]
    model, reference = _model(), _model()
    optimizer = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for x, y in batches:
        _loss(model, x, y).backward()
        optimizer.first_step(zero_grad=True)
        _loss(model, x, y).backward()
        optimizer.second_step(zero_grad=True)
    _reference_sam_sgd(reference, batches, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for p, r in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, r, rtol=0, atol=1e-12)


def test_step_with_a_closure_equals_first_and_second_step():
    batches = [_batch(s) for s in range(2)]
    a, b = _model(), _model()
    opt_a = SAM(a.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.5)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.5)
    for x, y in batches:
        _loss(a, x, y).backward()
        opt_a.first_step(zero_grad=True)
        _loss(a, x, y).backward()
        opt_a.second_step(zero_grad=True)

        def closure(x=x, y=y):
            loss = _loss(b, x, y)
            loss.backward()
            return loss

        loss = opt_b.step(closure)
        assert torch.is_tensor(loss)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(RuntimeError, match="needs two gradients"):
        opt_b.step()


def test_on_a_quadratic_the_sam_gradient_is_the_gradient_at_the_perturbed_point():
    # L(w) = 1/2 w^T A w + b^T w, grad L(w) = A w + b
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    w0 = w.detach().clone()
    lr, rho = 0.01, 0.2
    optimizer = SAM([w], torch.optim.SGD, rho=rho, lr=lr)

    def loss():
        return 0.5 * w @ a @ w + b @ w

    loss().backward()
    grad = a @ w0 + b
    assert torch.allclose(w.grad, grad)
    optimizer.first_step(zero_grad=True)
    perturbed = w0 + rho * grad / torch.linalg.vector_norm(grad)
    assert torch.allclose(w.detach(), perturbed, rtol=0, atol=1e-14)
    loss().backward()
    sam_grad = a @ perturbed + b
    assert torch.allclose(w.grad, sam_grad, rtol=0, atol=1e-12)
    optimizer.second_step()
    assert torch.allclose(w.detach(), w0 - lr * sam_grad, rtol=0, atol=1e-14)


def test_per_group_rho_and_a_built_base_optimizer():
    model = _model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    base = torch.optim.SGD([{"params": first}, {"params": second, "lr": 0.5}], lr=0.1)
    optimizer = SAM(None, base, rho=0.05)
    assert optimizer.param_groups is base.param_groups
    assert [g["rho"] for g in base.param_groups] == [0.05, 0.05] and base.param_groups[1]["lr"] == 0.5
    with pytest.raises(ValueError, match="already built"):
        SAM(None, base, lr=0.1)
    with pytest.raises(ValueError, match="params differ"):
        SAM(first, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="rho must be"):
        SAM(model.parameters(), torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="params is required"):
        SAM(None, torch.optim.SGD, lr=0.1)


def test_built_by_name_with_base_kwargs_and_state_dict_round_trip():
    model, (x, y) = _model(), _batch()
    optimizer = build("sam", model.parameters(), lr=0.05, momentum=0.8, weight_decay=0.0, rho=0.1)
    assert isinstance(optimizer, SAM) and isinstance(optimizer.base_optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["rho"]) == (0.05, 0.8, 0.0, 0.1)
    assert build("sam", model.parameters()).param_groups[0]["lr"] == 0.1  # sgd's registered default
    adam = build("sam", model.parameters(), base="adam", lr=1e-3, adaptive=True)
    assert isinstance(adam.base_optimizer, torch.optim.Adam) and adam.param_groups[0]["adaptive"]
    with pytest.raises(BuildError, match="'adam' does not accept 'momentum'"):
        build("sam", model.parameters(), base="adam", momentum=0.9)
    with pytest.raises(BuildError, match="does not accept 'betas'"):
        build("sam", model.parameters(), betas=(0.9, 0.99))

    def update(m, opt):
        _loss(m, x, y).backward()
        opt.first_step(zero_grad=True)
        _loss(m, x, y).backward()
        opt.second_step(zero_grad=True)

    update(model, optimizer)
    state = copy.deepcopy(optimizer.state_dict())
    assert "momentum_buffer" in next(iter(state["state"].values())), "the base optimizer's state is not saved"
    clone = copy.deepcopy(model)
    restored = build("sam", clone.parameters(), lr=0.05, momentum=0.8, weight_decay=0.0, rho=0.1)
    restored.load_state_dict(state)
    assert restored.param_groups is restored.base_optimizer.param_groups
    update(model, optimizer)
    update(clone, restored)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.fixture()
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_two_sam_steps_under_a_real_accelerator_on_cpu(fresh_accelerate_state):
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    batches = [_batch(s) for s in range(2)]
    reference = _model()
    ref_opt = build("sam", reference.parameters(), lr=0.1, momentum=0.9, rho=0.05)
    for x, y in batches:
        _loss(reference, x, y).backward()
        ref_opt.first_step(zero_grad=True)
        _loss(reference, x, y).backward()
        ref_opt.second_step(zero_grad=True)

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    model = _model()
    model, optimizer = accelerator.prepare(
        model, build("sam", model.parameters(), lr=0.1, momentum=0.9, rho=0.05)
    )
    assert isinstance(optimizer, AcceleratedOptimizer)
    sam = unwrap_sam(optimizer)
    assert sam is optimizer.optimizer and optimizer.param_groups is sam.param_groups
    for x, y in batches:
        accelerator.backward(_loss(model, x, y))
        sam.first_step(zero_grad=True)
        accelerator.backward(_loss(model, x, y))
        sam.second_step(zero_grad=True)
    for p, r in zip(accelerator.unwrap_model(model).parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, r, rtol=0, atol=1e-12)

    # the AcceleratedOptimizer's own step(closure) reaches SAM.step: same update as the reference's next
    x, y = _batch(7)

    def closure():
        loss = _loss(model, x, y)
        accelerator.backward(loss)
        return loss

    optimizer.step(closure)
    _loss(reference, x, y).backward()
    ref_opt.first_step(zero_grad=True)
    _loss(reference, x, y).backward()
    ref_opt.second_step(zero_grad=True)
    for p, r in zip(accelerator.unwrap_model(model).parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, r, rtol=0, atol=1e-12)
    assert "momentum_buffer" in next(iter(optimizer.state_dict()["state"].values()))
    with pytest.raises(TypeError, match="no SAM optimizer"):
        unwrap_sam(torch.optim.SGD(reference.parameters(), lr=0.1))
