"""Shared fixtures: tiny synthetic prepared datasets, an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_tiny_prepared(
    root: Path, name: str, classes: tuple[int, int], per_class: int, seed: int = 0, disjoint: bool = False
) -> Path:
    """A prepared dataset of 28x28 class-dependent patterns (learnable), in the real on-disk format: the
    classes of train and test are named alike, or (``disjoint``) apart, as Omniglot's unseen test classes."""
    import datasets

    from common.data.loading import dataset_from_columns

    rng = np.random.default_rng(seed)
    splits = {}
    for split, n_classes in zip(("train", "test"), classes, strict=True):
        names = [f"{split if disjoint else 'class'}_{i}" for i in range(n_classes)]
        features = datasets.Features(
            {"image": datasets.Array2D((28, 28), "uint8"), "label": datasets.ClassLabel(names=names)}
        )
        prototypes = rng.integers(0, 256, size=(n_classes, 28, 28))
        labels = np.repeat(np.arange(n_classes), per_class)
        noise = rng.normal(0, 40, size=(len(labels), 28, 28))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        splits[split] = dataset_from_columns({"image": images, "label": labels}, features, split)
    path = root / name
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """data/prepared-like root with fashion_mnist (10 classes) and omniglot (class-disjoint, 20 + 12)."""
    root = tmp_path_factory.mktemp("prepared")
    write_tiny_prepared(root, "fashion_mnist", (10, 10), per_class=30, seed=1)
    write_tiny_prepared(root, "omniglot", (20, 12), per_class=20, seed=2, disjoint=True)
    return root


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
