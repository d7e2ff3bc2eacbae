"""Gathering across processes for losses that need the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, differentiably.

    Every rank then computes the same loss on the global batch; the backward of the gather sums the
    gradients of all ranks into each local slice (W x the single-process gradient), and DDP's average
    over W ranks brings the parameter gradients back to exactly those of one process on the
    concatenated batch. Integer tensors (labels) carry no gradient and use a plain all_gather.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    if not tensor.is_floating_point():
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)
    return torch.cat(dist_nn.all_gather(tensor.contiguous()))
