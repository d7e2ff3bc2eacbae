"""Class-balanced sampling for long-tailed training.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020, Sec. 3.1
(Eq. 1): sample ``j`` comes from class ``c`` with probability ``p_c = n_c^q / sum_k n_k^q``, then uniformly
within that class:

* ``q = 0``: class-balanced sampling (every class equally likely; the default here);
* ``q = 1/2``: square-root sampling (Mahajan et al. 2018);
* ``q = 1``: instance-balanced sampling (every sample equally likely, what a plain shuffle gives).

Every draw is independent (class, then sample, both with replacement), so a class with fewer samples
than its share repeats samples and a batch can hold a sample twice. Kang et al.'s code uses the
"class-aware" sampler of Shen et al. 2016 (classes visited in shuffled cycles, samples within a class in
shuffled cycles): the same expected class frequencies, with less variance; we keep the i.i.d. draw of
the equation.

An epoch is ``batches_per_epoch`` batches of ``batch_size``, reproducible by (seed, epoch). Distributed
mode (``world_size > 1``): all ranks draw the same global batch of ``batch_size * world_size`` from a
generator seeded by (seed, epoch) and rank ``r`` takes the ``r``-th slice, so the ranks together see
exactly what one process with the larger batch would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError, require_positive

__all__ = ["ClassBalancedBatchSampler"]


@SAMPLERS.register("class_balanced")
class ClassBalancedBatchSampler(EpochBatchSampler):
    """Batches of i.i.d. draws: a class with probability proportional to ``n_c ** q``, then a sample of it.

    Args:
        labels: one class label per dataset sample.
        batch_size: samples per batch and per process.
        batches_per_epoch: batches per epoch and per process.
        seed: with the epoch (``set_epoch``), fixes the batches.
        rank, world_size: this process and the number of processes.
        q: the exponent of Kang et al.'s Eq. (1): 0 class-balanced, 0.5 square-root, 1 instance-balanced.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        batch_size: int = 128,
        batches_per_epoch: int = 100,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        q: float = 0.0,
    ) -> None:
        require_positive(batch_size=batch_size)
        super().__init__(labels, batches_per_epoch, seed, rank, world_size)
        if not (math.isfinite(q) and 0 <= q <= 1):
            raise SamplerError(f"q must be in [0, 1], got {q}")
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise SamplerError(
                "class_balanced: labels must be a non-empty 1-D sequence, "
                f"got shape {tuple(self.labels.shape)}"
            )
        classes, counts = torch.unique(self.labels, return_counts=True)
        self.classes = classes
        self.counts = counts
        # the samples of class c are order[starts[c]:][:counts[c]]
        self.order = torch.argsort(self.labels, stable=True)
        self.starts = torch.cumsum(counts, 0) - counts
        weights = counts.double() ** q
        self.class_probabilities = weights / weights.sum()
        self.batch_size = batch_size
        self.q = q

    def __iter__(self) -> Iterator[list[int]]:
        # One generator shared by all ranks (same seed): same global batch, different slices.
        generator = self._generator()
        global_size = self.batch_size * self.world_size
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for _ in range(self.batches_per_epoch):
            if self.q == 0:
                drawn = torch.randint(len(self.classes), (global_size,), generator=generator)
            else:
                drawn = torch.multinomial(
                    self.class_probabilities, global_size, replacement=True, generator=generator
                )
            u = torch.rand(global_size, generator=generator, dtype=torch.float64)
            offsets = (u * self.counts[drawn]).long().minimum(self.counts[drawn] - 1)
            yield self.order[self.starts[drawn] + offsets][lo:hi].tolist()
