"""The m-per-class sampler, by its invariants."""

import pytest
import torch

from common.samplers import SamplerError, build
from common.samplers.m_per_class import MPerClassBatchSampler


def _labels(num_classes: int = 12, per_class: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.arange(num_classes).repeat_interleave(per_class)[
        torch.randperm(num_classes * per_class, generator=generator)
    ]


def test_every_batch_has_p_classes_of_m_samples():
    labels = _labels()
    sampler = MPerClassBatchSampler(
        labels, classes_per_batch=4, samples_per_class=3, batches_per_epoch=25, seed=1
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 25
    for batch in batches:
        assert len(batch) == sampler.batch_size == 12
        assert len(set(batch)) == 12, "a sample appears twice in a batch"
        classes, counts = torch.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and counts.tolist() == [3, 3, 3, 3]


def test_a_class_of_exactly_samples_per_class_gives_each_of_its_samples_once_a_batch():
    labels = torch.cat([torch.full((3,), 5), _labels(num_classes=5, per_class=7)])  # class 5: 3 samples
    sampler = MPerClassBatchSampler(
        labels, classes_per_batch=3, samples_per_class=3, batches_per_epoch=40, seed=2
    )
    small_class = [sorted(i for i in batch if labels[i] == 5) for batch in sampler]
    holding = [indices for indices in small_class if indices]
    assert len(holding) >= 10, "too few batches drew the small class to test it"
    assert all(indices == [0, 1, 2] for indices in holding)


def test_a_class_smaller_than_samples_per_class_is_refused_naming_it():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    with pytest.raises(SamplerError, match="samples_per_class is 4, but class 1 has 2 samples"):
        MPerClassBatchSampler(labels, classes_per_batch=3, samples_per_class=4, batches_per_epoch=5)
    MPerClassBatchSampler(labels, classes_per_batch=3, samples_per_class=2, batches_per_epoch=5)


def test_a_batch_of_one_class_is_refused():
    with pytest.raises(SamplerError, match="classes_per_batch must be at least 2"):
        MPerClassBatchSampler(_labels(), classes_per_batch=1, samples_per_class=3)


def test_epochs_are_reproducible_and_differ():
    labels = _labels()
    a = MPerClassBatchSampler(labels, 4, 3, batches_per_epoch=10, seed=3)
    b = MPerClassBatchSampler(labels, 4, 3, batches_per_epoch=10, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = MPerClassBatchSampler(labels, 4, 3, batches_per_epoch=10, seed=4)
    c.set_epoch(2)
    assert list(a) != list(c)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_draw_different_classes_and_together_form_the_global_batch(world_size):
    labels = _labels(num_classes=12)
    ranks = [
        MPerClassBatchSampler(labels, 4, 2, batches_per_epoch=15, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for step_batches in zip(*(list(s) for s in ranks), strict=True):
        class_sets = [set(labels[b].tolist()) for b in step_batches]
        assert all(len(s) == 4 for s in class_sets)
        union = set().union(*class_sets)
        assert len(union) == 4 * world_size, "two ranks drew the same class in one step"


def test_impossible_batches_fail_with_a_clear_message():
    labels = _labels(num_classes=5)
    with pytest.raises(SamplerError, match="needs 4 classes x 2 process"):
        MPerClassBatchSampler(labels, classes_per_batch=4, samples_per_class=2, world_size=2)
    with pytest.raises(SamplerError, match="samples_per_class must be >= 1"):
        MPerClassBatchSampler(labels, classes_per_batch=2, samples_per_class=0)
    with pytest.raises(SamplerError, match="rank"):
        MPerClassBatchSampler(labels, classes_per_batch=2, rank=2, world_size=2)


def test_built_by_name_from_the_registry():
    sampler = build(
        "m_per_class", labels=_labels(), classes_per_batch=3, samples_per_class=2, batches_per_epoch=4
    )
    assert isinstance(sampler, MPerClassBatchSampler) and len(list(sampler)) == 4


def test_every_registered_sampler_shares_the_epoch_base_and_the_engine_arguments():
    import common.samplers.m_per_class as m_per_class
    from common.samplers import SAMPLERS
    from common.samplers.base import EpochBatchSampler
    from common.samplers.base import SamplerError as BaseSamplerError

    assert m_per_class.SamplerError is BaseSamplerError is SamplerError
    assert SAMPLERS.names() == ["class_balanced", "episodic", "m_per_class", "shuffle"]
    engine_args = {"labels", "seed", "rank", "world_size", "batches_per_epoch"}
    for name in SAMPLERS.names():
        assert issubclass(SAMPLERS.get(name), EpochBatchSampler)
        assert engine_args <= set(SAMPLERS.accepted_params(name)), name
        sampler = build(name, labels=_labels(num_classes=16, per_class=16), batches_per_epoch=3, seed=2)
        sampler.set_epoch(4)
        assert len(sampler) == len(list(sampler)) == 3 and list(sampler) == list(sampler)
