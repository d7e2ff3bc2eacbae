"""``repro mirror``: fill an MLflow store from the run records committed in git.

A fresh clone has the records (``records/<paper>/...``: params, per-epoch history, final metrics,
provenance) but no MLflow store. Mirroring gives every record an MLflow run in the store that
``MLFLOW_TRACKING_URI`` names (else ``mlflow.db`` at the repository root), logged the way the runner logs it
(``RunTracker``): experiment = the paper, the run name, the params (the resolved config, flattened), each
history entry as metrics at step = its epoch, the final metrics at step = the run's epochs, the provenance
tags, the record itself under ``record/`` and, for the runs a report shows (not tuning trials), the paper's
report and plots under ``report/``. The mirrored run also carries ``original_run_id`` (the record's MLflow
run id: MLflow gives the copy an id of its own) and ``mirrored_from`` (the record's path).

A record whose run is already in the store is left alone: its original run (same id), or a finished run
tagged with its ``original_run_id`` whose tags, params and metrics equal the record's. A mirror that was
interrupted leaves an unfinished run, which the next mirror replaces.

Bad input stops the mirror before anything is written: a store that cannot be reached or written
(``TrackingStoreError``), a record that cannot be read or has another schema version (``RecordError``, every
such file listed), or a store that holds a different run under a record's original run id
(``MirrorConflict``, naming the record, the original id and the run in the store).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from common.config import logged_params
from common.errors import UserError
from common.records import CERTIFICATES, RecordError, read_record
from common.tracking.mlflow_tracking import (
    PARAM_VALUE_LIMIT,
    RunTracker,
    TrackingStoreError,
    _client,
    _first_line,
    _retry,
    check_tracking_store,
    flatten,
    run_name,
)
from common.tracking.report_artifacts import report_files

ORIGINAL_RUN_ID = "original_run_id"
MIRRORED_FROM = "mirrored_from"
# provenance the runner adds to a record besides its run's tags (every other provenance key is a tag)
_RECORD_ONLY = frozenset(
    {
        "mlflow_run_id",
        "mlflow_experiment",
        "earlier_attempts",
        "resumed_from_epoch",
        "versions",
        "finished_at",
        "duration_s",
    }
)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_REQUIRED = (
    "paper",
    "dataset",
    "method",
    "seed",
    "config",
    "config_hash",
    "metrics",
    "history",
    "provenance",
)


class MirrorConflict(UserError):
    """The store holds a run under a record's original run id that is not that record's run."""


@dataclass
class MirrorSummary:
    uri: str
    mirrored: list[str] = field(default_factory=list)  # original run ids written now
    originals: list[str] = field(default_factory=list)  # already in the store under their own id
    already: list[str] = field(default_factory=list)  # already mirrored, equal to the record
    replaced: list[str] = field(
        default_factory=list
    )  # of ``mirrored``: an unfinished mirror was deleted first

    def text(self) -> str:
        text = (
            f"{len(self.mirrored)} run(s) mirrored into {self.uri}; already there: {len(self.originals)} as "
            f"the original run, {len(self.already)} as a mirror"
        )
        if self.replaced:
            text += f"; {len(self.replaced)} unfinished mirror(s) of an interrupted mirror replaced"
        return text


# ----------------------------------------------------------------------------- what a record's run holds


def record_run_name(record: dict[str, Any]) -> str:
    """The name the runner gave the record's run."""
    return run_name(
        record["method"], record["dataset"], record["seed"], record["provenance"].get("tuning_point")
    )


def record_tags(record: dict[str, Any]) -> dict[str, str]:
    """The tags the runner gave the record's run, rebuilt from its provenance.

    The runner writes each tag into the provenance, except the versions, which it nests under ``versions``.
    """
    provenance = record["provenance"]
    tags = {k: str(v) for k, v in provenance.items() if k not in _RECORD_ONLY}
    tags.update({f"version.{k}": str(v) for k, v in provenance.get("versions", {}).items()})
    return tags


def record_params(record: dict[str, Any]) -> dict[str, str]:
    """The params a run of the record logs: its config, with each component's defaults (``logged_params``)."""
    return {k: v[:PARAM_VALUE_LIMIT] for k, v in flatten(logged_params(record["config"])).items()}


