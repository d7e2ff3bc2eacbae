"""Representation metrics: alignment and uniformity (Wang & Isola 2020), k-NN accuracy.

Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020, Sec. 4.1, on L2-normalised embeddings ``f``:

* ``alignment = E_{(x, y) ~ positive pairs} ||f(x) - f(y)||_2^alpha`` (lower is better; alpha = 2 by
  default, as in their experiments);
* ``uniformity = log E_{x, y ~ data, x != y} exp(-t ||f(x) - f(y)||_2^2)`` over the distinct pairs
  ``i < j`` (what their reference code, ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``, computes;
  lower is better; t = 2). Computed in row chunks, each block shifted by its largest exponent and summed
  in float64 (a log-sum-exp), so 10^4 or 10^5 points need neither the ``n^2`` matrix nor an ``exp`` that
  underflows (10^4 points: about 0.3 s on 2 CPU cores).

Embeddings are normalised here (``normalize=False`` if they already are and you want them untouched).
These return Python floats for logging; as training losses, use differentiable versions in ``losses``.

k-NN accuracy (``knn_accuracy``): each test embedding votes among its ``k`` nearest training embeddings
by cosine similarity (``common.metrics.retrieval.nearest_neighbors``):

* ``temperature`` a number (default 0.07): similarity-weighted vote, neighbour ``i`` adds
  ``exp(s_i / temperature)`` to its class (Wu et al., "Unsupervised Feature Learning via Non-Parametric
  Instance Discrimination", CVPR 2018; the k = 20, T = 0.07 monitor of MoCo / DINO);
* ``temperature=None``: majority vote (every neighbour counts 1, scikit-learn's ``KNeighborsClassifier``
  with uniform weights).

A tie between classes goes to the smallest label (scikit-learn's rule for the majority vote).

Linear probe (``linear_probe``): multinomial logistic regression on frozen features, the evaluation of
SupCon (Khosla et al. 2020) and of Wang & Isola's encoders. Features are standardized with the training
set's mean and deviation, and the objective ``mean_i CE(W f_i + b, y_i) + (weight_decay / 2) ||W||^2`` (the
bias is not penalized) is minimized by full-batch L-BFGS with a strong-Wolfe line search. With
``weight_decay > 0`` the objective is strictly convex, so the probe's answer depends on the features alone,
not on a seed or a learning rate: it equals scikit-learn's ``LogisticRegression(C=1 / (n * weight_decay))``
(tested).

This module imports only torch and the standard library.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .retrieval import _as_embeddings, _check_chunk_size, nearest_neighbors

__all__ = ["LinearProbe", "alignment", "knn_accuracy", "knn_predict", "linear_probe", "uniformity"]


def _prepared(x: Tensor, name: str, normalize: bool) -> Tensor:
    x = _as_embeddings(x, name)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.nn.functional.normalize(x, p=2, dim=1) if normalize else x


@torch.no_grad()
def alignment(x: Tensor, y: Tensor, alpha: float = 2.0, normalize: bool = True) -> float:
    """Mean ``||x_i - y_i||^alpha`` over the positive pairs ``(x_i, y_i)`` (rows of ``x`` and ``y``)."""
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be > 0, got {alpha}")
    x, y = _prepared(x, "x", normalize), _prepared(y, "y", normalize)
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape (row i of each is a positive pair), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("x is empty")
    return float(torch.linalg.vector_norm((x - y).double(), 2, dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(x: Tensor, t: float = 2.0, chunk_size: int = 256, normalize: bool = True) -> float:
    """``log`` of the mean of ``exp(-t ||x_i - x_j||^2)`` over the pairs ``i < j``.

    Memory per step is about two ``chunk_size x n`` blocks in the embeddings' dtype (float32 at least).
    """
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"t must be > 0, got {t}")
    _check_chunk_size(chunk_size)
    x = _prepared(x, "x", normalize)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {n}")
    sq = (x * x).sum(dim=1)
    parts = []
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n - 1)
        # rows i in [start, stop) x columns j in [start + 1, n); entries with j <= i are masked out
        d2 = (sq[start:stop, None] + sq[None, start + 1 :]).addmm_(
            x[start:stop], x[start + 1 :].T, alpha=-2.0
        )
        exponent = d2.clamp_min_(0).mul_(-t)
        exponent.masked_fill_(torch.ones_like(exponent, dtype=torch.bool).tril_(-1), float("-inf"))
        # every term is exp(top) * exp(exponent - top) with exponent - top <= 0: no overflow
        top = exponent.max()
        parts.append(top.double() + torch.log(torch.exp(exponent.sub_(top)).sum(dtype=torch.float64)))
    num_pairs = n * (n - 1) / 2
    return float(torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_pairs))


@torch.no_grad()
def knn_predict(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    k: int = 20,
    temperature: float | None = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Predicted label of each test embedding by a vote of its ``k`` nearest training embeddings."""
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 (or None for a majority vote), got {temperature}")
    train_emb = _as_embeddings(train_emb, "train_emb")
    train_labels = torch.as_tensor(train_labels, device=train_emb.device).reshape(-1)
    if train_labels.numel() != train_emb.shape[0]:
        raise ValueError(
            f"train_labels has {train_labels.numel()} labels for {train_emb.shape[0]} training embeddings"
        )
    if train_emb.shape[0] == 0:
        raise ValueError("train_emb is empty")
    k = min(k, train_emb.shape[0]) if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    classes, ids = torch.unique(train_labels, return_inverse=True)
    sims, idx = nearest_neighbors(test_emb, train_emb, k, chunk_size=chunk_size)
    votes = (
        torch.ones_like(sims, dtype=torch.float64)
        if temperature is None
        else torch.exp(sims.double() / temperature)
    )
    n_test, num_classes = sims.shape[0], len(classes)
    scores = torch.zeros(n_test, num_classes, dtype=torch.float64, device=sims.device)
    scores.scatter_add_(1, ids[idx], votes)
    return classes[scores.argmax(dim=1)]  # argmax: the first (smallest) label among equal scores


