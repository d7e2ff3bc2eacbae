"""The episodic and class-balanced samplers, by their invariants."""

import pytest
import torch

from common.samplers import SamplerError, build
from common.samplers.class_balanced import ClassBalancedBatchSampler
from common.samplers.episodic import EpisodicBatchSampler, episode_targets, split_episode


def _labels(num_classes: int = 12, per_class: int = 9) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.arange(num_classes).repeat_interleave(per_class)[
        torch.randperm(num_classes * per_class, generator=generator)
    ]


def _long_tailed_labels() -> torch.Tensor:
    """10 classes of 200, 120, 70, 40, 25, 15, 9, 5, 3, 2 samples, shuffled."""
    counts = torch.tensor([200, 120, 70, 40, 25, 15, 9, 5, 3, 2])
    labels = torch.arange(10).repeat_interleave(counts)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


# --------------------------------------------------------------------------------------------
# episodic
# --------------------------------------------------------------------------------------------


def test_every_episode_has_n_way_classes_k_shots_and_q_queries_support_first():
    labels = _labels()
    n_way, k_shot, q_query = 5, 2, 3
    sampler = EpisodicBatchSampler(labels, n_way, k_shot, q_query, batches_per_epoch=30, seed=1)
    episodes = list(sampler)
    assert len(episodes) == len(sampler) == 30
    for episode in episodes:
        assert len(episode) == sampler.batch_size == n_way * (k_shot + q_query)
        assert len(set(episode)) == len(episode), "a sample appears twice in an episode"
        support, query = split_episode(torch.tensor(episode), n_way, k_shot, q_query)
        s_labels = labels[support].view(n_way, k_shot)
        q_labels = labels[query].view(n_way, q_query)
        # way-major blocks: each row is one class, the same class in support and query
        assert (s_labels == s_labels[:, :1]).all() and (q_labels == q_labels[:, :1]).all()
        assert torch.equal(s_labels[:, 0], q_labels[:, 0])
        assert len(set(s_labels[:, 0].tolist())) == n_way
        assert not set(support.tolist()) & set(query.tolist()), "support and query share a sample"


def test_episode_targets_match_the_order_of_a_batch():
    labels = _labels()
    episode = torch.tensor(next(iter(EpisodicBatchSampler(labels, 4, 3, 2, batches_per_epoch=1))))
    support_t, query_t = episode_targets(4, 3, 2)
    support, query = split_episode(episode, 4, 3, 2)
    assert support_t.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert query_t.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # the same way index means the same dataset class, in support and query alike
    way_class = {int(t): int(labels[i]) for t, i in zip(support_t, support, strict=True)}
    assert all(way_class[int(t)] == int(labels[i]) for t, i in zip(query_t, query, strict=True))
    with pytest.raises(ValueError, match="has 19 rows"):
        split_episode(episode[:-1], 4, 3, 2)


def test_episodes_cover_classes_and_samples_uniformly_enough():
    labels = _labels(num_classes=6, per_class=5)
    seen = torch.zeros(30)
    for episode in EpisodicBatchSampler(labels, 3, 1, 1, batches_per_epoch=400, seed=2):
        seen[episode] += 1
    # each sample: 400 episodes * (3/6 classes) * (2/5 samples) = 80 expected
    assert seen.min() > 50 and seen.max() < 115


def test_episodes_are_reproducible_and_differ_by_epoch_and_seed():
    labels = _labels()
    a = EpisodicBatchSampler(labels, 5, 1, 2, batches_per_epoch=10, seed=3)
    b = EpisodicBatchSampler(labels, 5, 1, 2, batches_per_epoch=10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a), "iterating twice changes the episodes"
    b.set_epoch(3)
    assert list(a) != list(b)
    c = EpisodicBatchSampler(labels, 5, 1, 2, batches_per_epoch=10, seed=4)
    c.set_epoch(2)
    assert list(a) != list(c)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_different_episodes_dealt_from_one_stream(world_size):
    labels = _labels()
    single = list(EpisodicBatchSampler(labels, 4, 1, 2, batches_per_epoch=8 * world_size, seed=5))
    ranks = [
        list(
            EpisodicBatchSampler(labels, 4, 1, 2, batches_per_epoch=8, seed=5, rank=r, world_size=world_size)
        )
        for r in range(world_size)
    ]
    for r, episodes in enumerate(ranks):
        assert episodes == single[r::world_size]
    for step in zip(*ranks, strict=True):
        assert len({tuple(e) for e in step}) == world_size, "two ranks drew the same episode"


def test_an_epoch_is_batches_per_epoch_episodes():
    labels = _labels()
    assert len(EpisodicBatchSampler(labels, 5, 1, 2, batches_per_epoch=7)) == 7
    assert len(EpisodicBatchSampler(labels, 5, 1, 2)) == 100
    with pytest.raises(SamplerError, match="batches_per_epoch must be >= 1"):
        EpisodicBatchSampler(labels, 5, 1, 2, batches_per_epoch=0)
    with pytest.raises(TypeError, match="episodes_per_epoch"):
        EpisodicBatchSampler(labels, 5, 1, 2, episodes_per_epoch=7)


