"""Sharpness of a trained model's loss at its weights ``w``, on a fixed batch.

* ``rho_sharpness``: ``max_{||e|| <= rho} L(w + e) - L(w)``, the quantity SAM minimises (Foret et al.,
  "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021, Eq. 1 with p = 2),
  approximated from below by ``steps`` of normalised gradient ascent projected back onto the ball
  (``steps = 1`` is SAM's own first-order step ``e = rho g / ||g||``, its Eq. 2). The norm is over all
  parameters together.
* ``hessian_top_eigenvalue``: the largest eigenvalue of the Hessian of ``L`` at ``w``, by power iteration
  with Hessian-vector products (double back-propagation), as in Keskar et al. 2017 and the sharpness
  analyses Foret et al. cite. Power iteration finds the eigenvalue of largest magnitude; at a minimum that
  is the largest positive one.

``loss_fn()`` computes the loss on the fixed batch with the model in evaluation mode (BatchNorm on its
running statistics, no dropout), so every evaluation is the same function of the weights. The weights are
restored exactly (copied back) before returning. This module imports only torch and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["hessian_top_eigenvalue", "rho_sharpness"]


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    return params


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def rho_sharpness(model: nn.Module, loss_fn: Callable[[], torch.Tensor], rho: float, steps: int = 5) -> float:
    """``max_{||e|| <= rho} L(w + e) - L(w)`` by ``steps`` of projected normalised gradient ascent (>= 0)."""
    if rho <= 0 or steps < 1:
        raise ValueError(f"rho must be > 0 and steps >= 1, got rho={rho}, steps={steps}")
    params = _parameters(model)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            base = float(loss_fn())
        best = base
        step_size = rho if steps == 1 else 2.0 * rho / steps
        for _ in range(steps):
            grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            scale = step_size / (_norm(grads) + 1e-12)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=float(scale))
                offset = [p - w for p, w in zip(params, saved, strict=True)]
                shrink = min(1.0, rho / (float(_norm(offset)) + 1e-12))
                for p, w, e in zip(params, saved, offset, strict=True):
                    p.copy_(w + shrink * e)
                best = max(best, float(loss_fn()))
        return best - base
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)


def hessian_top_eigenvalue(
    model: nn.Module, loss_fn: Callable[[], torch.Tensor], iterations: int = 20, seed: int = 0
) -> float:
    """The dominant eigenvalue of the loss Hessian at the current weights, by power iteration."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    params = _parameters(model)
    generator = torch.Generator().manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = _norm(vector)
        vector = [v / norm for v in vector]
        product = torch.autograd.grad(
            grads, params, grad_outputs=vector, retain_graph=True, allow_unused=True
        )
        product = [torch.zeros_like(p) if h is None else h for p, h in zip(params, product, strict=True)]
        eigenvalue = float(sum((h * v).sum() for h, v in zip(product, vector, strict=True)))
        vector = [h.detach() for h in product]
    return eigenvalue
