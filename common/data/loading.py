"""The prepared-dataset format: building splits with content fingerprints, loading them fast, provenance.

A prepared dataset is a HF ``datasets.DatasetDict`` written by ``save_to_disk`` under
``data/prepared/<dataset>`` (see :mod:`common.data.prepare`). Each split's fingerprint (the
``_fingerprint`` field of its ``state.json``) is set by :func:`dataset_from_columns` to a SHA-256 of the
split's content (feature spec + column bytes), not left to ``datasets``' own hashing: it is then the same
for the same data whatever the versions of ``datasets`` and ``pyarrow``, and :func:`data_fingerprint` can
read it back without touching the arrow files. :func:`load_prepared`, which feeds every run, recomputes the
hash from the columns it read and refuses a split whose files no longer match it, so the fingerprint a
record carries is the one of the data the run trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data.sources import DataSourceError

FINGERPRINT_CHARS = 16


class PreparedDataMissingError(DataSourceError, FileNotFoundError):
    """No prepared dataset at the given path; the message says which command makes it."""


class SplitError(DataSourceError):
    """A split that a prepared dataset does not have, or that is empty; the message names those it has."""


def content_fingerprint(columns: Mapping[str, Any], features: Any) -> str:
    """A short SHA-256 over a feature spec and the columns' values (arrays by dtype, shape and bytes)."""
    digest = hashlib.sha256()
    spec = features.to_dict() if hasattr(features, "to_dict") else features
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for name in sorted(columns):
        values = columns[name]
        digest.update(b"\0column\0" + name.encode())
        if isinstance(values, np.ndarray):
            array = np.ascontiguousarray(values)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
        else:
            digest.update(json.dumps(list(values), sort_keys=True).encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def dataset_from_columns(columns: Mapping[str, Any], features: Any, split: str) -> Any:
    """A ``datasets.Dataset`` from whole columns, with :func:`content_fingerprint` as its fingerprint."""
    import datasets

    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"split {split!r}: columns differ in length: {lengths}")
    built = datasets.Dataset.from_dict(dict(columns), features=features)
    return datasets.Dataset(
        built.data,
        info=built.info,
        split=datasets.NamedSplit(split),
        fingerprint=content_fingerprint(columns, features),
    )


def split_columns(dataset: Any) -> dict[str, Any]:
    """A split's columns as :func:`dataset_from_columns` was given them: numpy arrays in their feature's
    dtype (a ``ClassLabel`` as ``int64``), strings as a list."""
    import datasets

    columns: dict[str, Any] = {}
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Value) and feature.dtype == "string":
            columns[name] = dataset[name]
            continue
        dtype = np.int64 if isinstance(feature, datasets.ClassLabel) else np.dtype(feature.dtype)
        columns[name] = dataset.select_columns([name]).with_format("numpy", dtype=dtype)[:][name]
    return columns


def check_content(dataset: Any, path: Path, split: str) -> None:
    """Raise if a loaded split's content hash differs from the fingerprint recorded when it was prepared."""
    expected = _split_state(path, split)["_fingerprint"]
    try:
        actual = content_fingerprint(split_columns(dataset), dataset.features)
    except Exception as err:  # noqa: BLE001 - whatever `datasets`/`pyarrow` raise on damaged files
        raise DataSourceError(
            f"{path / split}: unreadable ({type(err).__name__}: {err}); prepare it again"
        ) from err
    if actual != expected:
        raise DataSourceError(
            f"{path / split}: the data files do not match the fingerprint recorded when they were prepared "
            f"({actual} against {expected} in state.json): they changed or are corrupted; prepare them again "
            f"with `dvc repro -f prepare-{path.name}` (or `dvc checkout {path}`)"
        )


def _missing(path: Path, what: str) -> PreparedDataMissingError:
    return PreparedDataMissingError(
        f"no prepared dataset at {path} ({what}); make it with `dvc repro prepare-{path.name}` "
        f"(or `python -m common.data.prepare {path.name} --out {path}`)"
    )


