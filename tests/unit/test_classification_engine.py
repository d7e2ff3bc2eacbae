"""Classification in the engine, by its contracts: the shuffle sampler, the linear / cosine classifier,
sharpness on a quadratic with a known Hessian, the classifier's evaluation against the metrics computed
by hand, SAM's helpers in the trainer, and the params checks of classification runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from common import losses
from common.config import RunConfig, resolve_runs
from common.engine.classification import evaluate_classifier
from common.engine.evaluation import SplitTensors
from common.engine.trainer import frozen_batch_norm_statistics, sam_inside
from common.metrics.classification import expected_calibration_error, reliability_diagram_bins
from common.metrics.sharpness import hessian_top_eigenvalue, rho_sharpness
from common.models.classifiers import Classifier, CosineLinear
from common.params import ConfigError
from common.samplers import SamplerError
from common.samplers import build as build_sampler
from common.samplers.shuffle import ShuffleBatchSampler

PAPER = "clf_test"


# --------------------------------------------------------------------------------------------- params


def classification_params(
    tmp_path: Path,
    train: dict | None = None,
    methods: dict | None = None,
    datasets: dict | None = None,
    varies: list[str] | None = None,
    profile: dict | None = None,
) -> Path:
    """A params.yaml with one small classification paper (``clf_test``): conv4, cross-entropy, SGD, the
    shuffle sampler, no augmentation; ``train`` etc. are merged over (replace) those defaults."""
    section = {
        "train": {
            "model": {"name": "conv4", "embedding_dim": 16, "hidden_channels": 8},
            "loss": {"name": "cross_entropy"},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005},
            "sampler": {"name": "shuffle", "batch_size": 16},
            "augment": "none",
            "image_size": 28,
            **(train or {}),
        },
        "datasets": datasets or {"fashion_mnist": {}},
        "methods": methods or {"ce": {"label": "CE"}},
        "profiles": {"smoke": {"seeds": [0], "epochs": 1, "batches_per_epoch": 1, **(profile or {})}},
    }
    if varies is not None:
        section["varies"] = varies
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "smoke", PAPER: section}))
    return path


def classification_run(tmp_path: Path, **kwargs) -> RunConfig:
    [run] = resolve_runs(PAPER, classification_params(tmp_path, **kwargs), "smoke")
    return run


# -------------------------------------------------------------------------------------- shuffle sampler


def _stream(sampler: ShuffleBatchSampler) -> list[int]:
    return [i for batch in sampler for i in batch]


@pytest.mark.parametrize(("n", "batch_size"), [(23, 5), (20, 4), (7, 7), (9, 2)])
def test_shuffle_batches_are_distinct_and_the_first_pass_draws_every_sample_once(n, batch_size):
    batches_per_epoch = 3 * math.ceil(n / batch_size) + 1  # several passes, crossing pass boundaries
    sampler = ShuffleBatchSampler(
        list(range(n)), batch_size=batch_size, batches_per_epoch=batches_per_epoch, seed=4
    )
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == batches_per_epoch
    for batch in batches:
        assert len(batch) == batch_size and len(set(batch)) == batch_size, batch
        assert all(0 <= i < n for i in batch)
    first_pass = [i for batch in batches[: math.ceil(n / batch_size)] for i in batch]
    assert sorted(first_pass[:n]) == list(range(n)), "a sample repeats before every sample was drawn"
    assert set(first_pass) == set(range(n))


def test_an_epoch_shorter_than_a_pass_is_a_subset_without_repeats():
    sampler = ShuffleBatchSampler(list(range(50)), batch_size=6, batches_per_epoch=4, seed=0)
    drawn = _stream(sampler)
    assert len(drawn) == 24 and len(set(drawn)) == 24


def test_every_pass_not_only_the_first_draws_each_sample_once():
    n, batch_size = 10, 4
    for seed in range(5):
        sampler = ShuffleBatchSampler(list(range(n)), batch_size=batch_size, batches_per_epoch=5, seed=seed)
        sampler.set_epoch(1)
        drawn = _stream(sampler)  # 20 draws: exactly two passes over 10 samples
        assert torch.bincount(torch.tensor(drawn), minlength=n).tolist() == [2] * n, (seed, drawn)


def test_shuffle_is_reproducible_per_seed_and_epoch_and_differs_across_epochs():
    labels = list(range(40))

    def epoch(seed: int, number: int, batches: int) -> list[list[int]]:
        sampler = ShuffleBatchSampler(labels, batch_size=8, batches_per_epoch=batches, seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    for batches in (4, 12):  # within the first pass, and over several
        assert epoch(1, 3, batches) == epoch(1, 3, batches)
        assert epoch(1, 3, batches) != epoch(1, 4, batches)
        assert epoch(1, 3, batches) != epoch(2, 3, batches)
    sampler = ShuffleBatchSampler(labels, batch_size=8, batches_per_epoch=6, seed=1)
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler), "iterating twice in one epoch must give the same batches"


@pytest.mark.parametrize(("n", "batch_size", "batches_per_epoch"), [(40, 6, 9), (17, 4, 7), (8, 4, 3)])
def test_two_ranks_split_the_global_batch_of_one_process_with_twice_the_batch(
    n, batch_size, batches_per_epoch
):
    labels = torch.arange(n) % 3

    def sampler(rank: int, world_size: int, size: int) -> list[list[int]]:
        s = ShuffleBatchSampler(labels, size, batches_per_epoch, seed=7, rank=rank, world_size=world_size)
        s.set_epoch(2)
        return list(s)

    rank0, rank1 = sampler(0, 2, batch_size), sampler(1, 2, batch_size)
    single = sampler(0, 1, 2 * batch_size)
    assert len(rank0) == len(rank1) == len(single) == batches_per_epoch
    for a, b, whole in zip(rank0, rank1, single, strict=True):
        assert len(a) == len(b) == batch_size
        assert not set(a) & set(b), "two ranks drew the same sample in one step"
        assert sorted(a + b) == sorted(whole)


def test_shuffle_refuses_a_batch_larger_than_the_data():
    with pytest.raises(SamplerError, match="batch_size"):
        ShuffleBatchSampler(list(range(10)), batch_size=11)
    with pytest.raises(SamplerError, match="batch_size"):
        ShuffleBatchSampler(list(range(10)), batch_size=6, world_size=2)
    with pytest.raises(SamplerError, match="batch_size must be >= 1"):
        ShuffleBatchSampler(list(range(10)), batch_size=0)
    ShuffleBatchSampler(list(range(10)), batch_size=5, world_size=2)  # exactly enough is fine


def test_shuffle_is_built_by_name():
    sampler = build_sampler("shuffle", labels=list(range(30)), batch_size=4, batches_per_epoch=3)
    assert isinstance(sampler, ShuffleBatchSampler) and [len(b) for b in sampler] == [4, 4, 4]


# ----------------------------------------------------------------------------------------- classifiers


class _Embedder(nn.Module):
    """A fixed linear map to ``embedding_dim`` (what Classifier reads from the wrapped network)."""

    def __init__(self, in_dim: int = 6, embedding_dim: int = 5, feature_dim: int = 9) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, embedding_dim or feature_dim)
        self.embedding_dim, self.feature_dim = embedding_dim, feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_linear_classifier_is_a_linear_layer_on_the_embedding():
    torch.manual_seed(0)
    embedder = _Embedder()
    model = Classifier(embedder, num_classes=4)
    x = torch.randn(9, 6)
    logits = model(x)
    assert logits.shape == (9, 4) and model.kind == "linear" and model.embedder is embedder
    assert model.embedding_dim == 5
    layer = model.classifier
    assert isinstance(layer, nn.Linear) and layer.in_features == 5 and layer.out_features == 4
    assert torch.allclose(logits, embedder(x) @ layer.weight.T + layer.bias, atol=1e-6)


def test_a_network_without_embedding_head_gives_its_features_to_the_classifier():
    embedder = _Embedder(embedding_dim=0, feature_dim=7)
    model = Classifier(embedder, num_classes=3, kind="cosine")
    assert model.embedding_dim == 7 and model(torch.randn(2, 6)).shape == (2, 3)


def test_cosine_logits_are_the_cosines_computed_one_by_one():
    torch.manual_seed(1)
    embedder = _Embedder()
    model = Classifier(embedder, num_classes=6, kind="cosine").double()
    assert isinstance(model.classifier, CosineLinear)
    assert not any(name.endswith("bias") for name, _ in model.classifier.named_parameters())
    x = torch.randn(11, 6, dtype=torch.float64) * 10
    logits = model(x).detach()
    assert logits.shape == (11, 6)
    assert float(logits.min()) >= -1 - 1e-12 and float(logits.max()) <= 1 + 1e-12
    features, weights = embedder(x).detach().tolist(), model.classifier.weight.detach().tolist()
    for i, f in enumerate(features):
        for j, w in enumerate(weights):
            dot = sum(a * b for a, b in zip(f, w, strict=True))
            cosine = dot / (math.sqrt(sum(a * a for a in f)) * math.sqrt(sum(b * b for b in w)))
            assert logits[i, j].item() == pytest.approx(cosine, abs=1e-12)


def test_classifier_refuses_an_unknown_kind_and_fewer_than_two_classes():
    with pytest.raises(ValueError, match="classifier must be one of"):
        Classifier(_Embedder(), 3, kind="softmax")
    with pytest.raises(ValueError, match="at least 2 classes"):
        Classifier(_Embedder(), 1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        Classifier(_Embedder(), 0, kind="cosine")


# ------------------------------------------------------------------------------------------- sharpness


class _TwoBlockWeights(nn.Module):
    """One weight vector ``w`` held as two parameters (the norms and the Hessian span both together)."""

    def __init__(self, w: torch.Tensor, split: int = 2) -> None:
        super().__init__()
        self.head = nn.Parameter(w[:split].clone())
        self.tail = nn.Parameter(w[split:].clone())

    def w(self) -> torch.Tensor:
        return torch.cat([self.head, self.tail])


def _quadratic(model: _TwoBlockWeights, a: torch.Tensor):
    def loss() -> torch.Tensor:
        w = model.w()
        return 0.5 * w @ a @ w

    return loss


def _spd(n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)[:n]
    return q @ torch.diag(eigenvalues) @ q.T


def _snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _bitwise_equal(model: nn.Module, saved: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, s) for p, s in zip(model.parameters(), saved, strict=True))


@pytest.mark.parametrize("at_minimum", [True, False])
def test_hessian_top_eigenvalue_of_a_quadratic_is_the_largest_eigenvalue_of_a(at_minimum):
    a = _spd()
    w = (
        torch.zeros(5, dtype=torch.float64)
        if at_minimum
        else torch.tensor([0.3, -1.0, 0.2, 0.7, -0.4]).double()
    )
    model = _TwoBlockWeights(w)
    saved = _snapshot(model)
    value = hessian_top_eigenvalue(model, _quadratic(model, a), iterations=60)
    assert value == pytest.approx(float(torch.linalg.eigvalsh(a).max()), rel=1e-3)
    assert _bitwise_equal(model, saved)


def _exact_ball_maximum(a_diag: torch.Tensor, g: torch.Tensor, rho: float) -> float:
    """``max_{||e|| <= rho} g.e + 0.5 e^T diag(a) e`` (convex: on the sphere, ``e = g / (lam - a)`` with
    ``lam > max a`` and ``||e|| = rho``; ``lam`` by bisection)."""
    top = float(a_diag.max())
    lo, hi = top + 1e-15, top + float(g.norm()) / rho + 1.0
    for _ in range(300):
        mid = (lo + hi) / 2
        if float((g / (mid - a_diag)).norm()) > rho:
            lo = mid
        else:
            hi = mid
    e = g / (hi - a_diag)
    return float(g @ e + 0.5 * (a_diag * e * e).sum())


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_rho_sharpness_of_a_quadratic_lies_between_sam_s_step_and_the_ball_maximum(rho):
    a_diag = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    w0 = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64)
    model = _TwoBlockWeights(w0)
    loss = _quadratic(model, torch.diag(a_diag))
    g = a_diag * w0  # the gradient at w0

    def increase(e: torch.Tensor) -> float:  # L(w0 + e) - L(w0)
        return float(g @ e + 0.5 * (a_diag * e * e).sum())

    exact = _exact_ball_maximum(a_diag, g, rho)
    directions = torch.randn(20000, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampled = directions / directions.norm(dim=1, keepdim=True) * rho
    sampled_max = float((sampled @ g + 0.5 * (sampled * sampled * a_diag).sum(dim=1)).max())
    assert sampled_max <= exact + 1e-12 and sampled_max >= exact - 0.05 * exact  # the reference is right
    one_step = increase(rho * g / g.norm())
    assert one_step < exact

    saved = _snapshot(model)
    assert rho_sharpness(model, loss, rho, steps=1) == pytest.approx(one_step, rel=1e-9, abs=1e-12)
    assert _bitwise_equal(model, saved)
    for steps in (5, 20):
        value = rho_sharpness(model, loss, rho, steps=steps)
        assert one_step - 1e-12 <= value <= exact + 1e-12, (steps, value, one_step, exact)
        assert _bitwise_equal(model, saved)
    assert rho_sharpness(model, loss, rho, steps=20) > one_step, "more ascent steps must get closer"


def test_rho_sharpness_is_nonnegative_and_restores_weights_of_a_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    saved = _snapshot(model)

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    assert rho_sharpness(model, loss, 0.1, steps=3) >= 0
    assert _bitwise_equal(model, saved)
    hessian_top_eigenvalue(model, loss, iterations=3)
    assert _bitwise_equal(model, saved)


def test_sharpness_refuses_bad_arguments():
    model = _TwoBlockWeights(torch.ones(5, dtype=torch.float64))
    loss = _quadratic(model, torch.eye(5, dtype=torch.float64))
    for rho, steps in ((0.0, 1), (-0.1, 1), (0.05, 0)):
        with pytest.raises(ValueError, match="rho must be > 0 and steps >= 1"):
            rho_sharpness(model, loss, rho, steps)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        hessian_top_eigenvalue(model, loss, iterations=0)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        rho_sharpness(model, loss, 0.05)
    with pytest.raises(ValueError, match="no trainable parameter"):
        hessian_top_eigenvalue(model, loss)


# ------------------------------------------------------------------------------- evaluate_classifier


class _LogitsModel(nn.Module):
    """Inputs are logits; a trainable ``C x C`` matrix (the identity) maps them to the output."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(num_classes, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def _classification_data(train_counts: list[int], test_n: int = 80, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = len(train_counts)
    test_labels = torch.randint(0, c, (test_n,), generator=g)
    # logits that are right about 60% of the time, with a spread of confidences
    test_logits = torch.randn(test_n, c, generator=g, dtype=torch.float64) * 1.5
    test_logits[torch.arange(test_n), test_labels] += torch.rand(test_n, generator=g, dtype=torch.float64) * 3
    train_labels = torch.cat([torch.full((n,), k) for k, n in enumerate(train_counts)])
    train_logits = torch.randn(len(train_labels), c, generator=g, dtype=torch.float64)
    return SplitTensors(train_logits, train_labels), SplitTensors(test_logits, test_labels)


