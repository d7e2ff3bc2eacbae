"""Optimizers built by name: ``build(name, parameters, **hyperparams)``.

``adam``, ``adamw`` and ``sgd`` are here; ``"sam"`` (in ``common.optim.sam``, imported on first use) wraps one
of them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from common.registry import Registry

__all__ = ["OPTIMIZERS", "build"]

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer", package="common.optim")


def _check_lr(lr: float, weight_decay: float) -> None:
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


@OPTIMIZERS.register("adam")
def adam(parameters: Iterable, lr: float = 1e-3, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, 2015)."""
    _check_lr(lr, weight_decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(parameters: Iterable, lr: float = 1e-3, weight_decay: float = 1e-2) -> torch.optim.Optimizer:
    """AdamW, decoupled weight decay (Loshchilov & Hutter, 2019)."""
    _check_lr(lr, weight_decay)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(
    parameters: Iterable,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """SGD with momentum."""
    _check_lr(lr, weight_decay)
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def build(name: str, parameters: Iterable, /, **hyperparams) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(name, parameters=parameters, **hyperparams)
