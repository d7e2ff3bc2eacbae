"""The m-per-class batch sampler of deep metric learning.

Every batch holds ``classes_per_batch`` distinct classes and ``samples_per_class`` samples of
each, so that every anchor has positives (Wang et al. 2019 use it for the MS loss; Musgrave et al.
2020 for every method they compare). An epoch is a fixed number of batches, ``batches_per_epoch``,
so that its length does not depend on the class counts.

Distributed mode (``world_size > 1``): all ranks draw the same ``classes_per_batch * world_size``
classes per step from a generator seeded by (seed, epoch), and rank ``r`` takes the ``r``-th slice,
so the ranks see different classes and the global batch has ``classes_per_batch * world_size``
classes, as one process with the larger batch would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError, require_positive

__all__ = ["MPerClassBatchSampler", "SamplerError"]


@SAMPLERS.register("m_per_class")
class MPerClassBatchSampler(EpochBatchSampler):
    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        classes_per_batch: int = 16,
        samples_per_class: int = 4,
        batches_per_epoch: int = 100,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        require_positive(classes_per_batch=classes_per_batch, samples_per_class=samples_per_class)
        super().__init__(labels, batches_per_epoch, seed, rank, world_size)
        if classes_per_batch < 2:
            raise SamplerError(
                f"m_per_class: classes_per_batch must be at least 2: a batch of one class has no negatives, so "
                f"pair and proxy losses are 0 on it; got {classes_per_batch}"
            )
        classes, counts = torch.unique(self.labels, return_counts=True)
        smallest = int(counts.argmin())
        if int(counts[smallest]) < samples_per_class:
            raise SamplerError(
                f"m_per_class: samples_per_class is {samples_per_class}, but class {int(classes[smallest])} has "
                f"{int(counts[smallest])} samples; a class would repeat samples in a batch: lower "
                "samples_per_class to the smallest class size"
            )
        needed = classes_per_batch * world_size
        if len(classes) < needed:
            raise SamplerError(
                f"m_per_class: a batch needs {classes_per_batch} classes x {world_size} process(es) = {needed} "
                f"distinct classes, but the labels have {len(classes)}; lower classes_per_batch"
            )
        self.classes = classes
        order = torch.argsort(self.labels, stable=True)
        self.class_indices = list(torch.split(order, counts.tolist()))
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.samples_per_class

    def __iter__(self) -> Iterator[list[int]]:
        # One generator shared by all ranks (same seed): same class draw, different slices.
        generator = self._generator()
        m = self.samples_per_class
        lo, hi = self.rank * self.classes_per_batch, (self.rank + 1) * self.classes_per_batch
        for _ in range(self.batches_per_epoch):
            drawn = torch.randperm(len(self.classes), generator=generator)[
                : self.classes_per_batch * self.world_size
            ]
            picks = []
            for position, class_pos in enumerate(drawn.tolist()):
                members = self.class_indices[class_pos]
                chosen = members[torch.randperm(len(members), generator=generator)[:m]]
                if lo <= position < hi:
                    picks.append(chosen)
            yield torch.cat(picks).tolist()