def _eval_run(tmp_path: Path, **evaluation) -> RunConfig:
    return classification_run(tmp_path, train={"eval": evaluation})


def test_evaluate_classifier_matches_the_metrics_computed_by_hand(tmp_path):
    train, test = _classification_data([50, 30, 12, 5])
    run = _eval_run(tmp_path, calibration_bins=10, shot_groups={"many": 40, "few": 10})
    model = _LogitsModel(4)
    metrics, reliability = evaluate_classifier(
        run, model, losses.build("cross_entropy"), torch.device("cpu"), train, test
    )
    logits = test.images.float().double()  # the evaluation reads the model's output as float32
    labels = test.labels.tolist()
    predicted = logits.argmax(dim=1).tolist()
    hits = [p == t for p, t in zip(predicted, labels, strict=True)]
    assert metrics["top1_accuracy"] == pytest.approx(sum(hits) / len(hits), abs=1e-12)
    per_class = [
        sum(h for h, t in zip(hits, labels, strict=True) if t == k) / labels.count(k) for k in range(4)
    ]
    assert metrics["balanced_accuracy"] == pytest.approx(sum(per_class) / 4, abs=1e-12)
    assert metrics["nll"] == pytest.approx(float(F.cross_entropy(logits, test.labels)), rel=1e-9)
    # training counts 50 (> 40: many), 30 and 12 (medium), 5 (< 10: few)
    assert metrics["accuracy_many"] == pytest.approx(per_class[0], abs=1e-12)
    assert metrics["accuracy_medium"] == pytest.approx((per_class[1] + per_class[2]) / 2, abs=1e-12)
    assert metrics["accuracy_few"] == pytest.approx(per_class[3], abs=1e-12)

    # ECE by hand: bins ((m-1)/M, m/M], |B|/n * |acc - conf|
    probs = torch.softmax(logits, dim=1)
    confidence = probs.max(dim=1).values.tolist()
    ece = 0.0
    for m in range(1, 11):
        members = [i for i, c in enumerate(confidence) if (m - 1) / 10 < c <= m / 10]
        if members:
            acc = sum(hits[i] for i in members) / len(members)
            conf = sum(confidence[i] for i in members) / len(members)
            ece += len(members) / len(labels) * abs(acc - conf)
    assert metrics["ece"] == pytest.approx(ece, abs=1e-9)
    assert metrics["ece"] == pytest.approx(
        expected_calibration_error(logits, test.labels, 10, inputs="logits"), abs=1e-12
    )

    bins = reliability_diagram_bins(logits, test.labels, 10, inputs="logits")
    assert reliability["edges"] == pytest.approx(bins.edges.tolist())
    assert reliability["count"] == bins.count.tolist() and sum(reliability["count"]) == len(labels)
    for key in ("confidence", "accuracy"):
        expected = getattr(bins, key).tolist()
        for got, want, count in zip(reliability[key], expected, reliability["count"], strict=True):
            if count == 0:
                assert got is None
            else:
                assert got == pytest.approx(want, abs=1e-12)
    assert 0 in reliability["count"], "the data should leave some bin empty (None in the record)"
    assert "sharpness_rho" not in metrics and "hessian_top_eigenvalue" not in metrics


