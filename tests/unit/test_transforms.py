"""Long-tailed subsets and synthetic label noise (common.data.transforms)."""

import pytest
import torch

from common.data.transforms import (
    CIFAR10_ASYMMETRIC,
    holdout_indices,
    long_tailed_counts,
    long_tailed_indices,
    noisy_labels,
)


def _balanced(num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


# --------------------------------------------------------------------------------------------
# long tail
# --------------------------------------------------------------------------------------------

# Cao et al.'s imbalance_cifar.py on CIFAR-10 (5000 a class); the totals are the CIFAR-10-LT sizes in
# the literature (12,406 at ratio 100, 20,431 at ratio 10)
CIFAR10_LT = {
    100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    10: [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
}


@pytest.mark.parametrize("ratio", [10, 100])
def test_exponential_profile_keeps_the_exact_cifar10_lt_counts(ratio):
    labels = _balanced(10, 5000)
    indices, counts = long_tailed_indices(labels, ratio, seed=0)
    assert counts.tolist() == CIFAR10_LT[ratio]
    assert torch.bincount(labels[indices], minlength=10).tolist() == CIFAR10_LT[ratio]
    assert int(counts.max()) / int(counts.min()) == ratio
    assert len(indices) == sum(CIFAR10_LT[ratio]) == {100: 12406, 10: 20431}[ratio]
    assert torch.equal(indices, torch.unique(indices)), "indices are not increasing and distinct"


def test_exponential_profile_matches_the_cifar100_lt_sizes():
    # CIFAR-100-LT (500 a class): 10,847 images at ratio 100 and 19,573 at ratio 10
    assert sum(long_tailed_counts(100, 500, 100)) == 10847
    assert sum(long_tailed_counts(100, 500, 10)) == 19573
    counts = long_tailed_counts(100, 500, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)), "counts are not non-increasing"


def test_step_profile():
    labels = _balanced(6, 40)
    _, counts = long_tailed_indices(labels, 10, profile="step")
    assert counts.tolist() == [40, 40, 40, 4, 4, 4]
    assert long_tailed_counts(5, 100, 4, profile="step", minority_fraction=0.4) == [100, 100, 100, 25, 25]


def test_long_tail_orders_classes_by_label_and_is_deterministic_by_seed():
    labels = _balanced(3, 50) * 7 + 3  # labels 3, 10, 17
    a = long_tailed_indices(labels, 5, seed=1)
    assert a.counts.tolist() == [50, 22, 10]
    assert torch.bincount(labels[a.indices]).tolist()[3::7] == [50, 22, 10]
    assert torch.equal(a.indices, long_tailed_indices(labels, 5, seed=1).indices)
    assert not torch.equal(a.indices, long_tailed_indices(labels, 5, seed=2).indices)


def test_n_max_defaults_to_the_smallest_class_and_bad_arguments_fail_clearly():
    labels = torch.cat([torch.zeros(30), torch.ones(20), torch.full((25,), 2)]).long()
    assert long_tailed_indices(labels, 4).counts.tolist() == [20, 10, 5]
    with pytest.raises(ValueError, match="class 1 needs 30 samples but has 20"):
        long_tailed_indices(labels, 1, n_max=30)
    with pytest.raises(ValueError, match="imbalance_ratio must be"):
        long_tailed_indices(labels, 0.5)
    with pytest.raises(ValueError, match="profile must be"):
        long_tailed_indices(labels, 2, profile="linear")
    with pytest.raises(ValueError, match="smallest class with 0 samples"):
        long_tailed_indices(labels, 100)
    with pytest.raises(ValueError, match="integers"):
        long_tailed_indices(torch.rand(10), 2)


# --------------------------------------------------------------------------------------------
# label noise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_symmetric_noise_rate_is_realised_and_never_keeps_the_class(rate):
    labels = _balanced(10, 2000)
    noisy, flipped = noisy_labels(labels, rate, num_classes=10, seed=0)
    n = len(labels)
    tolerance = 4 * (rate * (1 - rate) / n) ** 0.5
    assert abs(float(flipped.double().mean()) - rate) < tolerance
    assert torch.equal(flipped, noisy != labels), "a 'flipped' sample kept its class"
    # the new class is uniform over the other 9: chi-square over the 90 (true, noisy) cells, 89 dof
    pairs = torch.bincount(labels[flipped] * 10 + noisy[flipped], minlength=100).view(10, 10).double()
    assert pairs.diagonal().sum() == 0
    off = pairs[~torch.eye(10, dtype=torch.bool)]
    expected = off.sum() / 90
    assert float(((off - expected) ** 2 / expected).sum()) < 124.8  # P(chi2_89 > 124.8) ~ 0.007
    assert noisy.dtype == torch.long


def test_asymmetric_noise_follows_the_mapping():
    labels = _balanced(10, 1000)
    noisy, flipped = noisy_labels(labels, 0.4, kind="asymmetric", seed=1, transition=CIFAR10_ASYMMETRIC)
    for source in range(10):
        members = labels == source
        if source in CIFAR10_ASYMMETRIC:
            changed = noisy[members & flipped]
            assert (changed == CIFAR10_ASYMMETRIC[source]).all()
            assert abs(float(flipped[members].double().mean()) - 0.4) < 4 * (0.24 / 1000) ** 0.5
        else:
            assert not flipped[members].any(), f"class {source} is not in the mapping but flipped"
    # default mapping: c -> c + 1 mod C
    noisy, flipped = noisy_labels(labels, 0.3, kind="asymmetric", seed=2)
    assert torch.equal(noisy[flipped], (labels[flipped] + 1) % 10)
    assert abs(float(flipped.double().mean()) - 0.3) < 4 * (0.21 / 10000) ** 0.5


def test_noise_is_deterministic_by_seed_and_edge_rates():
    labels = _balanced(5, 200)
    a = noisy_labels(labels, 0.3, seed=7)
    b = noisy_labels(labels, 0.3, seed=7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.flipped, b.flipped)
    assert not torch.equal(a.labels, noisy_labels(labels, 0.3, seed=8).labels)
    assert not noisy_labels(labels, 0.0).flipped.any()
    assert noisy_labels(labels, 1.0).flipped.all()
    assert noisy_labels(labels, 1.0, kind="asymmetric").flipped.all()


def test_noise_rejects_bad_arguments():
    labels = _balanced(4, 10)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        noisy_labels(labels, 1.5)
    with pytest.raises(ValueError, match="kind must be"):
        noisy_labels(labels, 0.1, kind="pairwise")
    with pytest.raises(ValueError, match="num_classes=3"):
        noisy_labels(labels, 0.1, num_classes=3)
    with pytest.raises(ValueError, match="maps class 2 to itself"):
        noisy_labels(labels, 0.1, kind="asymmetric", transition={2: 2})
    with pytest.raises(ValueError, match="target class not in"):
        noisy_labels(labels, 0.1, kind="asymmetric", transition={1: 9})
    with pytest.raises(ValueError, match="for kind=.asymmetric. only"):
        noisy_labels(labels, 0.1, transition={1: 2})
    with pytest.raises(ValueError, match="num_classes >= 2"):
        noisy_labels(torch.zeros(5, dtype=torch.long), 0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_holdout_by_classes_holds_out_whole_classes(seed):
    labels = torch.arange(30).repeat_interleave(4)[
        torch.randperm(120, generator=torch.Generator().manual_seed(9))
    ]
    kept, held = holdout_indices(labels, 0.2, "classes", seed=seed)
    assert torch.equal(torch.sort(torch.cat([kept, held])).values, torch.arange(120)), "a partition"
    assert len(torch.unique(labels[held])) == 6
    assert not torch.isin(labels[held], labels[kept]).any(), "no class on both sides"
    again = holdout_indices(labels, 0.2, "classes", seed=seed)
    assert torch.equal(again[1], held), "deterministic by seed"


def test_holdout_by_samples_takes_a_share_of_every_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    kept, held = holdout_indices(labels, 0.3, "samples", seed=0)
    assert torch.bincount(labels[held]).tolist() == [3, 2, 1]  # round(0.3 n), at least 1, at most n - 1
    assert torch.bincount(labels[kept]).tolist() == [7, 3, 1]


def test_holdout_refuses_what_would_leave_too_little():
    with pytest.raises(ValueError, match="leaves fewer than 2"):
        holdout_indices(torch.tensor([0, 1, 2]), 0.5, "classes")
    with pytest.raises(ValueError, match="needs 2 a class"):
        holdout_indices(torch.tensor([0, 0, 1]), 0.5, "samples")
