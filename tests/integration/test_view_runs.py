"""Runs on random views (``views`` in params): what the loss receives per batch, and the config's checks."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

import common.engine.trainer as trainer
from common.data.views import random_view
from common.params import ConfigError
from common.samplers.shuffle import ShuffleBatchSampler
from tests.integration.test_classification_runs import _synthetic
from tests.unit.test_classification_engine import classification_run

SUPCON = {"supcon": {"loss": {"name": "supcon"}}}


def _batches_seen(run, train, test, tmp_path, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen = []
    original = trainer.batch_loss

    def spy(model, criterion, sampler, images, labels, reads_logits, accelerator):
        seen.append((images.clone(), labels.clone()))
        return original(model, criterion, sampler, images, labels, reads_logits, accelerator)

    monkeypatch.setattr(trainer, "batch_loss", spy)
    trainer.fit_and_evaluate(run, train, test, tmp_path / "checkpoints", Accelerator(cpu=True))
    return seen


@pytest.mark.parametrize("labels", ["class", "instance"])
def test_the_loss_gets_two_views_of_each_image_labelled_by_class_or_by_image(labels, tmp_path, monkeypatch):
    views = {"count": 2, "strength": 1.0, "labels": labels}
    run = classification_run(tmp_path, train={"views": views}, methods=SUPCON)
    train, test = _synthetic([10, 10, 10], test_classes=3)
    [(images, got)] = _batches_seen(run, train, test, tmp_path, monkeypatch)

    sampler = ShuffleBatchSampler(train.labels, run.sampler.kwargs["batch_size"], 1, seed=run.seed)
    sampler.set_epoch(1)
    [batch] = list(sampler)
    n = len(batch)
    assert images.shape == (2 * n, *train.images.shape[1:])
    expected = torch.as_tensor(batch) if labels == "instance" else train.labels[batch]
    assert torch.equal(got, torch.cat([expected, expected]))
    first, second = images[:n], images[n:]
    assert not torch.allclose(first, second), "two different views"
    # each view is a random view of its own image, drawn from the epoch's augmentation generator
    generator = trainer.augmentation_generator(run.seed, 1, 0)
    assert torch.equal(first, random_view(train.images[batch], 1.0, generator))
    assert torch.equal(second, random_view(train.images[batch], 1.0, generator))


def test_one_view_is_augmentation_with_the_images_labels(tmp_path, monkeypatch):
    views = {"count": 1, "strength": 0.5}
    run = classification_run(tmp_path, train={"views": views})  # cross-entropy
    train, test = _synthetic([10, 10, 10], test_classes=3)
    [(images, got)] = _batches_seen(run, train, test, tmp_path, monkeypatch)
    assert images.shape[0] == got.shape[0] == run.sampler.kwargs["batch_size"]
    assert set(got.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("train", "methods", "message"),
    [
        ({"views": {"count": 2}, "augment": "shift"}, SUPCON, "views and augment 'shift' exclude each other"),
        ({"views": {"count": 1, "labels": "instance"}}, SUPCON, "labels 'instance' needs count 2"),
        (
            {"views": {"count": 2, "labels": "instance"}},
            None,
            "labels 'instance' give every image its own label",
        ),
        ({"views": {"strength": 1.5}}, SUPCON, "strength"),
    ],
)
def test_bad_views_are_refused_before_training(train, methods, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        classification_run(tmp_path, train=train, methods=methods)


# ------------------------------------------------------------------- probe and corruptions, through the runner


def test_corrupted_test_sets_are_the_corruptions_of_a_fixed_test_subset(tmp_path, tiny_prepared):
    from common.data.corruptions import corrupt
    from common.engine.trainer import to_model_input
    from common.runner import _load_split, _pixel_stats, load_corrupted_tests, load_run_data

    spec = {"kinds": ["contrast", "gaussian_noise"], "severities": [2, 5], "max_items": 40, "seed": 3}
    run = classification_run(tmp_path, train={"eval": {"corruptions": spec}})
    corrupted = load_corrupted_tests(run, tiny_prepared)
    assert sorted(corrupted.images) == [
        "contrast_s2",
        "contrast_s5",
        "gaussian_noise_s2",
        "gaussian_noise_s5",
    ]
    _, test = load_run_data(run, tiny_prepared)
    raw, labels = _load_split(tiny_prepared / "fashion_mnist", "test")
    # the corrupted images are a subset of the test set: find them by their clean, standardized version
    mean, std = _pixel_stats(tiny_prepared / "fashion_mnist", run.train_limit)
    assert len(corrupted.labels) == 40
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:40].sort().values
    assert torch.equal(corrupted.labels, labels[keep])
    expected = to_model_input(corrupt(raw[keep], "gaussian_noise", 5, seed=3), run.image_size, mean, std)
    assert torch.equal(corrupted.images["gaussian_noise_s5"], expected)
    assert len(test.labels) == len(labels), "the clean test set is untouched"
    trial = run.model_copy(update={"holdout": {"share": 0.2, "seed": 0}})
    assert load_corrupted_tests(trial, tiny_prepared) is None, "a tuning trial is scored on training data"


def test_a_probed_run_on_views_records_the_representation_and_corruption_metrics(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    from pathlib import Path

    from common.records import read_paper_records
    from common.runner import run_paper
    from tests.integration.test_runner import tiny_params

    def edit(params):
        section = params["multi_similarity"]
        section["train"]["augment"] = "none"
        section["train"]["views"] = {"count": 2, "strength": 0.5}
        section["train"]["eval"] = {
            "probe": {"knn_k": 5},
            "corruptions": {"kinds": ["contrast"], "severities": [1, 5], "max_items": 50},
        }

    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path, edit)
    run_paper("multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared)
    records = read_paper_records(Path("records"), "multi_similarity")
    assert records
    for record in records:
        metrics = record["metrics"]
        for key in ("top1_accuracy", "knn_accuracy", "alignment", "uniformity", "precision_at_1"):
            assert key in metrics, key
        assert 0 <= metrics["top1_accuracy"] <= 1 and metrics["alignment"] >= 0 and metrics["uniformity"] <= 0
        per_set = [metrics["accuracy_contrast_s1"], metrics["accuracy_contrast_s5"]]
        assert metrics["corruption_accuracy"] == pytest.approx(sum(per_set) / 2)


def test_within_a_seed_every_method_draws_the_same_views_of_the_same_batches(tmp_path, monkeypatch):
    """Paired seeds: SupCon (no parameters of its own) and cross-entropy (a classifier whose initialization
    draws from the global generator) see the same images, and the first view of each is the same."""
    views = {"count": 2, "strength": 1.0, "labels": "class"}
    train, test = _synthetic([10, 10, 10], test_classes=3)
    supcon = classification_run(tmp_path / "a", train={"views": views}, methods=SUPCON)
    [(supcon_images, _)] = _batches_seen(supcon, train, test, tmp_path / "a", monkeypatch)
    one_view = classification_run(tmp_path / "b", train={"views": {**views, "count": 1}})  # cross-entropy
    [(ce_images, _)] = _batches_seen(one_view, train, test, tmp_path / "b", monkeypatch)
    n = ce_images.shape[0]
    assert torch.equal(supcon_images[:n], ce_images)