def test_the_probabilities_of_an_ldam_run_are_the_softmax_of_its_scaled_logits_without_margins(tmp_path):
    train, test = _classification_data([50, 30, 12, 5])
    run = _eval_run(tmp_path, calibration_bins=10)
    cosines = SplitTensors(test.images / 10, test.labels)  # in [-1, 1], like a cosine classifier's
    ldam = losses.build("ldam", class_counts=[50, 30, 12, 5], s=7.0)
    metrics, reliability = evaluate_classifier(
        run, _LogitsModel(4), ldam, torch.device("cpu"), train, cosines
    )
    scaled = 7.0 * cosines.images.float().double()
    assert metrics["nll"] == pytest.approx(float(F.cross_entropy(scaled, test.labels)), rel=1e-9)
    assert metrics["ece"] == pytest.approx(
        expected_calibration_error(scaled, test.labels, 10, inputs="logits"), abs=1e-12
    )
    assert (
        reliability["count"]
        == reliability_diagram_bins(scaled, test.labels, 10, inputs="logits").count.tolist()
    )
    unscaled = expected_calibration_error(cosines.images.double(), test.labels, 10, inputs="logits")
    assert abs(metrics["ece"] - unscaled) > 0.05, "the data must tell the scaled from the unscaled cosines"


def test_a_square_loss_run_is_calibrated_on_its_own_probability_estimate_not_a_softmax(tmp_path):
    """The square loss regresses ``M`` times the one-hot target: ``z / M``, clipped at 0 and normalized, is its
    probability estimate; a softmax of outputs near (1, 0, ..., 0) would cap confidence near 0.23."""
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (200,), generator=g)
    outputs = torch.randn(200, 10, generator=g, dtype=torch.float64) * 0.1  # near the scaled one-hot targets
    outputs[torch.arange(200), labels] += 2.0 * (torch.rand(200, generator=g, dtype=torch.float64) < 0.8)
    outputs[199] = -1.0  # nothing above 0: the uniform estimate
    train = SplitTensors(torch.randn(10, 10, dtype=torch.float64), torch.arange(10))
    run = _eval_run(tmp_path, calibration_bins=10)
    metrics, reliability = evaluate_classifier(
        run,
        _LogitsModel(10),
        losses.build("square", m=2.0),
        torch.device("cpu"),
        train,
        SplitTensors(outputs, labels),
    )
    z = outputs.float().double()  # the evaluation reads the model's output as float32
    estimate = (z / 2.0).clamp_min(0)
    estimate[199] = 0.1
    estimate = estimate / estimate.sum(dim=1, keepdim=True)
    assert metrics["ece"] == pytest.approx(
        expected_calibration_error(estimate, labels, 10, inputs="probs"), abs=1e-12
    )
    assert metrics["nll"] == pytest.approx(
        float(F.nll_loss(estimate.clamp_min(torch.finfo(torch.float64).tiny).log(), labels)), rel=1e-9
    )
    assert (
        reliability["count"] == reliability_diagram_bins(estimate, labels, 10, inputs="probs").count.tolist()
    )
    softmax_ece = expected_calibration_error(z, labels, 10, inputs="logits")
    assert softmax_ece > metrics["ece"] + 0.2, "the data must tell the estimate from the softmax"
    assert metrics["top1_accuracy"] == pytest.approx(float((z.argmax(dim=1) == labels).double().mean()))


