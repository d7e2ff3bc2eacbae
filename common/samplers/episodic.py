"""Episodic N-way K-shot sampling for few-shot learning.

An *episode* (Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016; Snell et al.,
"Prototypical Networks for Few-shot Learning", NeurIPS 2017, Algorithm 1) draws ``n_way`` distinct
classes uniformly at random, then for each class ``k_shot + q_query`` distinct samples uniformly at
random: the first ``k_shot`` form the support set, the other ``q_query`` the query set, so support and
query never share a sample.

Order inside a batch (what :func:`split_episode` and :func:`episode_targets` assume)::

    [support of way 0 (k_shot), support of way 1, ..., support of way n-1,
     query of way 0 (q_query),  query of way 1,   ..., query of way n-1]

"way i" is the i-th class drawn (a random order, so a model cannot learn a fixed class position); the
episode's targets are the way indices ``0 .. n_way - 1``, not the dataset labels.

An episode is one batch, and an epoch is ``batches_per_epoch`` episodes, reproducible by (seed, epoch).
Distributed mode (``world_size > 1``): every rank generates the same global stream of episodes from a
generator seeded by (seed, epoch), and rank ``r`` takes episodes ``r, r + world_size, r + 2 * world_size,
...``; the ranks see different episodes, and together the first ``batches_per_epoch * world_size``
episodes of the stream that one process would see.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from common.samplers.base import SAMPLERS, EpochBatchSampler, SamplerError, require_positive

__all__ = ["EpisodicBatchSampler", "episode_targets", "split_episode"]


@SAMPLERS.register("episodic")
class EpisodicBatchSampler(EpochBatchSampler):
    """N-way K-shot Q-query episodes; see the module docstring for the order of a batch.

    Args:
        labels: one class label per dataset sample.
        n_way: classes per episode.
        k_shot: support samples per class.
        q_query: query samples per class (0 is allowed: support only).
        batches_per_epoch: episodes (one episode is one batch) per epoch and per process.
        seed: with the epoch (``set_epoch``), fixes the episodes.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 15,
        batches_per_epoch: int = 100,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        require_positive(n_way=n_way, k_shot=k_shot)
        if q_query < 0:
            raise SamplerError(f"q_query must be >= 0, got {q_query}")
        super().__init__(labels, batches_per_epoch, seed, rank, world_size)
        classes, counts = torch.unique(self.labels, return_counts=True)
        if len(classes) < n_way:
            raise SamplerError(
                f"episodic: an episode needs n_way={n_way} distinct classes, but the labels have "
                f"{len(classes)}; lower n_way"
            )
        per_class = k_shot + q_query
        small = torch.nonzero(counts < per_class).flatten()
        if len(small) > 0:
            listed = ", ".join(f"class {int(classes[i])} has {int(counts[i])}" for i in small[:5].tolist())
            more = f" (and {len(small) - 5} more)" if len(small) > 5 else ""
            raise SamplerError(
                f"episodic: every class needs k_shot + q_query = {k_shot} + {q_query} = {per_class} samples, "
                f"but {len(small)} of {len(classes)} classes have fewer: {listed}{more}; lower k_shot or "
                "q_query, or drop those classes"
            )
        self.classes = classes
        order = torch.argsort(self.labels, stable=True)
        self.class_indices = list(torch.split(order, counts.tolist()))
        self.n_way = n_way
        self.k_shot = k_shot
        self.q_query = q_query

    @property
    def batch_size(self) -> int:
        return self.n_way * (self.k_shot + self.q_query)

    def split_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(support, query)`` rows of an episode: the support set is the loss's reference."""
        return split_episode(rows, self.n_way, self.k_shot, self.q_query)

    def _episode(self, generator: torch.Generator) -> list[int]:
        ways = torch.randperm(len(self.classes), generator=generator)[: self.n_way]
        support, query = [], []
        for class_pos in ways.tolist():
            members = self.class_indices[class_pos]
            chosen = members[torch.randperm(len(members), generator=generator)[: self.k_shot + self.q_query]]
            support.append(chosen[: self.k_shot])
            query.append(chosen[self.k_shot :])
        return torch.cat(support + query).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        # One generator shared by all ranks (same seed): one global stream of episodes, dealt round-robin.
        generator = self._generator()
        for _ in range(self.batches_per_epoch):
            for r in range(self.world_size):
                episode = self._episode(generator)
                if r == self.rank:
                    yield episode


def split_episode(
    batch: torch.Tensor, n_way: int, k_shot: int, q_query: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the rows of an episode (indices, inputs, embeddings, ...) into ``(support, query)``.

    ``batch`` has ``n_way * (k_shot + q_query)`` rows in :class:`EpisodicBatchSampler`'s order; support
    has ``n_way * k_shot`` rows (way-major: the k_shot rows of way 0 first), query ``n_way * q_query``.
    ``support.view(n_way, k_shot, ...)`` groups the shots by way, e.g. for prototypes.
    """
    expected = n_way * (k_shot + q_query)
    if batch.shape[0] != expected:
        raise ValueError(
            f"batch has {batch.shape[0]} rows, but an episode of n_way={n_way}, k_shot={k_shot}, "
            f"q_query={q_query} has {expected}"
        )
    return batch[: n_way * k_shot], batch[n_way * k_shot :]


def episode_targets(
    n_way: int, k_shot: int, q_query: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The way index (0 .. n_way - 1) of each support row and of each query row of an episode."""
    ways = torch.arange(n_way, device=device)
    return ways.repeat_interleave(k_shot), ways.repeat_interleave(q_query)
