"""Shared helpers of the loss tests: dtypes, tolerances, tiny batches, values with gradients."""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.float64]
# (relative tolerance, absolute tolerance relative to the largest expected magnitude)
TOL = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-5, 1e-9)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    rtol, atol_rel = TOL[dtype]
    atol = atol_rel * max(float(expected.detach().abs().max()), 1e-30)
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=rtol, atol=atol)


def tiny_batch(dtype, seed, n=10, ref_n=None):
    """3 classes plus a singleton (a query without positives), in a random order; optionally a reference set."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3] * 2)[:n]
    labels = labels[torch.randperm(n, generator=g)]
    x = torch.randn(n, 4, generator=g, dtype=torch.float64).to(dtype)
    if ref_n is None:
        return x, labels, None, None
    ref_labels = torch.randint(0, 4, (ref_n,), generator=g)
    ref = torch.randn(ref_n, 4, generator=g, dtype=torch.float64).to(dtype)
    return x, labels, ref, ref_labels


def value_and_grads(fn, tensors):
    """``fn(*tensors)`` and its gradients with respect to each tensor (zeros where unused)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return value, [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads, strict=True)]
