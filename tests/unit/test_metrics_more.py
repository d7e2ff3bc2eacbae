"""Classification, representation and verification metrics: hand-computed cases, scikit-learn and
brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score, roc_curve
from sklearn.neighbors import KNeighborsClassifier

from common.metrics.classification import (
    expected_calibration_error,
    per_class_accuracy,
    reliability_diagram_bins,
    shot_accuracy,
    top1_accuracy,
)
from common.metrics.representation import alignment, knn_accuracy, knn_predict, uniformity
from common.metrics.verification import tar_at_far


def _logits(n: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (n,), generator=g)
    logits = torch.randn(n, num_classes, generator=g) + 2.0 * torch.nn.functional.one_hot(
        targets, num_classes
    )
    return logits, targets


def _clustered(
    n: int, num_classes: int, dim: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return centers[labels] + noise * torch.randn(n, dim, generator=g, dtype=torch.float64), labels


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def test_top1_and_per_class_accuracy_by_hand_and_against_sklearn():
    logits = torch.tensor(
        [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0], [4.0, 0.0, 0.0]]
    )
    targets = torch.tensor([0, 2, 1, 2, 0])  # row 2 ties classes 0 and 1: argmax takes 0 (wrong)
    assert top1_accuracy(logits, targets) == pytest.approx(3 / 5)
    per_class = per_class_accuracy(logits, targets, num_classes=4)
    assert per_class[:3].tolist() == [1.0, 0.0, 0.5] and math.isnan(per_class[3])

    logits, targets = _logits(500, 7, seed=0)
    predicted = logits.argmax(dim=1).numpy()
    assert top1_accuracy(logits, targets) == pytest.approx(accuracy_score(targets.numpy(), predicted))
    expected = recall_score(targets.numpy(), predicted, average=None, labels=list(range(7)))
    assert np.allclose(per_class_accuracy(logits, targets).numpy(), expected)
    with pytest.raises(ValueError, match=r"targets must be in \[0, num_classes=3\)"):
        per_class_accuracy(logits, targets, num_classes=3)
    with pytest.raises(ValueError, match="2-D"):
        top1_accuracy(logits[:, 0], targets)


def test_shot_accuracy_groups_classes_by_training_count():
    accuracy = torch.tensor([0.9, 0.8, 0.5, 0.4, 0.1, float("nan")])
    counts = torch.tensor([500, 101, 100, 20, 19, 5])
    out = shot_accuracy(accuracy, counts)
    assert out["many"] == pytest.approx(0.85) and out["medium"] == pytest.approx(0.45)
    assert out["few"] == pytest.approx(0.1) and out["all"] == pytest.approx(0.54)


def test_ece_hand_case_with_a_confidence_on_a_bin_edge():
    # 5 bins ((m-1)/5, m/5]; confidences 0.9 (right), 0.85 (wrong), 0.7 (right), 0.6 (right, on the edge:
    # bin (0.4, 0.6]), 0.55 (wrong)
    conf = torch.tensor([0.9, 0.85, 0.7, 0.6, 0.55], dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], dim=1)
    targets = torch.tensor([0, 1, 0, 0, 1])
    bins = reliability_diagram_bins(probs, targets, n_bins=5)
    assert bins.count.tolist() == [0, 0, 2, 1, 2]
    assert np.allclose(bins.confidence[2:].numpy(), [0.575, 0.7, 0.875])
    assert np.allclose(bins.accuracy[2:].numpy(), [0.5, 1.0, 0.5])
    assert math.isnan(bins.confidence[0]) and math.isnan(bins.accuracy[1])
    # 2/5 * |0.5 - 0.575| + 1/5 * |1 - 0.7| + 2/5 * |0.5 - 0.875|
    assert expected_calibration_error(probs, targets, n_bins=5) == pytest.approx(0.24, abs=1e-12)
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, torch.tensor([0, 1])) == 0.0


def _ece_loop(probs: np.ndarray, targets: np.ndarray, n_bins: int) -> float:
    """The usual implementation (Guo et al.'s temperature_scaling code): bins (lower, upper]."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == targets
    ece = 0.0
    for m in range(n_bins):
        lower, upper = m / n_bins, (m + 1) / n_bins
        in_bin = (conf > lower) & (conf <= upper)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


def test_ece_matches_the_loop_for_logits_and_probabilities():
    logits, targets = _logits(2000, 10, seed=1)
    probs = torch.softmax(logits.double(), dim=1)
    expected = _ece_loop(probs.numpy(), targets.numpy(), 15)
    assert expected > 0.01
    assert expected_calibration_error(logits, targets) == pytest.approx(expected, abs=1e-6)
    assert expected_calibration_error(probs, targets) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(probs, targets, inputs="probs") == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(logits, targets, inputs="logits") == pytest.approx(expected, abs=1e-6)
    bins = reliability_diagram_bins(logits, targets, n_bins=10)
    assert int(bins.count.sum()) == 2000 and bins.edges.tolist() == [i / 10 for i in range(11)]
    with pytest.raises(ValueError, match="inputs must be"):
        expected_calibration_error(probs, targets, inputs="scores")
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, targets, n_bins=0)


