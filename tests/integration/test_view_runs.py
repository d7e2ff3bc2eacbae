"""Runs on random views (``views`` in params): what the loss receives per batch, and the config's checks."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

import common.engine.trainer as trainer
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
    # each view comes from its own image: it is closer to that image than the average other image is
    own = (first - train.images[batch]).pow(2).mean(dim=(1, 2, 3))
    assert float(own.mean()) < float((first - train.images[batch].roll(1, 0)).pow(2).mean())


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
