"""MLflow runs for the training runs: params, per-epoch metrics, final metrics and provenance tags.

The store is ``MLFLOW_TRACKING_URI`` if set (a team's server), else a SQLite database at the
repository root (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows it; MLflow 3's
default URI is the same file when started from the root). Only the main process logs.

Several writers may share one SQLite store (``dvc exp run --queue`` workers, ``dvc queue start -j N``): the
schema of a new database is created under an exclusive file lock (two processes creating it at once would
break each other's migrations), and "database is locked" answers are retried with backoff. A store that
cannot be used is a ``TrackingStoreError`` naming the URI: ``check_tracking_store()`` finds it before any
training, in seconds rather than after MLflow's minutes of HTTP retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.errors import UserError
from common.tracking.provenance import repo_root

T = TypeVar("T")
_BATCH = 100  # MLflow accepts at most 100 params and 1000 metrics per log_batch call
PROBE_TIMEOUT_S = 5.0  # the longest check_tracking_store waits for a server's answer


class TrackingStoreError(UserError, MlflowException):
    """The tracking store cannot be reached or written; the message names the URI and what to do."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _what_to_do() -> str:
    default = f"sqlite:///{repo_root() / 'mlflow.db'}"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"start the store or fix MLFLOW_TRACKING_URI, or unset MLFLOW_TRACKING_URI to log to {default}"
    return "make it writable, or set MLFLOW_TRACKING_URI to a store that is"


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return text.split("\n", 1)[0][:300]


def _store_failed(uri: str, err: MlflowException) -> TrackingStoreError:
    return TrackingStoreError(
        f"the MLflow tracking store {uri} failed: {_first_line(err)}; check the store (free disk space, "
        "permissions, the server) and run the stage again"
    )


def _retry(call: Callable[[], T], attempts: int = 8, uri: str | None = None) -> T:
    """SQLite answers 'database is locked' under concurrent writers: back off and try again.

    A database that stays unusable (locked past the retries, disk full, read-only) is a
    ``TrackingStoreError`` naming the store.
    """
    for attempt in range(attempts):
        try:
            return call()
        except TrackingStoreError:
            raise
        except MlflowException as err:
            locked = "locked" in str(err).lower()
            if locked and attempt < attempts - 1:
                time.sleep(0.2 * 2**attempt * (0.5 + random.random()))  # jitter: writers fall out of step
                continue
            # TEMPORARILY_UNAVAILABLE: the database itself failed (an SQLAlchemy OperationalError)
            if err.error_code == "TEMPORARILY_UNAVAILABLE":
                raise _store_failed(uri or tracking_uri(), err) from err
            raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """Exclusive across processes for one SQLite database: MLflow creates a new one's schema unguarded."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (MLflow itself does the same)
        yield
        return
    database = _sqlite_path(uri)
    key = str(database.resolve()) if database is not None else uri
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"repro-mlflow-schema-{digest}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_opened: set[str] = set()


def _client(uri: str | None = None) -> MlflowClient:
    """A client whose store is open: a new SQLite database gets its schema once, under the lock."""
    uri = uri or tracking_uri()
    if uri in _opened:
        return MlflowClient(uri)
    lock = _schema_lock(uri) if urlparse(uri).scheme == "sqlite" else contextlib.nullcontext()
    with lock:  # MlflowClient() itself opens the store, and creates a new database's schema
        client = _retry(lambda: MlflowClient(uri), uri=uri)
        _retry(lambda: client.search_experiments(max_results=1), uri=uri)
    _opened.add(uri)
    return client


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (relative to the working dir, as SQLAlchemy reads it)."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def absent_sqlite_store(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI when it does not exist (opening it would create an empty store),
    else ``None``: a readable check for "no store here yet", as on a clean clone."""
    if urlparse(uri).scheme != "sqlite":
        return None
    database = _sqlite_path(uri)
    return database if database is not None and not database.is_file() else None


def _unusable(uri: str, why: str) -> TrackingStoreError:
    return TrackingStoreError(f"the MLflow tracking store {uri} cannot be used: {why}; {_what_to_do()}")


