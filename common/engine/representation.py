"""An embedding loss's encoder judged by what its frozen features support (``eval.probe``), and any run's
accuracy on corrupted test images (``eval.corruptions``).

``representation_metrics``: features of the un-augmented training and test images (the test features are the
ones the retrieval metrics read: one forward pass of the test set feeds every metric) give

* ``top1_accuracy``: a linear probe (``common.metrics.representation.linear_probe``) trained on the training
  features, scored on the test features: SupCon's protocol, so its rows compare with a cross-entropy
  classifier's top-1;
* ``knn_accuracy``: the k-NN vote of the training features;
* ``uniformity``: of the test features (t = 2), and, for runs trained on views, ``alignment`` (alpha = 2) of
  two random views of each test image at the run's view strength, drawn with a generator seeded by the run's
  seed (the same views for every method);
* with ``eval.corruptions``: the probe's accuracy on each corrupted test set and their mean.

"""

from __future__ import annotations

import torch

from common.config import RunConfig
from common.data.transforms import fixed_subset
from common.data.views import two_views
from common.engine.evaluation import CorruptedTests, SplitTensors, embed
from common.metrics.classification import corruption_accuracy
from common.metrics.representation import alignment, knn_accuracy, linear_probe, uniformity


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
        "top1_accuracy": probe.accuracy,
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
        metrics |= corruption_accuracy(predicted, corrupted.labels)
    return metrics
