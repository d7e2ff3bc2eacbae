"""Optimizers built by name: ``build(name, parameters, **hyperparams)``; ``"sam"`` wraps a registered base."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from common.optim.sam import SAM, unwrap_sam
from common.registry import Registry

__all__ = ["OPTIMIZERS", "SAM", "build", "unwrap_sam"]

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")


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


@OPTIMIZERS.register("sam")
def sam(
    parameters: Iterable,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    nesterov: bool | None = None,
    rho: float = 0.05,
    adaptive: bool = False,
    eta: float = 0.0,
    base: str = "sgd",
) -> torch.optim.Optimizer:
    """SAM (Foret et al., ICLR 2021, Algorithm 1) or ASAM (``adaptive``; Kwon et al., ICML 2021) around
    the registered optimizer ``base``; see ``common.optim.sam``.

    ``lr``, ``momentum``, ``weight_decay`` and ``nesterov`` go to ``base`` when given (``None``: the base's
    own default, e.g. sgd's lr=0.1, momentum=0.9, weight_decay=5e-4); one that ``base`` does not accept
    (momentum for adam) is an error. The training step must call ``first_step``/``second_step`` (or
    ``step(closure)``): a plain ``step()`` raises.
    """
    if base == "sam":
        raise ValueError("base must be a plain optimizer, not 'sam'")
    given = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov}
    base_optimizer = build(base, parameters, **{k: v for k, v in given.items() if v is not None})
    return SAM(None, base_optimizer, rho=rho, adaptive=adaptive, eta=eta)


def build(name: str, parameters: Iterable, /, **hyperparams) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(name, parameters=parameters, **hyperparams)