def prepared_splits(path: str | os.PathLike[str]) -> list[str]:
    """The split names of the prepared dataset at ``path``, in the order they were saved."""
    path = Path(path)
    if not path.is_dir():
        raise _missing(path, "no such directory")
    index = path / "dataset_dict.json"
    if not index.is_file():
        raise _missing(path, "no dataset_dict.json in it: not a saved DatasetDict, or an interrupted write")
    try:
        splits = json.loads(index.read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataSourceError(f"{index}: unreadable ({err}); prepare the dataset again") from err
    return [str(s) for s in splits]


def data_fingerprint(path: str | os.PathLike[str]) -> str:
    """A stable short hash of a prepared dataset, for provenance.

    SHA-256 over the split names and each split's ``_fingerprint`` (a content hash set at preparation);
    reads two small JSON files a split, never the data.
    """
    path = Path(path)
    digest = hashlib.sha256()
    for split in sorted(prepared_splits(path)):
        digest.update(f"{split}\0{_split_state(path, split)['_fingerprint']}\n".encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _split_state(path: Path, split: str) -> dict[str, Any]:
    """A split's ``state.json`` (its fingerprint and data files)."""
    state = path / split / "state.json"
    try:
        content = json.loads(state.read_text())
        content["_fingerprint"], content["_data_files"]  # noqa: B018 - both must be there
    except FileNotFoundError as err:
        raise _missing(path, f"split {split!r} is listed but {state} is missing") from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataSourceError(f"{state}: unreadable ({err}); prepare the dataset again") from err
    return content


def load_split(path: str | os.PathLike[str], split: str) -> Any:
    """One split of a prepared dataset as a memory-mapped ``datasets.Dataset``; clear errors if absent."""
    import datasets

    path = Path(path)
    splits = prepared_splits(path)
    if split not in splits:
        raise SplitError(f"{path} has no split {split!r}; it has: {', '.join(splits) or 'none'}")
    empty = SplitError(
        f"{path}: split {split!r} is empty; a non-empty split is needed (it has: {', '.join(splits)})"
    )
    if not _split_state(path, split)["_data_files"]:
        raise empty  # `datasets` cannot even load a split saved without rows
    try:
        dataset = datasets.Dataset.load_from_disk(str(path / split))
    except FileNotFoundError as err:
        raise _missing(path, f"split {split!r} is listed but its files are missing: {err}") from err
    except Exception as err:  # noqa: BLE001 - whatever `datasets`/`pyarrow` raise on damaged files
        raise DataSourceError(
            f"{path / split}: unreadable ({type(err).__name__}: {err}); prepare it again"
        ) from err
    if len(dataset) == 0:
        raise empty
    return dataset


def load_prepared(
    path: str | os.PathLike[str],
    split: str,
    *,
    image_column: str = "image",
    label_column: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 (N, H, W)`` and labels ``int64 (N,)`` of one split, read column-wise in bulk.

    ``label_column`` defaults to ``label``, or ``target`` where a split has no ``label`` (Omniglot's
    ``one_shot_runs``). The split's content is checked against its fingerprint first (:func:`check_content`).
    """
    dataset = load_split(path, split)
    check_content(dataset, Path(path), split)
    columns = dataset.column_names
    if label_column is None:
        label_column = "label" if "label" in columns or "target" not in columns else "target"
    for column in (image_column, label_column):
        if column not in columns:
            raise SplitError(
                f"{path}: split {split!r} has no column {column!r}; it has: {', '.join(columns)}"
            )
    images = dataset.select_columns([image_column]).with_format("numpy", dtype=np.uint8)[:][image_column]
    labels = dataset.select_columns([label_column]).with_format("numpy", dtype=np.int64)[:][label_column]
    if images.ndim != 3:
        raise SplitError(
            f"{path}: split {split!r}: column {image_column!r} is not (N, H, W) but {images.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(labels))
