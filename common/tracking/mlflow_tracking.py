"""MLflow runs for the training runs: params, per-epoch metrics, final metrics and provenance tags.

The store is ``MLFLOW_TRACKING_URI`` if set (a team's server), else a SQLite database at the
repository root (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows it; MLflow 3's
default URI is the same file when started from the root). Only the main process logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.tracking.provenance import repo_root

T = TypeVar("T")
_BATCH = 100  # MLflow accepts at most 100 params and 1000 metrics per log_batch call


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _retry(call: Callable[[], T], attempts: int = 8) -> T:
    """SQLite answers 'database is locked' under concurrent writers: back off and try again."""
    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as err:
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = _retry(lambda: client.get_experiment_by_name(name))
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:"):
        artifact_location = (repo_root() / "mlartifacts" / name).as_uri()
    try:
        return _retry(lambda: client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # created meanwhile by a concurrent writer
        return _retry(lambda: client.get_experiment_by_name(name)).experiment_id


def mark_abandoned(run_id: str) -> bool:
    """Mark a run that died without closing (SIGKILL, power loss) as KILLED; True if it was still RUNNING."""
    client = MlflowClient(tracking_uri())
    try:
        run = _retry(lambda: client.get_run(run_id))
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    _retry(
        lambda: client.set_tag(run_id, "abandoned", "process died before the run ended; resumed elsewhere")
    )
    _retry(lambda: client.set_terminated(run_id, status="KILLED"))
    return True


class RunTracker:
    """One MLflow run; a context manager that marks the run FAILED or KILLED if the block raises."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        enabled: bool = True,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.params = flatten(params)
        self.tags = {k: str(v) for k, v in tags.items()}
        self.enabled = enabled
        self.run_id: str | None = None
        self._client: MlflowClient | None = None

    def __enter__(self) -> RunTracker:
        if not self.enabled:
            return self
        self._client = MlflowClient(tracking_uri())
        exp_id = experiment_id(self._client, self.experiment)
        run = _retry(lambda: self._client.create_run(exp_id, run_name=self.run_name, tags=self.tags))
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in sorted(self.params.items())]
        for i in range(0, len(params), _BATCH):
            _retry(lambda i=i: self._client.log_batch(self.run_id, params=params[i : i + _BATCH]))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled or self.run_id is None:
            return
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
        _retry(lambda: self._client.set_terminated(self.run_id, status=status))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled and self.run_id:
            batch = [RunTag(k, str(v)) for k, v in tags.items()]
            _retry(lambda: self._client.log_batch(self.run_id, tags=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled or self.run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        _retry(lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id:
            _retry(lambda: self._client.log_artifact(self.run_id, path, artifact_path))