def test_train_accuracy_is_top1_on_the_labels_trained_on_and_only_when_asked_for(tmp_path):
    train, test = _classification_data([30, 30, 30])
    noisy = SplitTensors(
        train.images, (train.labels + (torch.arange(90) % 3 == 0).long()) % 3
    )  # a third flipped
    metrics, _ = evaluate_classifier(
        _eval_run(tmp_path / "a", train_accuracy=True),
        _LogitsModel(3),
        losses.build("cross_entropy"),
        torch.device("cpu"),
        noisy,
        test,
    )
    predicted = noisy.images.float().argmax(dim=1)
    assert metrics["train_top1_accuracy"] == pytest.approx(float((predicted == noisy.labels).double().mean()))
    assert metrics["train_top1_accuracy"] != pytest.approx(float((predicted == train.labels).double().mean()))
    plain, _ = evaluate_classifier(
        _eval_run(tmp_path / "b"),
        _LogitsModel(3),
        losses.build("cross_entropy"),
        torch.device("cpu"),
        noisy,
        test,
    )
    assert "train_top1_accuracy" not in plain


def test_a_shot_group_without_classes_is_left_out_and_without_shot_groups_there_are_none(tmp_path):
    train, test = _classification_data([50, 30, 12, 12])
    run = _eval_run(tmp_path / "a", shot_groups={"many": 40, "few": 10})
    metrics, _ = evaluate_classifier(
        run, _LogitsModel(4), losses.build("cross_entropy"), torch.device("cpu"), train, test
    )
    assert {"accuracy_many", "accuracy_medium"} <= set(metrics) and "accuracy_few" not in metrics
    plain, _ = evaluate_classifier(
        _eval_run(tmp_path / "b"),
        _LogitsModel(4),
        losses.build("cross_entropy"),
        torch.device("cpu"),
        train,
        test,
    )
    assert not any(k.startswith("accuracy_") for k in plain)
    assert set(plain) == {"top1_accuracy", "balanced_accuracy", "nll", "ece"}