def _steps(record: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) in logging order: each epoch of the history, then the final metrics."""
    steps = [(int(entry["epoch"]), dict(entry)) for entry in record["history"]]
    steps.append((int(record["config"]["epochs"]), dict(record["metrics"])))
    return steps


def latest_metrics(record: dict[str, Any]) -> dict[str, float]:
    """What MLflow shows as the run's metrics: each key's value at its last step (the final metrics win)."""
    latest: dict[str, tuple[int, float]] = {}
    for step, metrics in _steps(record):
        for key, value in metrics.items():
            if key not in latest or step >= latest[key][0]:
                latest[key] = (step, float(value))
    return {k: v for k, (_, v) in latest.items()}


def _same(stored: float | None, value: float) -> bool:
    return stored == value or (stored is not None and math.isnan(stored) and math.isnan(value))


def differences(run: Run, record: dict[str, Any]) -> list[str]:
    """How a mirrored run differs from its record: run name, tags, params and metrics (empty: equal)."""
    found = []
    original = record["provenance"]["mlflow_run_id"]
    if run.info.run_name != record_run_name(record):
        found.append(f"run name {run.info.run_name!r}, record gives {record_run_name(record)!r}")
    tags = run.data.tags
    for key, value in {**record_tags(record), ORIGINAL_RUN_ID: original}.items():
        if tags.get(key) != value:
            found.append(f"tag {key}={tags.get(key)!r}, record says {value!r}")
    params = record_params(record)
    # a run logged before defaults were params lacks those keys only: the config's own must all match
    defaults = params.keys() - flatten(record["config"]).keys() - run.data.params.keys()
    keys = sorted(
        k
        for k in params.keys() | run.data.params.keys()
        if k not in defaults and params.get(k) != run.data.params.get(k)
    )
    if keys:
        found.append(f"params differ: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
    for key, value in latest_metrics(record).items():
        if not _same(run.data.metrics.get(key), value):
            found.append(f"metric {key}={run.data.metrics.get(key)!r}, record says {value!r}")
    return found


# ----------------------------------------------------------------------------- finding a record's run


def _missing(err: MlflowException) -> bool:
    return err.error_code == "RESOURCE_DOES_NOT_EXIST"


def mirrored_runs(client: MlflowClient, experiment_id: str, original: str) -> list[Run]:
    """Every active run of the experiment tagged ``original_run_id=original``, finished or not."""
    uri = client.tracking_uri
    runs: list[Run] = []
    token = None
    while True:
        page = _retry(
            lambda token=token: client.search_runs(
                [experiment_id], filter_string=f"tags.{ORIGINAL_RUN_ID} = '{original}'", page_token=token
            ),
            uri=uri,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _lookup(
    client: MlflowClient, record: dict[str, Any], experiments: dict[str, Any] | None = None
) -> tuple[Run | None, list[Run]]:
    """The record's original run if the store has it (active), else the active runs mirrored from it.

    ``experiments`` caches the experiments by name across calls.
    """
    uri = client.tracking_uri
    provenance = record["provenance"]
    original = provenance["mlflow_run_id"]
    try:
        run = _retry(lambda: client.get_run(original), uri=uri)
        if run.info.lifecycle_stage == "active":
            return run, []
    except MlflowException as err:
        if not _missing(err):
            raise
    experiments = {} if experiments is None else experiments
    name = provenance["mlflow_experiment"]
    if name not in experiments:
        experiments[name] = _retry(lambda: client.get_experiment_by_name(name), uri=uri)
    experiment = experiments[name]
    if experiment is None:
        return None, []
    return None, mirrored_runs(client, experiment.experiment_id, original)


def _several(uri: str, original: str, runs: list[Run]) -> str:
    ids = ", ".join(r.info.run_id for r in runs)
    return f"the store {uri} holds {len(runs)} finished runs mirrored from run {original}: {ids}"


def stored_run(client: MlflowClient, record: dict[str, Any]) -> tuple[Run | None, bool]:
    """The record's run in the store and whether it is a mirror: its original run (same id), else the run
    mirrored from it (``original_run_id`` tag; a finished one before an unfinished one), else ``None``.

    More than one finished mirror of one run is a ``MirrorConflict`` naming them.
    """
    original, mirrored = _lookup(client, record)
    if original is not None:
        return original, False
    finished = [r for r in mirrored if r.info.status == "FINISHED"]
    if len(finished) > 1:
        raise MirrorConflict(_several(client.tracking_uri, record["provenance"]["mlflow_run_id"], finished))
    if finished or mirrored:
        return (finished or mirrored)[0], True
    return None, False


# ----------------------------------------------------------------------------- reading the records


def record_files(records_root: Path, papers: Iterable[str] | None = None) -> list[Path]:
    """Every run record under ``records_root`` (the runs of the reports and the tuning trials), sorted; a
    stage's ``certificates.json`` is not a run."""
    papers = list(papers) if papers else None
    if papers:
        missing = [p for p in papers if not (records_root / p).is_dir()]
        if missing:
            raise RecordError(f"no run records for {', '.join(missing)} under {records_root}")
        roots = [records_root / p for p in papers]
    else:
        roots = [records_root]
    return sorted(path for root in roots for path in root.rglob("*.json") if path.name != CERTIFICATES)


