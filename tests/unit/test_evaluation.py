"""The engine's evaluation pieces: few-shot episodes, the one-shot runs, the dominant sub-center shares,
and the loss arguments the engine supplies."""

from __future__ import annotations

import pytest
import torch

from common.config import engine_loss_kwargs
from common.engine import few_shot
from common.engine.evaluation import dominant_subcenter_shares, optional_modules, similarity_histograms
from common.engine.few_shot import episode_accuracies, few_shot_metrics, one_shot_run_error
from common.losses.prototypical import prototype_logits
from common.samplers.episodic import EpisodicBatchSampler


def _clusters(num_classes: int, per_class: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centres = torch.randn(num_classes, 16, generator=g) * 5
    return centres[labels] + spread * torch.randn(len(labels), 16, generator=g), labels


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_separated_classes_are_always_right_and_noise_is_at_chance(distance):
    x, labels = _clusters(12, 20, spread=0.01)
    assert episode_accuracies(x, labels, 5, 1, 15, 50, distance).min() == 1.0
    noise = torch.randn_like(x)
    accuracy = float(episode_accuracies(noise, labels, 5, 1, 15, 400, distance).mean())
    assert abs(accuracy - 0.2) < 0.03


def _episode_loop(embeddings, labels, ways, shots, queries, episodes, distance):
    """Oracle: one episode at a time, the sampler's episodes, the loss's prototype scores."""
    sampler = EpisodicBatchSampler(
        labels, n_way=ways, k_shot=shots, q_query=queries, batches_per_epoch=episodes, seed=0
    )
    accuracies = []
    for episode in sampler:
        support, query = sampler.split_batch(torch.tensor(episode))
        logits, classes = prototype_logits(embeddings[query], embeddings[support], labels[support], distance)
        accuracies.append((classes[logits.argmax(dim=1)] == labels[query]).double().mean())
    return torch.stack(accuracies)


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
@pytest.mark.parametrize(("ways", "shots"), [(5, 1), (5, 5), (20, 1)])
def test_batched_episodes_score_exactly_as_one_episode_at_a_time(distance, ways, shots, monkeypatch):
    monkeypatch.setattr(few_shot, "EPISODE_CHUNK", 7)  # several chunks, the last one short
    x, labels = _clusters(30, 20, spread=6.0)
    batched = episode_accuracies(x, labels, ways, shots, 15, 40, distance)
    looped = _episode_loop(x, labels, ways, shots, 15, 40, distance)
    assert 0.3 < float(looped.mean()) < 0.99, "errors to get right, and wrong"
    assert torch.equal(batched, looped)


def test_episodes_are_the_same_for_every_call_and_the_interval_is_1_96_standard_errors():
    x, labels = _clusters(12, 20, spread=4.0)
    a = episode_accuracies(x, labels, 5, 1, 5, 100, "squared_euclidean")
    b = episode_accuracies(x, labels, 5, 1, 5, 100, "squared_euclidean")
    assert torch.equal(a, b) and 0.2 < float(a.mean()) < 1.0
    metrics = few_shot_metrics(x, labels, (5,), (1, 5), 5, 100, "squared_euclidean")
    assert metrics["fewshot_5way_1shot"] == pytest.approx(float(a.mean()))
    assert metrics["fewshot_5way_1shot_ci95"] == pytest.approx(1.96 * float(a.std()) / 10)
    assert metrics["fewshot_5way_5shot"] > metrics["fewshot_5way_1shot"], "more shots, better prototypes"


def test_one_shot_runs_count_a_test_image_wrong_unless_nearest_to_its_target():
    g = torch.Generator().manual_seed(0)
    runs, is_test, items, targets, rows = [], [], [], [], []
    for run in range(3):
        classes = torch.randn(4, 8, generator=g)
        perm = torch.randperm(4, generator=g)
        for item in range(4):  # training images: one per class
            runs.append(run), is_test.append(False), items.append(item), targets.append(item)
            rows.append(classes[item])
        for item in range(4):  # test image `item` belongs to class perm[item]
            runs.append(run), is_test.append(True), items.append(item), targets.append(int(perm[item]))
            rows.append(classes[perm[item]] + 0.01 * torch.randn(8, generator=g))
    args = (torch.tensor(runs), torch.tensor(is_test), torch.tensor(items), torch.tensor(targets))
    x = torch.stack(rows)
    assert one_shot_run_error(x, *args, "squared_euclidean") == 0.0
    wrong = args[3].clone()
    wrong[args[1]] = (wrong[args[1]] + 1) % 4  # every test target moved to another class
    assert one_shot_run_error(x, *args[:3], wrong, "squared_euclidean") == 1.0


def test_dominant_subcenter_shares_against_a_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (200,), generator=g)
    clean = torch.where(torch.rand(200, generator=g) < 0.7, labels, torch.randint(0, 6, (200,), generator=g))
    nearest = torch.randint(0, 3, (200,), generator=g)
    got = dominant_subcenter_shares(nearest, labels, clean, 3)
    dominant = {}
    for c in range(6):
        counts = [int(((labels == c) & (nearest == k)).sum()) for k in range(3)]
        dominant[c] = counts.index(max(counts))
    inside = [int(nearest[i]) == dominant[int(labels[i])] for i in range(200)]
    is_clean = [bool(labels[i] == clean[i]) for i in range(200)]
    expected_clean = sum(a for a, c in zip(inside, is_clean, strict=True) if c) / sum(is_clean)
    expected_noisy = sum(a for a, c in zip(inside, is_clean, strict=True) if not c) / (200 - sum(is_clean))
    assert got == pytest.approx(
        {"dominant_share_clean": expected_clean, "dominant_share_noisy": expected_noisy}
    )
    assert "dominant_share_noisy" not in dominant_subcenter_shares(nearest, labels, labels, 3)


def test_similarity_statistics_are_those_of_the_positive_and_negative_pairs():
    x, labels = _clusters(3, 5, spread=1.0)
    h = similarity_histograms(x, labels)
    e = torch.nn.functional.normalize(x, dim=1)
    sim = e @ e.T
    same = labels[:, None] == labels[None, :]
    positive = sim[same & ~torch.eye(15, dtype=torch.bool)]
    assert h["positive_mean"][0] == pytest.approx(float(positive.mean()), abs=1e-6)
    assert h["negative_std"][0] == pytest.approx(float(sim[~same].std()), abs=1e-6)


class _Run:
    def __init__(self, loss: str) -> None:
        self.loss = type("Loss", (), {"name": loss})()


class _Model:
    embedding_dim = 32


def test_the_engine_gives_heads_their_classes_imbalance_losses_their_counts_and_pair_losses_nothing():
    counts = [5, 3, 1]
    assert engine_loss_kwargs(_Run("arcface"), _Model(), counts) == {"num_classes": 3, "embedding_dim": 32}
    assert engine_loss_kwargs(_Run("ldam"), _Model(), counts) == {"class_counts": counts}
    assert engine_loss_kwargs(_Run("cross_entropy"), _Model(), counts) == {"class_counts": counts}
    assert engine_loss_kwargs(_Run("circle"), _Model(), counts) == {}


def test_optional_evaluations_are_named_only_when_asked_for():
    from common.config import resolve_runs

    ms = resolve_runs("multi_similarity", "params.yaml", "smoke")[0]
    arcface = resolve_runs("arcface", "params.yaml", "smoke")[0]
    assert optional_modules(ms) == []
    assert optional_modules(arcface) == ["common.metrics.verification"]