def test_a_class_missing_from_the_test_split_is_left_out_of_balanced_and_shot_accuracy(tmp_path):
    train, test = _classification_data([50, 30, 12, 5], test_n=120)
    present = test.labels != 3  # the few-shot class has no test sample
    test = SplitTensors(test.images[present], test.labels[present])
    run = _eval_run(tmp_path, shot_groups={"many": 40, "few": 10})
    metrics, _ = evaluate_classifier(
        run, _LogitsModel(4), losses.build("cross_entropy"), torch.device("cpu"), train, test
    )
    predicted = test.images.float().argmax(dim=1)
    per_class = [float((predicted[test.labels == k] == k).double().mean()) for k in range(3)]
    assert metrics["balanced_accuracy"] == pytest.approx(sum(per_class) / 3, abs=1e-12)
    assert metrics["accuracy_medium"] == pytest.approx((per_class[1] + per_class[2]) / 2, abs=1e-12)
    assert "accuracy_few" not in metrics and all(math.isfinite(v) for v in metrics.values())


def test_sharpness_metrics_appear_only_when_asked_for_and_use_the_spec(tmp_path):
    train, test = _classification_data([10, 10, 10, 10])
    spec = {"rho": 0.3, "samples": len(train.labels), "ascent_steps": 3, "power_iterations": 7}
    run = _eval_run(tmp_path, sharpness=spec)
    criterion = losses.build("cross_entropy")
    model = _LogitsModel(4)
    saved = _snapshot(model)
    metrics, _ = evaluate_classifier(run, model, criterion, torch.device("cpu"), train, test)
    assert _bitwise_equal(model, saved)

    def loss() -> torch.Tensor:  # every training sample (samples = all of them)
        return criterion(model(train.images), train.labels)

    expected_rho = rho_sharpness(model, loss, 0.3, 3)
    assert expected_rho > 0
    assert metrics["sharpness_rho"] == pytest.approx(expected_rho, rel=1e-9)
    assert metrics["hessian_top_eigenvalue"] == pytest.approx(
        hessian_top_eigenvalue(model, loss, 7), rel=1e-9
    )
    assert metrics["sharpness_rho"] != pytest.approx(rho_sharpness(model, loss, 0.05, 3), rel=1e-3)