def read_records(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Read and check every record before anything is written; every bad file is named in one error."""
    records, problems, owners = [], [], {}
    for path in paths:
        try:
            record = read_record(path)
        except RecordError as err:
            problems.append(str(err))
            continue
        missing = [k for k in _REQUIRED if k not in record]
        provenance = record.get("provenance") or {}
        missing += [f"provenance.{k}" for k in ("mlflow_run_id", "mlflow_experiment") if k not in provenance]
        if "config" in record and "epochs" not in record["config"]:
            missing.append("config.epochs")
        if missing:
            problems.append(f"{path}: not a run record: no {', '.join(missing)}")
            continue
        original = str(provenance["mlflow_run_id"])
        if not _RUN_ID.fullmatch(original):
            problems.append(f"{path}: provenance.mlflow_run_id {original!r} is not an MLflow run id")
            continue
        if original in owners:
            problems.append(f"{path}: names the MLflow run {original} that {owners[original]} names too")
            continue
        owners[original] = path
        records.append((path, record))
    if problems:
        raise RecordError("\n".join(["cannot mirror the run records:", *(f"  {p}" for p in problems)]))
    return records


# ----------------------------------------------------------------------------- the mirror


def _delete(client: MlflowClient, run_id: str) -> None:
    _retry(lambda: client.delete_run(run_id), uri=client.tracking_uri)


def _write(client: MlflowClient, root: Path, path: Path, record: dict[str, Any]) -> None:
    """One run, logged as the runner logs it; an error marks it FAILED (RunTracker), then deletes it."""
    provenance = record["provenance"]
    tags = {
        **record_tags(record),
        ORIGINAL_RUN_ID: provenance["mlflow_run_id"],
        MIRRORED_FROM: path.as_posix(),
    }
    times = {}
    if "finished_at" in provenance:  # the training's own times, not the mirror's
        ended = datetime.fromisoformat(provenance["finished_at"]).timestamp()
        times = {
            "end_time": round(ended * 1000),
            "start_time": round((ended - provenance.get("duration_s", 0)) * 1000),
        }
    tracker = RunTracker(
        provenance["mlflow_experiment"],
        record_run_name(record),
        logged_params(record["config"]),
        tags,
        **times,
    )
    try:
        with tracker:
            for step, metrics in _steps(record):
                tracker.log_metrics(metrics, step=step)
            tracker.log_artifact(str(root / path), "record")
            if "tuning_point" not in provenance:  # a tuning trial is not in the report
                for file, folder in report_files(root / "reports", record["paper"]):
                    tracker.log_artifact(str(file), folder)
    except BaseException:
        if tracker.run_id is not None:
            try:
                _delete(client, tracker.run_id)
            except Exception as err:  # the store is gone: the next mirror replaces the unfinished run
                print(
                    f"warning: could not delete the unfinished run {tracker.run_id}: {err}", file=sys.stderr
                )
        raise


def _plan(
    client: MlflowClient, records: Iterable[tuple[Path, dict[str, Any]]], summary: MirrorSummary
) -> list:
    """What to write: (path, record, unfinished mirrors to replace); a conflict for any record stops all."""
    todo, conflicts, experiments = [], [], {}
    for path, record in records:
        original = record["provenance"]["mlflow_run_id"]
        run, mirrored = _lookup(client, record, experiments)
        finished = [r for r in mirrored if r.info.status == "FINISHED"]
        if run is not None:
            summary.originals.append(original)
        elif len(finished) > 1:
            conflicts.append(f"{path}: {_several(client.tracking_uri, original, finished)}")
        elif finished:
            found = differences(finished[0], record)
            if found:
                shown = "; ".join(found[:3]) + (" ..." if len(found) > 3 else "")
                conflicts.append(
                    f"{path}: the store holds run {finished[0].info.run_id} as the mirror of run {original}, "
                    f"but it differs: {shown}"
                )
            else:
                summary.already.append(original)
        else:
            todo.append((path, record, mirrored))
    if conflicts:
        raise MirrorConflict(
            "\n".join(
                [
                    f"the MLflow store {client.tracking_uri} already holds a different run under a record's "
                    "original run id; nothing was mirrored:",
                    *(f"  {c}" for c in conflicts),
                    "delete those runs from the store (or mirror into another store) and run it again",
                ]
            )
        )
    return todo


def mirror_records(
    root: Path = Path("."),
    papers: Iterable[str] | None = None,
    progress: bool = True,
) -> MirrorSummary:
    """Mirror the records under ``root/records`` (only ``papers`` if given) into the store; see the module.

    Every record is read and checked, the store reached and every record looked up in it before the first
    write.
    """
    records_root = root / "records"
    paths = record_files(records_root, papers)
    if not paths:
        raise RecordError(f"no run records under {records_root}: nothing to mirror")
    records = [(path.relative_to(root), record) for path, record in read_records(paths)]
    uri = check_tracking_store()  # the store RunTracker logs to
    client = _client(uri)
    summary = MirrorSummary(uri)
    try:
        todo = _plan(client, records, summary)
        for path, record, unfinished in tqdm(todo, desc="mirror", unit="run", disable=not progress):
            for run in unfinished:
                _delete(client, run.info.run_id)
            if unfinished:
                summary.replaced.append(record["provenance"]["mlflow_run_id"])
            _write(client, root, path, record)
            summary.mirrored.append(record["provenance"]["mlflow_run_id"])
    except TrackingStoreError:
        raise
    except MlflowException as err:
        raise TrackingStoreError(
            f"the MLflow tracking store {uri} failed while mirroring: {_first_line(err)}; the "
            f"{len(summary.mirrored)} run(s) mirrored before are complete: run `repro mirror` again to finish"
        ) from err
    return summary
