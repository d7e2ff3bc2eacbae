"""Plain shuffled batches, the sampler of ordinary classification training.

Each pass over the data is a fresh random permutation, cut into batches of ``batch_size`` (per process); a
pass that does not fill the epoch's last batch continues into the next permutation, so every sample is drawn
once before any is drawn twice, and an epoch is always ``batches_per_epoch`` full batches (a shorter epoch
than one pass over the data is a random subset of it). Reproducible by (seed, epoch).

Distributed mode (``world_size > 1``): all ranks draw the same permutations (the shared generator), take the
same global batches of ``batch_size * world_size`` and rank ``r`` keeps the ``r``-th slice, so the ranks
together see exactly what one process with the larger batch would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError, require_positive

__all__ = ["ShuffleBatchSampler"]


@SAMPLERS.register("shuffle")
class ShuffleBatchSampler(EpochBatchSampler):
    """``batches_per_epoch`` batches of ``batch_size`` distinct samples from shuffled passes over the data."""

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        batch_size: int = 128,
        batches_per_epoch: int = 100,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        require_positive(batch_size=batch_size)
        super().__init__(labels, batches_per_epoch, seed, rank, world_size)
        if batch_size * world_size > len(self.labels):
            raise SamplerError(
                f"shuffle: a batch of {batch_size} x {world_size} process(es) needs that many samples, but the "
                f"data has {len(self.labels)}; lower batch_size"
            )
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = self._generator()
        n, global_batch = len(self.labels), self.batch_size * self.world_size
        lo = self.rank * self.batch_size
        order = torch.randperm(n, generator=generator)  # what is left of the current pass, in order
        for _ in range(self.batches_per_epoch):
            if len(order) >= global_batch:
                batch, order = order[:global_batch], order[global_batch:]
            else:  # the end of this pass, filled from the start of the next (no sample twice in a batch)
                rest, following = order, torch.randperm(n, generator=generator)
                fill = torch.nonzero(~torch.isin(following, rest)).squeeze(1)[: global_batch - len(rest)]
                keep = torch.ones(n, dtype=torch.bool)
                keep[fill] = False
                batch, order = torch.cat([rest, following[fill]]), following[keep]
            yield batch[lo : lo + self.batch_size].tolist()
