"""Classification runs through the engine: SAM's two passes against a step written by hand, the classifier
head and the class counts a run's loss receives (synthetic tensors), and the long-tailed training set that
``load_run_data`` builds from the prepared Fashion-MNIST."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

import common.engine.classification as classification
from common import losses, models
from common.config import RunConfig, resolve_runs
from common.data.transforms import long_tailed_counts, noisy_labels
from common.engine.evaluation import SplitTensors
from common.engine.trainer import fit_and_evaluate
from common.models.classifiers import Classifier, CosineLinear
from common.runner import PREPARED_ROOT, load_run_data
from common.samplers.shuffle import ShuffleBatchSampler
from tests.conftest import REPO
from tests.unit.test_classification_engine import PAPER, classification_params, classification_run

SAM_METHODS = {"sam": {"optimizer": {"name": "sam", "base": "sgd", "rho": 0.05}}}


def _synthetic(train_counts: list[int], test_classes: int, test_per_class: int = 4, seed: int = 0):
    """Standardised-looking 28x28 images whose mean depends on the class."""
    g = torch.Generator().manual_seed(seed)

    def split(labels: torch.Tensor) -> SplitTensors:
        images = torch.randn(len(labels), 1, 28, 28, generator=g) + labels.float().view(-1, 1, 1, 1) * 0.3
        return SplitTensors(images, labels)

    train = torch.cat([torch.full((n,), c) for c, n in enumerate(train_counts)])
    test = torch.arange(test_classes).repeat_interleave(test_per_class)
    return split(train), split(test)


def _fit(run: RunConfig, train: SplitTensors, test: SplitTensors, tmp_path: Path, monkeypatch):
    """``fit_and_evaluate`` on one CPU process; returns the result and the trained model and criterion that
    reached the evaluation."""
    seen = {}
    evaluate = classification.evaluate_classifier

    def spy(run, model, criterion, device, train, test, corrupted=None):
        seen["model"], seen["criterion"] = copy.deepcopy(model), criterion
        return evaluate(run, model, criterion, device, train, test, corrupted)

    monkeypatch.setattr(classification, "evaluate_classifier", spy)
    result = fit_and_evaluate(run, train, test, tmp_path / "checkpoints", Accelerator(cpu=True))
    return result, seen["model"], seen["criterion"]


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_one_sam_step_of_the_engine_is_the_sam_step_written_by_hand(tmp_path, monkeypatch):
    run = classification_run(tmp_path, methods=SAM_METHODS, varies=["optimizer"])
    assert run.optimizer.name == "sam" and run.epochs == run.batches_per_epoch == 1 and run.augment == "none"
    kwargs = run.optimizer.kwargs
    rho, lr, weight_decay = kwargs["rho"], kwargs["lr"], kwargs["weight_decay"]
    train, test = _synthetic([8, 8, 8, 8], test_classes=4)
    _, trained, _ = _fit(run, train, test, tmp_path, monkeypatch)

    # the same initial weights and the same batch, by hand
    set_seed(run.seed)
    model = Classifier(models.build(run.model.name, **run.model.kwargs), 4, "linear")
    sampler = ShuffleBatchSampler(train.labels, run.sampler.kwargs["batch_size"], 1, seed=run.seed)
    sampler.set_epoch(1)
    [batch] = list(sampler)
    x, y = train.images[batch], train.labels[batch]
    params = list(model.parameters())
    w = [p.detach().clone() for p in params]
    model.train()
    g = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    norm = torch.sqrt(sum((gi * gi).sum() for gi in g))
    after_first_pass = [(m.running_mean.clone(), m.running_var.clone()) for m in _batch_norms(model)]
    with torch.no_grad():
        for p, wi, gi in zip(params, w, g, strict=True):
            p.copy_(wi + rho * gi / norm)
    g_sam = torch.autograd.grad(F.cross_entropy(model(x), y), params)  # batch statistics, at w + e
    with torch.no_grad():
        for m, (mean, var) in zip(_batch_norms(model), after_first_pass, strict=True):
            m.running_mean.copy_(mean)  # the second pass does not count
            m.running_var.copy_(var)
        for p, wi, gi in zip(params, w, g_sam, strict=True):
            p.copy_(wi - lr * (gi + weight_decay * wi))  # SGD's first step (momentum buffer = gradient)
    sgd_only = [wi - lr * (gi + weight_decay * wi) for wi, gi in zip(w, g, strict=True)]

    got = list(trained.parameters())
    assert len(got) == len(params)
    gap_to_sgd = max(float((a.detach() - b).abs().max()) for a, b in zip(params, sgd_only, strict=True))
    assert gap_to_sgd > 1e-3, "the test cannot tell SAM from plain SGD"
    for a, b in zip(got, params, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), float((a - b).abs().max())
    for a, b in zip(_batch_norms(trained), _batch_norms(model), strict=True):
        assert torch.allclose(a.running_mean, b.running_mean, rtol=0, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, rtol=0, atol=1e-6)
        assert a.momentum == b.momentum


def test_a_classification_run_puts_a_head_for_the_training_classes_and_measures_it(tmp_path, monkeypatch):
    run = classification_run(tmp_path, train={"eval": {"calibration_bins": 5}})
    train, test = _synthetic([6, 6, 6, 6, 6], test_classes=3)  # the test split lacks two training classes
    result, trained, _ = _fit(run, train, test, tmp_path, monkeypatch)
    assert isinstance(trained, Classifier) and trained.kind == "linear"
    assert isinstance(trained.classifier, nn.Linear)
    assert trained.classifier.out_features == 5 and trained.classifier.in_features == 16
    assert set(result.metrics) == {"top1_accuracy", "balanced_accuracy", "nll", "ece"}
    assert 0 <= result.metrics["top1_accuracy"] <= 1
    assert len(result.reliability["count"]) == 5 and sum(result.reliability["count"]) == len(test.labels)
    assert result.similarity_histograms == {}


def test_the_training_class_counts_reach_an_ldam_loss_on_a_cosine_classifier(tmp_path, monkeypatch):
    run = classification_run(
        tmp_path,
        train={"classifier": "cosine", "loss": {"name": "ldam", "max_m": 0.5, "s": 10}},
    )
    counts = [12, 8, 5, 3]
    train, test = _synthetic(counts, test_classes=4)
    built = []
    build = losses.build

    def spy(name, /, **hyperparams):
        built.append((name, hyperparams))
        return build(name, **hyperparams)

    monkeypatch.setattr(losses, "build", spy)
    _, trained, criterion = _fit(run, train, test, tmp_path, monkeypatch)
    assert [(name, kw.get("class_counts")) for name, kw in built] == [("ldam", counts)]
    smallest = min(counts) ** -0.25
    expected = torch.tensor([n**-0.25 / smallest * 0.5 for n in counts], dtype=torch.float64)
    assert torch.allclose(criterion.margins.cpu(), expected, atol=1e-12)
    assert isinstance(trained.classifier, CosineLinear) and trained.classifier.weight.shape[0] == 4


# -------------------------------------------------------------------- long tail on prepared Fashion-MNIST


def _prepared_root() -> Path | None:
    """``data/prepared`` of this checkout, else of the main checkout of its git repository (a worktree)."""
    candidates = [REPO / PREPARED_ROOT]
    try:
        common_dir = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        candidates.append(Path(common_dir).parent / PREPARED_ROOT)
    except (OSError, subprocess.CalledProcessError):
        pass
    return next((root for root in candidates if (root / "fashion_mnist").is_dir()), None)


@pytest.fixture(scope="module")
def prepared_root() -> Path:
    root = _prepared_root()
    if root is None:
        pytest.skip(
            f"no prepared Fashion-MNIST under {REPO / PREPARED_ROOT} (dvc repro prepare-fashion_mnist)"
        )
    return root


def _lt_runs(tmp_path: Path) -> dict[str, RunConfig]:
    datasets = {
        "fashion_mnist": {},
        "fashion_mnist_lt10": {"data": "fashion_mnist", "long_tail": {"imbalance_ratio": 10}},
        "fashion_mnist_lt10_noise40": {
            "data": "fashion_mnist",
            "long_tail": {"imbalance_ratio": 10},
            "label_noise": {"rate": 0.4},
        },
    }
    params = classification_params(
        tmp_path, datasets=datasets, profile={"train_limit": 1500, "eval": {"max_items": 200}}
    )
    return {run.dataset: run for run in resolve_runs(PAPER, params, "smoke")}


def _rows(images: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in images]


def test_a_long_tailed_run_keeps_the_exponential_profile_and_the_test_split(tmp_path, prepared_root):
    runs = _lt_runs(tmp_path)
    base_train, base_test = load_run_data(runs["fashion_mnist"], prepared_root)
    train, test = load_run_data(runs["fashion_mnist_lt10"], prepared_root)
    available = torch.bincount(base_train.labels, minlength=10)
    assert len(base_train.labels) == 1500 and len(available) == 10
    expected = long_tailed_counts(10, int(available.min()), 10)
    assert torch.bincount(train.labels, minlength=10).tolist() == expected
    assert expected[0] == int(available.min()) > expected[-1]  # a real tail, from the smallest class
    assert torch.equal(test.images, base_test.images) and torch.equal(test.labels, base_test.labels)
    assert train.clean_labels is None
    # the kept samples are samples of the (limited) training split, each once, with their own label
    label_of = dict(zip(_rows(base_train.images), base_train.labels.tolist(), strict=True))
    kept = _rows(train.images)
    assert len(set(kept)) == len(kept)
    assert [label_of[row] for row in kept] == train.labels.tolist()


def test_label_noise_applies_to_the_long_tailed_subset(tmp_path, prepared_root):
    runs = _lt_runs(tmp_path)
    clean, _ = load_run_data(runs["fashion_mnist_lt10"], prepared_root)
    noisy, _ = load_run_data(runs["fashion_mnist_lt10_noise40"], prepared_root)
    assert torch.equal(noisy.images, clean.images)
    assert torch.equal(noisy.clean_labels, clean.labels)
    assert torch.equal(noisy.labels, noisy_labels(clean.labels, 0.4, "symmetric", seed=0).labels)
    flipped = float((noisy.labels != clean.labels).double().mean())
    assert 0.3 < flipped < 0.5


# ------------------------------------------------------------------------------------ learning-rate schedule


def _scheduled_run(tmp_path: Path, schedule: dict) -> RunConfig:
    return classification_run(
        tmp_path, train={"lr_schedule": schedule}, profile={"epochs": 3, "batches_per_epoch": 2}
    )


def test_the_optimizer_steps_with_the_scheduled_learning_rate(tmp_path, monkeypatch):
    run = _scheduled_run(
        tmp_path, {"name": "step", "at": [0.3, 0.6], "factors": [0.5, 0.1], "warmup_epochs": 1}
    )
    base = run.optimizer.kwargs["lr"]
    used = []
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train, test = _synthetic([16, 16], test_classes=2)
    result, _, _ = _fit(run, train, test, tmp_path, monkeypatch)
    # epoch 1 warms up over its 2 steps; epoch 2 (after 0.3 x 3 = 1 epoch) x 0.5; epoch 3 (after 2) x 0.1
    assert used == pytest.approx([base / 2, base, base * 0.5, base * 0.5, base * 0.1, base * 0.1])
    assert [h["lr"] for h in result.history] == pytest.approx([base, base * 0.5, base * 0.1])


def test_a_scheduled_run_resumed_mid_way_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    run = _scheduled_run(tmp_path, {"name": "cosine"})
    train, test = _synthetic([16, 16], test_classes=2)
    whole, trained, _ = _fit(run, train, test, tmp_path / "whole", monkeypatch)

    class Interrupted(Exception):
        pass

    def stop_at_epoch_3(metrics, epoch):
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):  # epochs 1 and 2 are checkpointed
        fit_and_evaluate(
            run, train, test, tmp_path / "cut" / "checkpoints", Accelerator(cpu=True), stop_at_epoch_3
        )
    resumed, again, _ = _fit(run, train, test, tmp_path / "cut", monkeypatch)
    assert resumed.resumed_from_epoch == 2
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in whole.history]
    for a, b in zip(trained.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.metrics == whole.metrics


def test_a_channels_last_run_trains_in_that_format_to_the_default_runs_numbers(tmp_path, monkeypatch):
    default = classification_run(tmp_path / "a", profile={"epochs": 2, "batches_per_epoch": 2})
    fast = classification_run(
        tmp_path / "b", train={"channels_last": True}, profile={"epochs": 2, "batches_per_epoch": 2}
    )
    assert "channels_last" not in default.model_dump(), "a run that does not set it keeps its config hash"
    assert fast.model_dump()["channels_last"] is True
    train, test = _synthetic([12, 12, 12], test_classes=3)
    expected, reference, _ = _fit(default, train, test, tmp_path / "a", monkeypatch)
    result, trained, _ = _fit(fast, train, test, tmp_path / "b", monkeypatch)
    convolutions = [p for p in trained.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert not all(p.is_contiguous() for p in convolutions), "the format must differ from the default's"
    assert all(p.is_contiguous() for p in reference.parameters())
    # another kernel, other rounding: the same training up to it
    for a, b in zip(expected.history, result.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    for a, b in zip(reference.parameters(), trained.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