def test_a_classification_run_depends_on_the_classification_and_sharpness_modules(tmp_path):
    from common.engine.evaluation import CLASSIFICATION, SHARPNESS, optional_modules

    assert optional_modules(_eval_run(tmp_path / "plain")) == [CLASSIFICATION]
    sharp = _eval_run(tmp_path / "sharp", sharpness={"samples": 8})
    assert optional_modules(sharp) == [CLASSIFICATION, SHARPNESS]
    embedding = classification_run(
        tmp_path / "embedding",
        train={"loss": {"name": "multi_similarity"}, "eval": {"sharpness": {"samples": 8}}},
    )
    assert CLASSIFICATION not in optional_modules(embedding) and SHARPNESS not in optional_modules(embedding)


# ------------------------------------------------------------------------------- trainer: SAM helpers


def test_sam_inside_finds_sam_in_an_accelerate_prepared_optimizer():
    from accelerate import Accelerator

    from common import optim
    from common.optim.sam import SAM

    accelerator = Accelerator(cpu=True)
    model = nn.Linear(3, 2)
    raw = optim.build("sam", model.parameters(), lr=0.1, rho=0.05)
    _, prepared = accelerator.prepare(model, raw)
    assert prepared is not raw and sam_inside(prepared) is raw and isinstance(raw, SAM)
    assert sam_inside(raw) is raw
    other = nn.Linear(3, 2)
    _, plain = accelerator.prepare(other, optim.build("sgd", other.parameters(), lr=0.1))
    assert sam_inside(plain) is None
    assert sam_inside(torch.optim.SGD(other.parameters(), lr=0.1)) is None


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3, momentum=0.1),
        nn.Flatten(),
        nn.Linear(48, 4),
        nn.BatchNorm1d(4, momentum=0.3),
    )