def knn_accuracy(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float | None = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Fraction of test embeddings whose k-NN vote (see the module docstring) is their label.

    ``k`` larger than the training set uses every training embedding.
    """
    predicted = knn_predict(train_emb, train_labels, test_emb, k, temperature, chunk_size)
    test_labels = torch.as_tensor(test_labels, device=predicted.device).reshape(-1)
    if test_labels.numel() != predicted.numel():
        raise ValueError(
            f"test_labels has {test_labels.numel()} labels for {predicted.numel()} test embeddings"
        )
    if predicted.numel() == 0:
        return float("nan")
    return float((predicted == test_labels.to(predicted.dtype)).double().mean())


class LinearProbe(NamedTuple):
    accuracy: float  # on the test features
    predictions: Tensor  # (n_test,) predicted labels
    weight: Tensor  # (classes, dim), on the standardized features
    bias: Tensor  # (classes,)
    classes: Tensor  # the training labels, sorted: row c of ``weight`` is ``classes[c]``
    mean: Tensor  # (dim,) the training features' mean and deviation, which standardize any features
    std: Tensor

    @torch.no_grad()
    def predict(self, features: Tensor) -> Tensor:
        """The predicted label of each row of ``features`` (same encoder, any images)."""
        x = (_as_embeddings(features, "features").double() - self.mean) / self.std
        return self.classes[(x @ self.weight.T + self.bias).argmax(dim=1)]


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    weight_decay: float = 1e-4,
    max_iterations: int = 500,
) -> LinearProbe:
    """Multinomial logistic regression on frozen features (see the module docstring), in float64."""
    if not (math.isfinite(weight_decay) and weight_decay > 0):
        raise ValueError(f"weight_decay must be > 0, got {weight_decay}")
    train_x = _as_embeddings(train_features, "train_features").detach().double()
    test_x = _as_embeddings(test_features, "test_features").detach().double()
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features differ in width: {train_x.shape[1]} and {test_x.shape[1]}")
    train_y = torch.as_tensor(train_labels, device=train_x.device).reshape(-1)
    test_y = torch.as_tensor(test_labels, device=test_x.device).reshape(-1)
    if train_y.numel() != train_x.shape[0] or test_y.numel() != test_x.shape[0]:
        raise ValueError("every feature row needs one label")
    classes, targets = torch.unique(train_y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least 2 classes in training, got {len(classes)}")
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-12)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(len(classes), train_x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iterations,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ weight.T + bias, targets)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        predictions = classes[(test_x @ weight.T + bias).argmax(dim=1)]
        accuracy = (
            float((predictions == test_y.to(predictions.dtype)).double().mean()) if len(test_y) else math.nan
        )
    return LinearProbe(accuracy, predictions, weight.detach(), bias.detach(), classes, mean, std)
