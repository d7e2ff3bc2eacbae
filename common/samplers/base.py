"""What every batch sampler shares: the registry, the error, argument checks, and the epoch's generator.

A sampler yields ``batches_per_epoch`` batches (lists of dataset indices) per epoch and per process,
reproducible by (seed, epoch): ``__iter__`` draws from :meth:`EpochBatchSampler._generator`, which is the
same on every rank, so the ranks can agree on a global draw and each keep its own part of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Sampler

from common.errors import UserError
from common.registry import Registry

__all__ = ["SAMPLERS", "EpochBatchSampler", "SamplerError", "require_positive", "require_rank"]

SAMPLERS: Registry[Sampler] = Registry("sampler", package="common.samplers")


class SamplerError(UserError, ValueError):
    """A batch composition that the labels cannot supply."""


def require_positive(**values: int) -> None:
    """Raise ``SamplerError`` for the first of ``values`` (in the order given) that is below 1."""
    for key, value in values.items():
        if value < 1:
            raise SamplerError(f"{key} must be >= 1, got {value}")


def require_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise SamplerError(f"rank must be in [0, {world_size}), got {rank}")


class EpochBatchSampler(Sampler[list[int]]):
    """Base of the batch samplers: checks the engine's arguments and holds them with the epoch.

    Args:
        labels: one class label per dataset sample (kept as ``self.labels``, a 1-D long tensor).
        batches_per_epoch: batches per epoch and per process.
        seed: with the epoch (``set_epoch``), fixes the batches.
        rank, world_size: this process and the number of processes.

    A subclass checks its own arguments, calls this ``__init__``, and implements ``__iter__``.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        batches_per_epoch: int,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        require_positive(batches_per_epoch=batches_per_epoch, world_size=world_size)
        require_rank(rank, world_size)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Each epoch draws a different, reproducible sequence of batches."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def split_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(reference, query)``: the rows of a batch (indices, inputs, embeddings or labels) that a loss
        compares the queries with, and the queries. A plain batch is its own reference (``None``)."""
        return None, rows

    def _generator(self) -> torch.Generator:
        """A fresh generator seeded by (seed, epoch), the same on every rank."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
