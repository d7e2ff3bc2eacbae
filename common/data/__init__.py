"""Data: raw-source resolution with checksums, preparation to HF ``datasets``, fast loading.

- :mod:`common.data.sources`: ``RawFile``, ``resolve`` (local directories first, then the official
  addresses), ``DataSourceError`` (every data failure, with a message that says what to do);
- :mod:`common.data.fashion_mnist`, :mod:`common.data.omniglot`: one module a dataset, each with
  ``build(source_dir=None, ...) -> DatasetDict`` and its checksums as defaults;
- :mod:`common.data.prepare`: the ``prepare-<dataset>`` stage, ``python -m common.data.prepare``;
- :mod:`common.data.loading`: ``load_prepared(path, split) -> (uint8 images, int64 labels)`` and
  ``data_fingerprint(path)`` for provenance.

Nothing here needs the Hugging Face hub: importing this package sets ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` (unless already set) before anything imports ``datasets``, which reads them on import;
the names below are imported lazily for the same reason.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from common.data.sources import DataSourceError, RawFile, resolve

_LAZY = {
    "load_prepared": "common.data.loading",
    "load_split": "common.data.loading",
    "data_fingerprint": "common.data.loading",
    "prepared_splits": "common.data.loading",
    "PreparedDataMissingError": "common.data.loading",
    "SplitError": "common.data.loading",
}

__all__ = ["DataSourceError", "RawFile", "resolve", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'common.data' has no attribute {name!r}")
