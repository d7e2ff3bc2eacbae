"""Run records: one JSON file per (paper, dataset, method, seed), the committed source of truth.

A record holds the final metric values, the per-epoch history, the resolved config and the
provenance of the run (MLflow run id, git commit and dirty flag, DVC stage, params hash, data
fingerprint, profile, hardware, world size, versions). Records are DVC outputs with ``cache: false``
committed to git, so a clean clone holds every number and where it came from.

Beside a stage's records, ``certificates.json`` lists the code changes shown not to change its numbers
(``repro certify``): each entry certifies that records made by the code of hash ``from_code_hash`` are what
the code of ``to_code_hash`` makes, because a fixed sample of the runs, rerun with the new code, gave records
identical to the committed ones. The runner and the audit accept a record whose code hash leads to the
current one through such entries.
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
    _write_json(path, {"schema_version": SCHEMA_VERSION, **record}, "the run record")


def _write_json(path: Path, value: Any, what: str) -> None:
    write_atomically(path, json.dumps(value, indent=1, sort_keys=True) + "\n", what)


def write_atomically(path: Path, content: str | bytes, what: str) -> None:
    """Write ``content`` to ``<path>.partial``, flush it to disk, then rename it over ``path``: the file is
    whole or as it was. A write the file system refuses (disk full, no permission) is a ``StorageError``
    naming ``what`` and ``path``, and the partial file is removed."""
    partial = path.with_name(path.name + ".partial")
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(partial, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
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


CERTIFICATES = "certificates.json"


def read_certificates(stage_dir: Path) -> list[dict[str, Any]]:
    """The neutral-change certificates of a run stage (its records' folder), oldest first."""
    path = stage_dir / CERTIFICATES
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not valid JSON ({err}); restore it from git") from err


def add_certificate(stage_dir: Path, certificate: dict[str, Any]) -> None:
    """Append ``certificate`` to the stage's list, atomically."""
    _write_json(stage_dir / CERTIFICATES, [*read_certificates(stage_dir), certificate], "the certificates")


def certified_hash(code_hash: str, certificates: list[dict[str, Any]]) -> str:
    """The newest code hash that the records made by ``code_hash`` are certified for (itself if none)."""
    seen = {code_hash}
    while (step := next((c for c in certificates if c["from_code_hash"] == code_hash), None)) is not None:
        if step["to_code_hash"] in seen:
            break
        code_hash = step["to_code_hash"]
        seen.add(code_hash)
    return code_hash


def certificate_chain(
    from_hash: str, to_hash: str, certificates: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The certificates that lead from code hash ``from_hash`` to ``to_hash`` (empty when they are equal), or
    None if none do: a record made by ``from_hash`` then stands for what ``to_hash`` makes."""
    chain: list[dict[str, Any]] = []
    current, seen = from_hash, {from_hash}
    while current != to_hash:
        step = next((c for c in certificates if c["from_code_hash"] == current), None)
        if step is None or step["to_code_hash"] in seen:
            return None
        chain.append(step)
        current = step["to_code_hash"]
        seen.add(current)
    return chain