def _check_sqlite(uri: str) -> None:
    database = _sqlite_path(uri)
    if database is None:
        return
    directory = database.parent
    if not directory.is_dir():
        raise _unusable(uri, f"the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _unusable(uri, f"the directory {directory} is not writable (SQLite writes its journal there)")
    if database.exists() and (not database.is_file() or not os.access(database, os.R_OK | os.W_OK)):
        raise _unusable(uri, f"{database} is not a writable file")


def _check_http(uri: str) -> None:
    """One request with a short timeout and no retries (MLflow's own client retries for minutes)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    timeout = PROBE_TIMEOUT_S
    with contextlib.suppress(ValueError):
        timeout = min(timeout, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout)))
    endpoint = "/api/2.0/mlflow/experiments/search"
    try:
        response = http_request(
            get_default_host_creds(uri),
            endpoint,
            "POST",
            max_retries=0,
            backoff_factor=0,
            timeout=timeout,
            raise_on_status=False,
            json={"max_results": 1},
        )
    except MlflowException as err:
        text = str(err)
        if "Connection refused" in text:
            why = "connection refused (no server listens there)"
        elif "timed out" in text.lower():
            why = f"no answer within {timeout:g} s"
        elif "resolution" in text or "not known" in text or "nodename" in text:
            why = "unknown host"
        else:
            why = _first_line(err)
        raise _unusable(uri, why) from err
    if response.status_code in (401, 403):
        raise _unusable(
            uri,
            f"the server refused the credentials (HTTP {response.status_code}); set MLFLOW_TRACKING_TOKEN or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        )
    if response.status_code != 200:
        raise _unusable(
            uri, f"it answered HTTP {response.status_code} to {endpoint}: is it an MLflow tracking server?"
        )


def check_tracking_store(uri: str | None = None) -> str:
    """Fail now, before any training, if runs could not be logged; returns the URI.

    SQLite: the database's directory exists and is writable, the file (if any) is writable, and the
    database opens (a new one gets its schema). HTTP(S): the server answers one search request within
    ``PROBE_TIMEOUT_S`` (or ``MLFLOW_HTTP_REQUEST_TIMEOUT`` if lower). Other stores are opened through
    MLflow. Raises a ``TrackingStoreError`` naming the URI and what to do.
    """
    uri = uri or tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_http(uri)
        return uri
    if scheme == "sqlite":
        _check_sqlite(uri)
    try:
        _client(uri)
    except TrackingStoreError:
        raise
    except Exception as err:  # whatever the store raises, the user needs the URI and one line
        raise _unusable(uri, f"{type(err).__name__}: {_first_line(err)}") from err
    return uri


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


# MLflow 3 opens an experiment on the view its kind names; without the tag it guesses the GenAI overview
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment ``name`` (created if new), marked as one of training runs (``EXPERIMENT_KIND``)."""
    uri = client.tracking_uri
    experiment = _retry(lambda: client.get_experiment_by_name(name), uri=uri)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND[0]) is None:
            _retry(lambda: client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND), uri=uri)
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = (repo_root() / "mlartifacts" / name).as_uri()
    tags = dict([EXPERIMENT_KIND])
    try:
        return _retry(
            lambda: client.create_experiment(name, artifact_location=artifact_location, tags=tags), uri=uri
        )
    except MlflowException:  # created meanwhile by a concurrent writer
        experiment = _retry(lambda: client.get_experiment_by_name(name), uri=uri)
        if experiment is None:
            raise
        return experiment.experiment_id


def mark_abandoned(run_id: str) -> bool:
    """Mark a run that died without closing (SIGKILL, power loss) as KILLED; True if it was still RUNNING."""
    uri = tracking_uri()
    client = _client(uri)
    try:
        run = _retry(lambda: client.get_run(run_id), uri=uri)
    except TrackingStoreError:
        raise
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    _retry(
        lambda: client.set_tag(run_id, "abandoned", "process died before the run ended; resumed elsewhere"),
        uri=uri,
    )
    _retry(lambda: client.set_terminated(run_id, status="KILLED"), uri=uri)
    return True


PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value; longer values are cut there


def run_name(method: str, dataset: str, seed: int, tuning_point: str | None = None) -> str:
    """The MLflow run name of a run (``tune/...`` for a tuning trial at ``tuning_point``)."""
    if tuning_point is not None:
        return f"tune/{method}/{dataset}/{tuning_point}/seed{seed}"
    return f"{method}/{dataset}/seed{seed}"


class RunTracker:
    """One MLflow run; a context manager that marks the run FAILED or KILLED if the block raises."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        enabled: bool = True,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> None:
        """``start_time``, ``end_time`` (ms since the epoch): a run logged after the fact (a mirror) keeps
        the times of its training; unset, MLflow's clock at the start and the end."""
        self.experiment = experiment
        self.start_time = start_time
        self.end_time = end_time
        self.run_name = run_name
        self.params = flatten(params)
        self.tags = {k: str(v) for k, v in tags.items()}
        self.enabled = enabled
        self.run_id: str | None = None
        self._client: MlflowClient | None = None
        self._uri: str | None = None

    def __enter__(self) -> RunTracker:
        if not self.enabled:
            return self
        self._uri = tracking_uri()
        self._client = _client(self._uri)
        exp_id = experiment_id(self._client, self.experiment)
        run = _retry(
            lambda: self._client.create_run(
                exp_id, run_name=self.run_name, tags=self.tags, start_time=self.start_time
            ),
            uri=self._uri,
        )
        self.run_id = run.info.run_id
        params = [Param(k, v[:PARAM_VALUE_LIMIT]) for k, v in sorted(self.params.items())]
        for i in range(0, len(params), _BATCH):
            _retry(
                lambda i=i: self._client.log_batch(self.run_id, params=params[i : i + _BATCH]), uri=self._uri
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.enabled or self.run_id is None:
            return
        if exc_type is None:
            status = "FINISHED"
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            if exc_type is not None:
                self.set_tags({"error": f"{exc_type.__name__}: {exc}"[:5000]})
            end_time = self.end_time if exc_type is None else None
            _retry(
                lambda: self._client.set_terminated(self.run_id, status=status, end_time=end_time),
                uri=self._uri,
            )
        except MlflowException as err:
            if exc_type is None:
                raise
            # the run's own error is what the user must see; the next start marks this run KILLED
            print(
                f"warning: MLflow run {self.run_id} could not be marked {status}: {_first_line(err)}",
                file=sys.stderr,
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled and self.run_id:
            batch = [RunTag(k, str(v)) for k, v in tags.items()]
            _retry(lambda: self._client.log_batch(self.run_id, tags=batch), uri=self._uri)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled or self.run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        _retry(lambda: self._client.log_batch(self.run_id, metrics=batch), uri=self._uri)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id:
            _retry(lambda: self._client.log_artifact(self.run_id, path, artifact_path), uri=self._uri)
