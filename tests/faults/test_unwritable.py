"""An unwritable ``data/`` (or ``data/prepared``) for the prepare stage; an unwritable ``records/``,
``checkpoints/`` or tracking-store directory for the run stage: one line naming the directory, exit status 2,
no traceback, nothing half-written, the MLflow run (if one was started) marked FAILED.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.faults.conftest import FIRST_RECORD, RUN, files_under, run_unprivileged

HOW = "make it writable (chmod u+w {d}) or run it from a copy you own"


@pytest.mark.parametrize("unwritable", ["data", "data/prepared"])
def test_prepare_into_an_unwritable_directory_fails_before_reading_the_source(
    tmp_path, read_only, unwritable
):
    read_only(tmp_path / unwritable)
    out = "data/prepared/omniglot"
    result = run_unprivileged(
        [sys.executable, "-m", "common.data.prepare", "omniglot", "--out", out]
        + ["--source-dir", str(tmp_path / "no-source-here"), "--no-download"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"prepare omniglot: error: cannot write the prepared dataset under data/prepared: permission denied: "
        f"the directory {unwritable} is not writable; {HOW.format(d=unwritable)}\n"
    )
    assert files_under(tmp_path) == [], "nothing written"


def _error_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("run: error:")]
    return line


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("multi_similarity")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_an_unwritable_records_dir_fails_the_run_and_writes_no_record(workspace, read_only):
    root, env = workspace
    read_only(root / "records")
    result = run_unprivileged(RUN, cwd=root, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _error_line(result.stderr) == (
        f"run: error: cannot write the run record {FIRST_RECORD}: permission denied: the directory records is "
        f"not writable; {HOW.format(d='records')}"
    )
    assert "Traceback" not in result.stderr
    assert files_under(root / "records") == []
    [run] = _runs(env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"


def test_unwritable_checkpoints_fail_the_run_before_training(workspace, read_only):
    root, env = workspace
    read_only(root / "checkpoints")
    result = run_unprivileged(RUN, cwd=root, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _error_line(result.stderr) == (
        "run: error: cannot write checkpoints/multi_similarity: permission denied: the directory checkpoints "
        f"is not writable; {HOW.format(d='checkpoints')}"
    )
    assert "Traceback" not in result.stderr and "epoch 1/" not in result.stderr, "no training started"
    assert not (root / "records").exists()
    [run] = _runs(env["MLFLOW_TRACKING_URI"])
    assert run.info.status == "FAILED"
    assert "train_loss" not in run.data.metrics


def test_a_tracking_store_in_an_unwritable_directory_fails_before_training(workspace, read_only):
    root, env = workspace
    store = read_only(root / "store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    result = run_unprivileged(RUN, cwd=root, env={**env, "MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr[-3000:]
    assert _error_line(result.stderr) == (
        f"run: error: the MLflow tracking store {uri} cannot be used: the directory {store} is not writable "
        "(SQLite writes its journal there); start the store or fix MLFLOW_TRACKING_URI, or unset "
        f"MLFLOW_TRACKING_URI to log to sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    )
    assert "Traceback" not in result.stderr
    assert not (root / "checkpoints").exists() and not (root / "records").exists(), "nothing trained"
    assert list(store.iterdir()) == []