def _running_stats(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var)
    ]


def test_frozen_batch_norm_statistics_keep_running_stats_and_momentum():
    model = _bn_model().train()
    x = torch.randn(8, 1, 6, 6) * 3 + 1
    model(x)  # running stats away from their initial values
    before = _running_stats(model)
    reference = copy.deepcopy(model)
    with frozen_batch_norm_statistics(model):
        out = model(x * 2 - 1)
    assert all(torch.equal(a, b) for a, b in zip(_running_stats(model), before, strict=True))
    # normalised with the batch's statistics, as in an ordinary training-mode forward
    assert torch.allclose(out, reference(x * 2 - 1), atol=1e-6)
    assert [m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [
        0.1,
        0.3,
    ]
    model(x * 2 - 1)  # outside, the stats move again
    assert not all(torch.equal(a, b) for a, b in zip(_running_stats(model), before, strict=True))


def test_frozen_batch_norm_statistics_restore_the_statistics_after_an_error():
    model = _bn_model().train()
    before = _running_stats(model)
    with pytest.raises(RuntimeError, match="boom"), frozen_batch_norm_statistics(model):
        model(torch.randn(8, 1, 6, 6) * 3 + 1)
        raise RuntimeError("boom")
    assert all(torch.equal(a, b) for a, b in zip(_running_stats(model), before, strict=True))
    assert [m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [
        0.1,
        0.3,
    ]


def test_a_cumulative_average_batch_norm_does_not_count_the_frozen_pass():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, momentum=None).train()
    first, second = torch.randn(16, 3), torch.randn(16, 3) + 2
    bn(first)
    with frozen_batch_norm_statistics(bn):
        bn(first * 5)
    bn(second)
    assert torch.allclose(bn.running_mean, (first.mean(0) + second.mean(0)) / 2, atol=1e-6)


# -------------------------------------------------------------------------------------- params checks


def test_a_classification_paper_resolves_with_its_classifier_and_shot_groups(tmp_path):
    runs = resolve_runs(
        PAPER,
        classification_params(
            tmp_path,
            train={"classifier": "cosine", "eval": {"shot_groups": {"many": 30, "few": 5}}},
            methods={"ldam": {"loss": {"name": "ldam", "s": 10}}},
            datasets={"fashion_mnist_lt10": {"data": "fashion_mnist", "long_tail": {"imbalance_ratio": 10}}},
        ),
        "smoke",
    )
    [run] = runs
    assert run.classifier == "cosine" and run.loss.name == "ldam" and run.long_tail.imbalance_ratio == 10
    assert run.data == "fashion_mnist" and run.eval.shot_groups.many == 30


def test_a_cosine_classifier_with_an_embedding_loss_names_classifier(tmp_path):
    with pytest.raises(ConfigError, match="classifier"):
        classification_run(
            tmp_path,
            train={"classifier": "cosine", "loss": {"name": "multi_similarity"}},
        )


def test_a_method_setting_the_optimizer_needs_varies_optimizer(tmp_path):
    methods = {"sgd": {"label": "SGD"}, "sam": {"optimizer": {"name": "sam", "base": "sgd", "rho": 0.05}}}
    with pytest.raises(ConfigError, match=r"methods\.sam sets \['optimizer'\]"):
        resolve_runs(PAPER, classification_params(tmp_path, methods=methods), "smoke")
    runs = resolve_runs(
        PAPER, classification_params(tmp_path, methods=methods, varies=["optimizer"]), "smoke"
    )
    by_method = {r.method: r for r in runs}
    assert by_method["sam"].optimizer.name == "sam" and by_method["sam"].optimizer.kwargs["lr"] == 0.1
    assert by_method["sgd"].optimizer.name == "sgd"


def test_class_counts_in_params_are_refused_as_supplied_by_the_engine(tmp_path):
    with pytest.raises(ConfigError, match=r"loss: \['class_counts'\] are set by the engine"):
        classification_run(tmp_path, train={"loss": {"name": "ldam", "class_counts": [5, 3]}})


@pytest.mark.parametrize("ratio", [0.5, 0, -3])
def test_an_imbalance_ratio_below_one_names_the_key(tmp_path, ratio):
    with pytest.raises(ConfigError, match=r"long_tail\.imbalance_ratio"):
        classification_run(
            tmp_path,
            datasets={"fashion_mnist_lt": {"data": "fashion_mnist", "long_tail": {"imbalance_ratio": ratio}}},
        )
