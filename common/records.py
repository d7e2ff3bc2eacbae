"""Run records: one JSON file per (paper, dataset, method, seed), the committed source of truth.

A record holds the final metric values, the per-epoch history, the resolved config and the
provenance of the run (MLflow run id, git commit and dirty flag, DVC stage, params hash, data
fingerprint, profile, hardware, world size, versions). Records are DVC outputs with ``cache: false``
committed to git, so a clean clone holds every number and where it came from.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from common.errors import UserError, writing

SCHEMA_VERSION = 1
RECORDS_ROOT = Path("records")


class RecordError(UserError, ValueError):
    """A record file that is missing, unreadable or of another schema version."""


def record_path(root: Path, paper: str, dataset: str, method: str, seed: int) -> Path:
    return root / paper / dataset / method / f"seed{seed}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomic: a reader (or DVC) never sees a half-written record, and a failed write leaves nothing.

    The record goes to ``<name>.json.partial``, is flushed to disk, then renamed over ``path``. A write the
    file system refuses (disk full, no permission) is a ``StorageError`` naming the record, and the
    partial file is removed.
    """
    text = json.dumps({"schema_version": SCHEMA_VERSION, **record}, indent=1, sort_keys=True) + "\n"
    partial = path.with_suffix(".json.partial")
    with writing(path, "the run record"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(partial, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise RecordError(f"{path}: no such run record") from err
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not valid JSON ({err})") from err
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{path}: record schema version {version!r}, this code reads version {SCHEMA_VERSION}; "
            "rerun the paper's stage (dvc repro) or check out the code that wrote it"
        )
    return record


def read_paper_records(root: Path, paper: str) -> list[dict[str, Any]]:
    return [read_record(p) for p in sorted((root / paper).glob("*/*/seed*.json"))]
