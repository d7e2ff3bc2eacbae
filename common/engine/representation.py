"""A run's encoder judged by what its frozen features support (``eval.probe``), and its accuracy on
corrupted test images (``eval.corruptions``), read by the same probe.

``representation_metrics``: features of the un-augmented training and test images (for an embedding loss, the
test features are the ones the retrieval metrics read: one forward pass of the test set feeds every metric;
for a classification loss, the features its classifier reads) give

* ``probe_top1_accuracy``: a linear probe (``common.metrics.representation.linear_probe``) trained on the
  training features, scored on the test features: SupCon's protocol. Every run that probes has it, so an
  embedding loss and a cross-entropy classifier compare by one readout (the classifier's own top-1 stays its
  ``top1_accuracy``). An embedding loss has no other readout: ``own_readout`` makes the probe's metrics its
  ``top1_accuracy`` and ``corruption_accuracy`` too;
* ``knn_accuracy``: the k-NN vote of the training features;
* ``uniformity``: of the test features (t = 2), and, for runs trained on views, ``alignment`` (alpha = 2) of
  two random views of each test image at the run's view strength, drawn with a generator seeded by the run's
  seed (the same views for every method);
* with ``eval.corruptions``: the probe's accuracy on each corrupted test set and their mean
  (``probe_accuracy_<corruption>``, ``probe_corruption_accuracy``).

"""

from __future__ import annotations

import torch

from common.config import RunConfig
from common.data.transforms import fixed_subset
from common.data.views import two_views
from common.engine.evaluation import CorruptedTests, SplitTensors, embed
from common.metrics.classification import corruption_accuracy
from common.metrics.representation import alignment, knn_accuracy, linear_probe, uniformity

PROBE = "probe_"  # the prefix of the metrics read by the linear probe


def representation_metrics(
    run: RunConfig,
    model: torch.nn.Module,
    device: torch.device,
    train: SplitTensors,
    test: SplitTensors,
    test_features: torch.Tensor,
    corrupted: CorruptedTests | None = None,
) -> dict[str, float]:
    """The metrics of the module docstring; ``test_features`` are the model's embeddings of ``test.images``."""
    spec = run.eval.probe
    keep = fixed_subset(len(train.labels), spec.train_items)
    train_features = embed(model, train.images[keep], device)
    train_labels = train.labels[keep]
    probe = linear_probe(train_features, train_labels, test_features, test.labels, spec.weight_decay)
    metrics = {
        f"{PROBE}top1_accuracy": probe.accuracy,
        "knn_accuracy": knn_accuracy(
            train_features, train_labels, test_features, test.labels, spec.knn_k, spec.knn_temperature
        ),
        "uniformity": uniformity(test_features, t=2.0),
    }
    if run.views is not None:
        generator = torch.Generator().manual_seed(run.seed)
        first, second = two_views(test.images, run.views.strength, generator)
        metrics["alignment"] = alignment(embed(model, first, device), embed(model, second, device), alpha=2.0)
    if corrupted is not None:
        predicted = {name: probe.predict(embed(model, x, device)) for name, x in corrupted.images.items()}
        metrics |= {PROBE + k: v for k, v in corruption_accuracy(predicted, corrupted.labels).items()}
    return metrics


def own_readout(metrics: dict[str, float]) -> dict[str, float]:
    """An embedding loss's own readout, the probe: its probe metrics without the prefix (``top1_accuracy``,
    ``corruption_accuracy``, ``accuracy_<corruption>``), what a classifier reports of its own head."""
    return {k.removeprefix(PROBE): v for k, v in metrics.items() if k.startswith(PROBE)}
