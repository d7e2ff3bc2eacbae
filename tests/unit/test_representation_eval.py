"""``eval.probe`` and ``eval.corruptions``: the metrics equal the metric functions applied to the encoder's
features by hand (an embedding run's, and a classifier's features before its last layer), and the config
refuses what cannot be measured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.data.views import two_views
from common.engine.evaluation import CorruptedTests, SplitTensors, embed, optional_modules
from common.engine.representation import representation_metrics
from common.metrics.representation import alignment, knn_accuracy, linear_probe, uniformity
from common.params import ConfigError
from tests.unit.test_classification_engine import classification_run

SUPCON = {"supcon": {"loss": {"name": "supcon"}}}


class _Encoder(nn.Module):
    """A fixed random linear map of the flattened image to 8 dimensions."""

    embedding_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.map = nn.Linear(28 * 28, 8)
        nn.init.normal_(self.map.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map(x.flatten(1))


def _split(n: int, seed: int) -> SplitTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    return SplitTensors(torch.randn(n, 1, 28, 28, generator=g) + labels.view(-1, 1, 1, 1) * 0.5, labels)


@pytest.mark.parametrize("views", [None, {"count": 2, "strength": 0.5}])
def test_representation_metrics_are_the_metric_functions_on_the_features(views, tmp_path):
    train_extra = {"views": views} if views else {}
    run = classification_run(
        tmp_path, train={**train_extra, "eval": {"probe": {"knn_k": 5, "weight_decay": 0.01}}}, methods=SUPCON
    )
    model, cpu = _Encoder(), torch.device("cpu")
    train, test = _split(60, 1), _split(30, 2)
    noisy = {"gaussian_noise_s3": test.images + 0.5 * torch.randn(test.images.shape)}
    train_f, test_f = embed(model, train.images, cpu), embed(model, test.images, cpu)
    metrics = representation_metrics(run, model, cpu, train, test, test_f, CorruptedTests(noisy, test.labels))

    probe = linear_probe(train_f, train.labels, test_f, test.labels, weight_decay=0.01)
    assert metrics["probe_top1_accuracy"] == probe.accuracy
    assert metrics["knn_accuracy"] == knn_accuracy(train_f, train.labels, test_f, test.labels, 5, 0.07)
    assert metrics["uniformity"] == uniformity(test_f, t=2.0)
    corrupted_accuracy = float(
        (probe.predict(embed(model, noisy["gaussian_noise_s3"], cpu)) == test.labels).double().mean()
    )
    assert metrics["probe_accuracy_gaussian_noise_s3"] == corrupted_accuracy
    assert metrics["probe_corruption_accuracy"] == corrupted_accuracy
    if views is None:
        assert "alignment" not in metrics
    else:
        first, second = two_views(test.images, 0.5, torch.Generator().manual_seed(run.seed))
        assert metrics["alignment"] == alignment(
            embed(model, first, cpu), embed(model, second, cpu), alpha=2.0
        )
    expected = {"probe_top1_accuracy", "knn_accuracy", "uniformity", "alignment", "probe_corruption_accuracy"}
    assert set(metrics) <= expected | {"probe_accuracy_gaussian_noise_s3"}


def test_an_embedding_runs_own_readout_is_its_probe(tmp_path):
    from common.engine.evaluation import evaluate

    run = classification_run(
        tmp_path,
        train={"eval": {"probe": {}, "corruptions": {"severities": [3], "kinds": ["contrast"]}}},
        methods=SUPCON,
    )
    model, cpu = _Encoder(), torch.device("cpu")
    train, test = _split(60, 1), _split(30, 2)
    corrupted = CorruptedTests({"contrast_s3": 0.3 * test.images}, test.labels)
    metrics, _ = evaluate(run, model, nn.Module(), cpu, train, test, corrupted=corrupted)
    assert metrics["top1_accuracy"] == metrics["probe_top1_accuracy"]
    assert metrics["corruption_accuracy"] == metrics["probe_corruption_accuracy"]
    assert metrics["accuracy_contrast_s3"] == metrics["probe_accuracy_contrast_s3"]
    assert "recall_at_1" in metrics, "the retrieval metrics stay"


def test_a_classifier_is_probed_on_the_features_its_classifier_reads(tmp_path):
    from common import losses
    from common.engine.classification import evaluate_classifier
    from common.models.classifiers import Classifier

    run = classification_run(tmp_path, train={"eval": {"probe": {"knn_k": 5}, "corruptions": {}}})
    encoder, cpu = _Encoder(), torch.device("cpu")
    model = Classifier(encoder, 3)
    train, test = _split(60, 1), _split(30, 2)
    corrupted = CorruptedTests({"gaussian_noise_s1": test.images + 1.0}, test.labels)
    metrics, _ = evaluate_classifier(run, model, losses.build("cross_entropy"), cpu, train, test, corrupted)

    train_f, test_f = embed(encoder, train.images, cpu), embed(encoder, test.images, cpu)
    probe = linear_probe(train_f, train.labels, test_f, test.labels, weight_decay=1e-4)
    assert metrics["probe_top1_accuracy"] == probe.accuracy
    assert metrics["knn_accuracy"] == knn_accuracy(train_f, train.labels, test_f, test.labels, 5, 0.07)
    head = embed(model, test.images, cpu).argmax(dim=1)
    assert metrics["top1_accuracy"] == float((head == test.labels).double().mean()), "its own head's"
    assert metrics["top1_accuracy"] != metrics["probe_top1_accuracy"], (
        "an untrained head: the two must differ"
    )
    probed = probe.predict(embed(encoder, test.images + 1.0, cpu))
    assert metrics["probe_corruption_accuracy"] == float((probed == test.labels).double().mean())
    head_corrupted = embed(model, test.images + 1.0, cpu).argmax(dim=1)
    assert metrics["corruption_accuracy"] == float((head_corrupted == test.labels).double().mean())


@pytest.mark.parametrize("methods", [SUPCON, None])  # an embedding loss; the cross-entropy
def test_the_representation_module_is_a_dependency_only_of_runs_that_probe(methods, tmp_path):
    probed = classification_run(tmp_path / "a", train={"eval": {"probe": {}}}, methods=methods)
    plain = classification_run(tmp_path / "b", methods=methods)
    assert "common.engine.representation" in optional_modules(probed)
    assert "common.engine.representation" not in optional_modules(plain)


@pytest.mark.parametrize(
    ("evaluation", "methods", "message"),
    [
        ({"corruptions": {}}, SUPCON, "eval.corruptions needs something that classifies"),
        ({"probe": {}, "corruptions": {"severities": [0]}}, SUPCON, "severities must be in 1..5"),
        ({"probe": {}, "corruptions": {"kinds": ["fog"]}}, SUPCON, "kinds"),
    ],
)
def test_what_cannot_be_measured_is_refused(evaluation, methods, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        classification_run(tmp_path, train={"eval": evaluation}, methods=methods)


def test_a_classifiers_corruption_accuracy_is_its_arg_max_on_each_corrupted_set(tmp_path):
    from common import losses
    from common.engine.classification import evaluate_classifier
    from tests.unit.test_classification_engine import _classification_data, _LogitsModel

    train, test = _classification_data([10, 10, 10, 10])
    run = classification_run(tmp_path, train={"eval": {"corruptions": {}}})
    g = torch.Generator().manual_seed(5)
    sets = {
        "gaussian_noise_s1": test.images
        + 2.0 * torch.randn(test.images.shape, generator=g, dtype=torch.float64),
        "contrast_s5": test.images * 0.1 + torch.tensor([0.0, 0.3, 0.0, 0.0], dtype=torch.float64),
    }
    corrupted = CorruptedTests(sets, test.labels)
    cpu = torch.device("cpu")
    metrics, _ = evaluate_classifier(
        run, _LogitsModel(4), losses.build("cross_entropy"), cpu, train, test, corrupted
    )
    expected = {
        name: float((x.float().argmax(dim=1) == test.labels).double().mean()) for name, x in sets.items()
    }
    assert metrics["accuracy_gaussian_noise_s1"] == expected["gaussian_noise_s1"]
    assert metrics["accuracy_contrast_s5"] == expected["contrast_s5"]
    assert metrics["corruption_accuracy"] == pytest.approx(sum(expected.values()) / 2, abs=1e-15)
    assert len(set(expected.values())) == 2, "the two sets must differ for the test to tell them apart"
