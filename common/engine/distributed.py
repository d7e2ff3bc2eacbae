"""Gathering across processes for losses that need the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import FunctionCtx


class _AllGather(torch.autograd.Function):
    """All ranks' equal-sized tensors, concatenated; backward returns this rank's slice of the summed
    gradient (every rank computes the same global loss, so each rank's slice gets every rank's share)."""

    @staticmethod
    def forward(ctx: FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.narrow(0, ctx.rank * ctx.size, ctx.size)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, differentiably (shapes must agree across ranks).

    Every rank then computes the same loss on the global batch; the backward of the gather sums the
    gradients of all ranks into each local slice (W x the single-process gradient), and DDP's average
    over W ranks brings the parameter gradients back to exactly those of one process on the
    concatenated batch. Integer tensors (labels) carry no gradient.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    if not tensor.requires_grad:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)
    return _AllGather.apply(tensor)