# --------------------------------------------------------------------------------------------
# representation
# --------------------------------------------------------------------------------------------


def test_alignment_and_uniformity_against_direct_loops():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = x + 0.3 * torch.randn(40, 5, generator=g, dtype=torch.float64)
    xn, yn = (torch.nn.functional.normalize(v, dim=1).tolist() for v in (x, y))

    def dist(a, b):
        return math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)))

    for alpha in (1.0, 2.0):
        loop = sum(dist(a, b) ** alpha for a, b in zip(xn, yn, strict=True)) / len(xn)
        assert alignment(x, y, alpha=alpha) == pytest.approx(loop, rel=1e-12)
    for t in (1.0, 2.0, 10.0):
        pairs = [math.exp(-t * dist(xn[i], xn[j]) ** 2) for i in range(40) for j in range(i + 1, 40)]
        loop = math.log(sum(pairs) / len(pairs))
        for chunk_size in (1, 7, 256):
            assert uniformity(x, t=t, chunk_size=chunk_size) == pytest.approx(loop, rel=1e-10)
    reference = torch.pdist(torch.nn.functional.normalize(x, dim=1)).pow(2).mul(-2).exp().mean().log()
    assert uniformity(x) == pytest.approx(float(reference), rel=1e-10)
    with pytest.raises(ValueError, match="same shape"):
        alignment(x, y[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(x[:1])


def test_uniformity_of_ten_thousand_points_in_float32():
    x = torch.randn(10_000, 16, generator=torch.Generator().manual_seed(3))
    value = uniformity(x)
    # points uniform on S^15: E exp(-2||x - y||^2) = exp(-4) E exp(4 cos), close to exp(-4) * (1 + 4^2 / 32)
    assert math.isfinite(value) and -3.7 < value < -3.4
    subset = torch.nn.functional.normalize(x[:2000].double(), dim=1)
    assert uniformity(x[:2000]) == pytest.approx(
        float(torch.pdist(subset).pow(2).mul(-2).exp().mean().log()), rel=1e-6
    )


def _knn_brute_force(train, train_labels, test, k, temperature):
    sims = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(train, dim=1).T
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
    predicted = []
    for row, neighbours in enumerate(order.tolist()):
        scores: dict[int, float] = {}
        for j in neighbours:
            vote = 1.0 if temperature is None else math.exp(float(sims[row, j]) / temperature)
            scores[int(train_labels[j])] = scores.get(int(train_labels[j]), 0.0) + vote
        best = max(scores.values())
        predicted.append(min(label for label, s in scores.items() if s == best))
    return torch.tensor(predicted)


@pytest.mark.parametrize("temperature", [None, 0.07, 0.5])
def test_knn_against_brute_force(temperature):
    train, train_labels = _clustered(300, 6, 8, noise=1.2, seed=4)
    test, test_labels = _clustered(120, 6, 8, noise=1.2, seed=4)
    train_labels = train_labels * 10 + 5  # labels need not be 0..C-1
    test_labels = test_labels * 10 + 5
    expected = _knn_brute_force(train, train_labels, test, 20, temperature)
    predicted = knn_predict(train, train_labels, test, k=20, temperature=temperature, chunk_size=17)
    assert torch.equal(predicted, expected)
    accuracy = knn_accuracy(train, train_labels, test, test_labels, k=20, temperature=temperature)
    assert accuracy == pytest.approx(float((expected == test_labels).double().mean()))
    assert 0.2 < accuracy < 1.0


def test_knn_majority_vote_matches_sklearn_and_handles_large_k():
    train, train_labels = _clustered(200, 4, 6, noise=1.0, seed=5)
    test, test_labels = _clustered(80, 4, 6, noise=1.0, seed=6)
    sk = KNeighborsClassifier(n_neighbors=9, metric="cosine", algorithm="brute").fit(
        train.numpy(), train_labels.numpy()
    )
    ours = knn_predict(train, train_labels, test, k=9, temperature=None)
    assert np.array_equal(ours.numpy(), sk.predict(test.numpy()))
    # k above the training size votes with every training embedding: the most frequent class wins
    small = train[:5], torch.tensor([1, 2, 2, 3, 3])
    assert knn_predict(*small, test[:3], k=50, temperature=None).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_accuracy(train, train_labels, test, test_labels, temperature=0.0)


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------


def _tar_far_sklearn(embeddings: torch.Tensor, labels: torch.Tensor, far: float) -> tuple[float, float]:
    """Brute force over all pairs i < j with scikit-learn's ROC: max TPR with FPR <= far."""
    x = torch.nn.functional.normalize(embeddings.double(), dim=1)
    sims = (x @ x.T).numpy()
    i, j = np.triu_indices(len(x), k=1)
    same = (labels[:, None] == labels[None, :]).numpy()[i, j]
    fpr, tpr, _ = roc_curve(same, sims[i, j], drop_intermediate=False)
    return float(tpr[fpr <= far].max()), float(fpr[fpr <= far].max())


def _tied_embeddings(n: int, dim: int, seed: int) -> torch.Tensor:
    """+-1 in four coordinates: similarities are multiples of 1/4, so many exact ties."""
    g = torch.Generator().manual_seed(seed)
    cols = torch.argsort(torch.rand(n, dim, generator=g), dim=1)[:, :4]
    signs = torch.randint(0, 2, (n, 4), generator=g).double() * 2 - 1
    return torch.zeros(n, dim, dtype=torch.float64).scatter_(1, cols, signs)


@pytest.mark.parametrize("case", ["clustered", "tied"])
def test_tar_at_far_matches_sklearn_roc_curve(case):
    if case == "clustered":
        embeddings, labels = _clustered(400, 20, 16, noise=1.5, seed=7)
    else:
        embeddings = _tied_embeddings(300, 6, seed=8)
        labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(9))
    fars = (0.1, 0.01, 1e-3, 1e-4)
    for chunk_size in (1, 37, 1024):
        out = tar_at_far(embeddings, labels, fars=fars, chunk_size=chunk_size)
        for far in fars:
            tar, achieved = _tar_far_sklearn(embeddings, labels, far)
            key = f"{far:g}"
            assert out[f"tar_at_far_{key}"] == pytest.approx(tar, abs=1e-12), (far, chunk_size)
            assert out[f"achieved_far_at_far_{key}"] == pytest.approx(achieved, abs=1e-12)
    assert 0.0 < out["tar_at_far_0.01"] < 1.0 or case == "tied"
    n_pos = int(sum(c * (c - 1) // 2 for c in torch.bincount(labels).tolist()))
    assert out["num_positive_pairs"] == n_pos
    assert out["num_negative_pairs"] == len(labels) * (len(labels) - 1) // 2 - n_pos


def test_tar_at_far_threshold_lets_through_the_target_fraction_of_negatives():
    embeddings, labels = _clustered(200, 10, 8, noise=2.0, seed=10)
    x = torch.nn.functional.normalize(embeddings, dim=1)
    i, j = torch.triu_indices(200, 200, offset=1)
    sims = (x @ x.T)[i, j]
    negative = labels[i] != labels[j]
    out = tar_at_far(embeddings, labels, fars=(0.05,))
    threshold = out["threshold_at_far_0.05"]
    accepted_neg = int((sims[negative] > threshold).sum())
    assert accepted_neg == int(0.05 * int(negative.sum()))  # no ties in random data: exactly floor(far * N)
    assert out["tar_at_far_0.05"] == pytest.approx(float((sims[~negative] > threshold).double().mean()))
    # far = 1 accepts everything
    everything = tar_at_far(embeddings, labels, fars=(1.0,))
    assert everything["tar_at_far_1"] == 1.0 and everything["threshold_at_far_1"] == float("-inf")


def test_tar_at_far_edge_cases():
    one_class = tar_at_far(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    assert all(math.isnan(v) for k, v in one_class.items() if k.startswith(("tar", "threshold")))
    distinct = tar_at_far(torch.randn(5, 3), torch.arange(5), fars=(0.5,))
    assert math.isnan(distinct["tar_at_far_0.5"]) and math.isfinite(distinct["threshold_at_far_0.5"])
    with pytest.raises(ValueError, match="fars must be"):
        tar_at_far(torch.randn(5, 3), torch.arange(5), fars=(0.0,))
    with pytest.raises(ValueError, match="at least 2"):
        tar_at_far(torch.randn(1, 3), torch.arange(1))


# ------------------------------------------------------------------------------------------- linear probe


def _probe_data(n: int = 300, dim: int = 6, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (n,), generator=g) * 3 + 1  # labels 1, 4, 7, 10: not 0..C-1
    features = centres[(labels - 1) // 3] + torch.randn(n, dim, generator=g, dtype=torch.float64) * 2.5
    return features * torch.linspace(0.1, 10, dim, dtype=torch.float64) + 5, labels


@pytest.mark.parametrize("weight_decay", [1e-3, 1e-1])
def test_linear_probe_is_sklearns_logistic_regression(weight_decay):
    from sklearn.linear_model import LogisticRegression

    from common.metrics.representation import linear_probe

    x, y = _probe_data()
    test_x, test_y = _probe_data(seed=1)
    probe = linear_probe(x, y, test_x, test_y, weight_decay=weight_decay)
    mean, std = x.mean(dim=0), x.std(dim=0)
    reference = LogisticRegression(C=1.0 / (len(y) * weight_decay), tol=1e-12, max_iter=10_000)
    reference.fit(((x - mean) / std).numpy(), y.numpy())
    # sklearn's softmax has a redundant direction: compare what is identifiable, the logit differences
    ours = ((test_x - mean) / std) @ probe.weight.T + probe.bias
    theirs = torch.from_numpy(reference.decision_function(((test_x - mean) / std).numpy()))
    assert torch.allclose(
        ours - ours.mean(dim=1, keepdim=True), theirs - theirs.mean(dim=1, keepdim=True), atol=1e-5
    )
    expected = torch.from_numpy(reference.predict(((test_x - mean) / std).numpy()))
    assert torch.equal(probe.predictions, expected)
    assert probe.accuracy == pytest.approx(float((expected == test_y).double().mean()), abs=1e-12)
    assert probe.classes.tolist() == [1, 4, 7, 10]
    assert torch.equal(probe.predict(test_x), probe.predictions)


def test_linear_probe_refuses_bad_input():
    from common.metrics.representation import linear_probe

    x, y = _probe_data()
    with pytest.raises(ValueError, match="weight_decay must be > 0"):
        linear_probe(x, y, x, y, weight_decay=0.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x, torch.zeros_like(y), x, y)
    with pytest.raises(ValueError, match="differ in width"):
        linear_probe(x, y, x[:, :3], y)
