"""A tracking store that cannot be reached or written fails the run stage before any training, in seconds,
with one line naming the URI and what to do; several processes opening one new SQLite store at once all work;
a queued experiment's temporary copy never becomes the store's home.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from common import runner
from common.errors import UserError
from common.tracking import mlflow_tracking
from common.tracking.mlflow_tracking import TrackingStoreError, check_tracking_store
from common.tracking.provenance import git_commit, repo_root
from tests.conftest import REPO


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fails_fast(uri: str, seconds: float = 10.0) -> str:
    started = time.monotonic()
    with pytest.raises(TrackingStoreError) as caught:
        check_tracking_store(uri)
    assert time.monotonic() - started < seconds, "MLflow's own retries take minutes; the check must not"
    assert isinstance(caught.value, UserError)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"the MLflow tracking store {uri} cannot be used: ")
    return message


def test_a_server_that_does_not_listen(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    uri = f"http://127.0.0.1:{_closed_port()}"
    message = _fails_fast(uri)
    assert "connection refused (no server listens there)" in message
    assert (
        "start the store or fix MLFLOW_TRACKING_URI, or unset MLFLOW_TRACKING_URI to log to sqlite:///"
        in message
    )


def test_a_server_that_does_not_answer(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        message = _fails_fast(f"http://127.0.0.1:{silent.getsockname()[1]}", seconds=5)
    assert "no answer within 1 s" in message


def test_a_server_that_is_not_mlflow():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        message = _fails_fast(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert (
        "it answered HTTP 404 to /api/2.0/mlflow/experiments/search: is it an MLflow tracking server?"
        in message
    )


def test_sqlite_in_a_missing_directory_and_a_file_that_is_no_database(tmp_path):
    missing = tmp_path / "no" / "such"
    message = _fails_fast(f"sqlite:///{missing / 'mlflow.db'}")
    assert f"the directory {missing} does not exist" in message
    assert not missing.exists()

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    message = _fails_fast(f"sqlite:///{garbage}")
    assert "file is not a database" in message


def test_a_new_sqlite_store_passes_and_is_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert check_tracking_store(uri) == uri
    assert MlflowClient(uri).search_experiments() is not None


def test_the_run_stage_stops_before_training_on_an_unreachable_store(workspace, monkeypatch, capsys):
    root, _ = workspace
    monkeypatch.chdir(root)
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    code = runner.main(["multi_similarity", "--dataset", "omniglot"])
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert code == 2
    assert err.startswith(f"run: error: the MLflow tracking store {uri} cannot be used: connection refused")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == ["data", "params.yaml"], (
        "nothing trained, nothing written"
    )


def test_a_database_failure_mid_run_names_the_store():
    def disk_full():
        raise MlflowException("(sqlite3.OperationalError) database or disk is full", TEMPORARILY_UNAVAILABLE)

    with pytest.raises(TrackingStoreError) as caught:
        mlflow_tracking._retry(disk_full, uri="sqlite:////somewhere/mlflow.db")
    assert str(caught.value).startswith(
        "the MLflow tracking store sqlite:////somewhere/mlflow.db failed: (sqlite3.OperationalError) database "
        "or disk is full; "
    )
    assert isinstance(caught.value, MlflowException), "callers that catch MlflowException still do"


def test_a_locked_sqlite_database_is_retried_with_backoff(monkeypatch):
    """Concurrent writers (a stage's workers, queue workers) may find SQLite locked past its busy timeout: the
    call is tried again after a growing pause, and a database locked for good names the store."""
    pauses: list[float] = []
    monkeypatch.setattr(mlflow_tracking.time, "sleep", pauses.append)
    calls = []

    def locked_twice():
        calls.append(1)
        if len(calls) <= 2:
            raise MlflowException("(sqlite3.OperationalError) database is locked", TEMPORARILY_UNAVAILABLE)
        return "logged"

    assert mlflow_tracking._retry(locked_twice, uri="sqlite:////somewhere/mlflow.db") == "logged"
    assert len(pauses) == 2 and all(pause > 0 for pause in pauses)

    def locked():
        raise MlflowException("(sqlite3.OperationalError) database is locked", TEMPORARILY_UNAVAILABLE)

    with pytest.raises(
        TrackingStoreError, match=r"sqlite:////somewhere/mlflow.db failed: .*database is locked"
    ):
        mlflow_tracking._retry(locked, attempts=3, uri="sqlite:////somewhere/mlflow.db")


_OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from common.tracking import RunTracker
ready, n = Path(sys.argv[1]), int(sys.argv[2])
(ready / sys.argv[3]).touch()
while len(list(ready.iterdir())) < n:  # every process imported: all open the new store at the same moment
    time.sleep(0.001)
with RunTracker("multi_similarity", f"writer{sys.argv[3]}", {"lr": 0.1}, {"writer": sys.argv[3]}) as tracker:
    tracker.log_metrics({"map_at_r": float(sys.argv[3])}, step=1)
"""


def test_several_processes_creating_one_new_sqlite_store_at_once_all_succeed(tmp_path):
    """MLflow creates a new database's schema unguarded: two creators break each other's migrations."""
    n = 3
    ready = tmp_path / "ready"
    ready.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT_ONCE, str(ready), str(n), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outcomes = [(w.wait(timeout=300), w.stderr.read()) for w in writers]
    for code, err in outcomes:
        assert code == 0, err[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
    assert sorted(r.data.tags["writer"] for r in runs) == [str(i) for i in range(n)]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["writer"]: r.data.metrics["map_at_r"] for r in runs} == {str(i): i for i in range(n)}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_queued_experiment_logs_to_the_original_root_and_reads_provenance_in_its_copy(
    tmp_path, monkeypatch
):
    """In ``dvc exp run --queue`` the stage runs in ``<root>/.dvc/tmp/exps/<tmp>``, a git work tree of its own."""
    root = tmp_path / "repo"
    copy = root / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    _git(copy, "init", "-q")
    (copy / "params.yaml").write_text("lr: 0.1\n")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-qm", "baseline")
    monkeypatch.chdir(copy)
    for dvc_root in (str(root), str(copy), None):  # DVC 3 sets the original root; older ones, the copy
        if dvc_root is None:
            monkeypatch.delenv("DVC_ROOT", raising=False)
        else:
            monkeypatch.setenv("DVC_ROOT", dvc_root)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert repo_root() == root.resolve()
        assert mlflow_tracking.tracking_uri() == f"sqlite:///{root.resolve() / 'mlflow.db'}"
        assert git_commit() == _git(copy, "rev-parse", "HEAD"), "the copy's commit, not the original's"