def test_impossible_episodes_fail_with_a_clear_message():
    labels = torch.cat([_labels(num_classes=4, per_class=6), torch.full((3,), 7), torch.full((5,), 9)])
    with pytest.raises(
        SamplerError, match=r"k_shot \+ q_query = 1 \+ 5 = 6 .* 2 of 6 classes .*class 7 has 3, class 9 has 5"
    ):
        EpisodicBatchSampler(labels, n_way=3, k_shot=1, q_query=5)
    with pytest.raises(SamplerError, match="n_way=7 distinct classes, but the labels have 6"):
        EpisodicBatchSampler(labels, n_way=7, k_shot=1, q_query=1)
    with pytest.raises(SamplerError, match="k_shot must be >= 1"):
        EpisodicBatchSampler(labels, n_way=2, k_shot=0)
    with pytest.raises(SamplerError, match="q_query must be >= 0"):
        EpisodicBatchSampler(labels, n_way=2, k_shot=1, q_query=-1)
    with pytest.raises(SamplerError, match="rank"):
        EpisodicBatchSampler(labels, n_way=2, k_shot=1, q_query=1, rank=2, world_size=2)


def test_episodic_is_built_by_name_with_the_trainer_arguments():
    sampler = build(
        "episodic",
        labels=_labels(),
        n_way=3,
        k_shot=2,
        q_query=1,
        batches_per_epoch=4,
        seed=0,
        rank=0,
        world_size=1,
    )
    assert isinstance(sampler, EpisodicBatchSampler) and len(list(sampler)) == 4


# --------------------------------------------------------------------------------------------
# class-balanced
# --------------------------------------------------------------------------------------------


def _class_frequencies(sampler, labels, num_classes=10) -> torch.Tensor:
    drawn = torch.tensor([i for batch in sampler for i in batch])
    return torch.bincount(labels[drawn], minlength=num_classes).double()


def _chi_square(observed: torch.Tensor, probabilities: torch.Tensor) -> float:
    expected = observed.sum() * probabilities
    return float(((observed - expected) ** 2 / expected).sum())


def test_class_balanced_draws_every_class_equally_often():
    labels = _long_tailed_labels()
    sampler = ClassBalancedBatchSampler(labels, batch_size=100, batches_per_epoch=100, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100 and all(len(b) == 100 for b in batches)
    observed = _class_frequencies(batches, labels)
    # chi-square with 9 degrees of freedom: P(X > 27.9) = 0.001
    assert _chi_square(observed, torch.full((10,), 0.1, dtype=torch.float64)) < 27.9
    # within a class the draw is uniform: the 2 samples of the smallest class both appear about equally
    drawn = torch.tensor([i for b in batches for i in b])
    smallest = torch.nonzero(labels == 9).flatten()
    per_sample = torch.tensor([(drawn == i).sum() for i in smallest]).double()
    assert _chi_square(per_sample, torch.full((2,), 0.5, dtype=torch.float64)) < 10.8  # 1 dof, 0.001


@pytest.mark.parametrize("q", [0.5, 1.0])
def test_class_probabilities_follow_kangs_power_q(q):
    labels = _long_tailed_labels()
    counts = torch.bincount(labels).double()
    sampler = ClassBalancedBatchSampler(labels, batch_size=100, batches_per_epoch=100, seed=1, q=q)
    expected = counts**q / (counts**q).sum()
    assert torch.allclose(sampler.class_probabilities, expected)
    assert _chi_square(_class_frequencies(sampler, labels), expected) < 27.9


def test_class_balanced_is_reproducible_and_differs_by_epoch_and_seed():
    labels = _long_tailed_labels()
    a = ClassBalancedBatchSampler(labels, batch_size=16, batches_per_epoch=5, seed=3)
    b = ClassBalancedBatchSampler(labels, batch_size=16, batches_per_epoch=5, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    c = ClassBalancedBatchSampler(labels, batch_size=16, batches_per_epoch=5, seed=4)
    c.set_epoch(1)
    assert list(a) != list(c)


@pytest.mark.parametrize("world_size", [2, 3])
def test_class_balanced_ranks_are_slices_of_the_global_batch(world_size):
    labels = _long_tailed_labels()
    single = list(ClassBalancedBatchSampler(labels, batch_size=8 * world_size, batches_per_epoch=6, seed=5))
    ranks = [
        list(ClassBalancedBatchSampler(labels, 8, batches_per_epoch=6, seed=5, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    for step, step_batches in enumerate(zip(*ranks, strict=True)):
        assert [i for b in step_batches for i in b] == single[step]
        assert len({tuple(b) for b in step_batches}) == world_size


def test_class_balanced_rejects_bad_arguments_and_is_built_by_name():
    labels = _long_tailed_labels()
    with pytest.raises(SamplerError, match="batch_size must be >= 1"):
        ClassBalancedBatchSampler(labels, batch_size=0)
    with pytest.raises(SamplerError, match=r"q must be in \[0, 1\]"):
        ClassBalancedBatchSampler(labels, q=2.0)
    with pytest.raises(SamplerError, match="rank"):
        ClassBalancedBatchSampler(labels, rank=1)
    with pytest.raises(SamplerError, match="non-empty"):
        ClassBalancedBatchSampler(torch.tensor([], dtype=torch.long))
    sampler = build(
        "class_balanced", labels=labels, batch_size=4, batches_per_epoch=3, seed=0, rank=0, world_size=1
    )
    assert isinstance(sampler, ClassBalancedBatchSampler) and len(list(sampler)) == 3
