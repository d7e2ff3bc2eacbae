"""Sharpness-Aware Minimization (SAM) and its adaptive variant (ASAM), as a wrapper of a base optimizer.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021,
minimise ``max_{||e|| <= rho} L(w + e)``. The first-order solution of the inner problem (their Eq. 2,
with p = 2) is ``e(w) = rho * g / ||g||`` with ``g = grad L(w)`` and ``||.||`` the L2 norm over *all*
parameters together; the SAM gradient is ``grad L(w + e(w))`` (Eq. 3, dropping the second-order term).
One update (Algorithm 1) therefore takes two forward-backward passes:

1. gradient ``g`` at ``w`` -> :meth:`SAM.first_step`: remember ``w``, move to ``w + e(w)``;
2. gradient at ``w + e(w)`` -> :meth:`SAM.second_step`: put ``w`` back exactly (a copy, not a
   subtraction), then let the base optimizer step with that gradient.

ASAM (Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of Deep
Neural Networks", ICML 2021), ``adaptive=True``: with ``T_w = |w| + eta`` (element-wise),
``e(w) = rho * T_w^2 g / ||T_w g||``. Kwon et al. use ``rho = 0.5`` and ``eta = 0.01`` for weights
(``T_w = 1`` for biases, which this wrapper cannot tell apart: put biases in a parameter group with
``adaptive=False`` if that matters); ``eta = 0`` is the variant of the widely used PyTorch SAM
implementation (davda54/sam).

``rho``, ``adaptive`` and ``eta`` are per parameter group, like a learning rate. Weight decay is the base
optimizer's business: the perturbation uses the loss gradient only.

Use::

    loss_fn(model(x), y).backward()
    optimizer.first_step(zero_grad=True)
    loss_fn(model(x), y).backward()        # same batch, at the perturbed weights
    optimizer.second_step(zero_grad=True)

or ``optimizer.step(closure)`` with a closure that computes the loss and calls ``backward`` (it is called
twice; gradients are zeroed before each call).

Under Accelerate, ``accelerator.prepare(optimizer)`` returns an ``AcceleratedOptimizer`` that does not
forward ``first_step``/``second_step``: reach the SAM object with :func:`unwrap_sam` (it follows
``.optimizer``). Its ``step(closure)`` reaches ``SAM.step(closure)``, but only when gradients are synchronised
(no gradient accumulation); ``state_dict``/``load_state_dict`` (``save_state``/``load_state``) are the base
optimizer's. Notes: with DDP, the first backward already all-reduces the gradient, so ``e`` comes from the
global batch; Foret et al. perturb each accelerator with its own shard's gradient ("m-sharpness"), which
``with accelerator.no_sync(model):`` around the first pass gives. fp16 loss scaling (``GradScaler``) is not
supported (``e`` is scale-invariant, but the base step would see scaled gradients): use bf16 or fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from common.optim import OPTIMIZERS, build

__all__ = ["SAM", "sam", "unwrap_sam"]


class SAM(torch.optim.Optimizer):
    """SAM / ASAM around a base optimizer that owns the update (and its state).

    Args:
        params: the parameters (or parameter groups), or ``None`` when ``base_optimizer`` is already
            built (its parameter groups are used).
        base_optimizer: an optimizer class or factory, called as ``base_optimizer(param_groups, **kwargs)``,
            or a built ``torch.optim.Optimizer``.
        rho: the radius of the neighbourhood (Foret et al.: 0.05 on CIFAR with SGD; Kwon et al.'s ASAM: 0.5).
        adaptive: ASAM's scale-invariant neighbourhood.
        eta: ASAM's ``T_w = |w| + eta``; ignored when ``adaptive`` is False.
        **kwargs: the base optimizer's hyper-parameters (``lr``, ``momentum``, ...) when it is a class.
    """

    def __init__(
        self,
        params: Iterable[Any] | None,
        base_optimizer: Callable[..., torch.optim.Optimizer] | torch.optim.Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not (math.isfinite(rho) and rho >= 0):
            raise ValueError(f"rho must be a finite number >= 0, got {rho}")
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        defaults = {"rho": rho, "adaptive": bool(adaptive), "eta": eta}
        if isinstance(base_optimizer, torch.optim.Optimizer):
            if kwargs:
                raise ValueError(
                    f"base_optimizer is already built; its hyper-parameters cannot be set here: {sorted(kwargs)}"
                )
            if isinstance(base_optimizer, SAM):
                raise ValueError("base_optimizer is itself SAM")
            if params is not None:
                given = {id(p) for p in _flatten_params(params)}
                owned = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
                if given != owned:
                    raise ValueError(
                        "params differ from the parameters of the built base_optimizer; pass params=None"
                    )
            # the group dicts are shared: SAM's keys (rho, ...) are added to the base optimizer's groups
            super().__init__(base_optimizer.param_groups, defaults)
            self.base_optimizer = base_optimizer
        else:
            if params is None:
                raise ValueError("params is required when base_optimizer is a class or factory")
            super().__init__(params, defaults)
            self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        # one list of group dicts for both: a scheduler or Accelerate changing SAM's groups changes the base's
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self._perturbed = False

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        """``||T_w g||`` over all parameters with a gradient (``T_w = 1`` in non-adaptive groups)."""
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.to(torch.promote_types(p.grad.dtype, torch.float32))  # no half-precision sums
                if group["adaptive"]:
                    g = (p.abs() + group["eta"]) * g
                norms.append(torch.linalg.vector_norm(g, 2))
        if not norms:
            return torch.zeros(())
        device, dtype = norms[0].device, norms[0].dtype
        for norm in norms[1:]:
            dtype = torch.promote_types(dtype, norm.dtype)
        return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]), 2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Remember ``w`` and move to ``w + e(w)``; needs the gradients at ``w``."""
        if self._perturbed:
            raise RuntimeError("first_step() twice without second_step(): the weights are already perturbed")
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                state = self.state[p]
                state.pop("sam_w", None)
                if p.grad is None:
                    continue
                state["sam_w"] = p.detach().clone()
                if group["adaptive"]:
                    t_w = p.abs() + group["eta"]
                    e_w = t_w * t_w * p.grad * scale.to(p)
                else:
                    e_w = p.grad * scale.to(p)
                p.add_(e_w)
        self._perturbed = True
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and take the base optimizer's step with the gradients at ``w + e(w)``."""
        if not self._perturbed:
            raise RuntimeError("second_step() without first_step(): the weights are not perturbed")
        for group in self.param_groups:
            for p in group["params"]:
                saved = self.state[p].pop("sam_w", None)
                if saved is not None:
                    p.copy_(saved)
        self._perturbed = False
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SAM update; ``closure`` computes the loss and calls ``backward`` (called twice).

        Returns the closure's loss at ``w`` (before the perturbation).
        """
        if closure is None:
            raise RuntimeError(
                "SAM needs two gradients per update: call step(closure) with a closure that computes the loss "
                "and calls backward, or first_step() and second_step() around a second forward-backward pass"
            )
        closure = torch.enable_grad()(closure)
        self.zero_grad(set_to_none=True)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    # The base optimizer holds the state that matters (momentum, Adam moments); SAM's own state (the saved
    # w) only lives between first_step and second_step.
    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict replaces the group list

    def __repr__(self) -> str:
        groups = ", ".join(
            f"rho={g['rho']}, adaptive={g['adaptive']}" + (f", eta={g['eta']}" if g["adaptive"] else "")
            for g in self.param_groups
        )
        return f"SAM({groups}; base={self.base_optimizer!r})"


def _flatten_params(params: Iterable[Any]) -> list[torch.Tensor]:
    out = []
    for item in params:
        if isinstance(item, dict):
            out.extend(item["params"] if not isinstance(item["params"], torch.Tensor) else [item["params"]])
        else:
            out.append(item)
    return out


def unwrap_sam(optimizer: Any) -> SAM:
    """The :class:`SAM` inside ``optimizer`` (itself, or an ``AcceleratedOptimizer``'s ``.optimizer``, ...)."""
    seen = optimizer
    for _ in range(8):
        if isinstance(optimizer, SAM):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            break
        optimizer = inner
    raise TypeError(f"no SAM optimizer inside {type(seen).__name__}")


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
