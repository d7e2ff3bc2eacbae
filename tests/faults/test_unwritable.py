"""An unwritable ``data/`` (or ``data/prepared``) for the prepare stage; an unwritable ``records/``,
``checkpoints/`` or tracking-store directory for the run stage: one line naming the directory, exit status 2,
no traceback, found before any training, so nothing is half-written and no MLflow run is started.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.faults.conftest import RUN, files_under, run_unprivileged

HOW = "make it writable (chmod u+w {d}) or run it from a copy you own"


@pytest.mark.parametrize("unwritable", ["data", "data/prepared"])
def test_prepare_into_an_unwritable_directory_fails_before_reading_the_source(
    tmp_path, read_only, unwritable
):
    (tmp_path / "no-source-here").mkdir()  # a folder without the zips: reading it would fail
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


@pytest.mark.parametrize(
    ("unwritable", "what"), [("records", "the run records"), ("checkpoints", "the checkpoints")]
)
def test_unwritable_records_or_checkpoints_fail_the_stage_before_training(
    workspace, read_only, unwritable, what
):
    root, env = workspace
    read_only(root / unwritable)
    result = run_unprivileged(RUN, cwd=root, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _error_line(result.stderr) == (
        f"run: error: cannot write {what} under {unwritable}/multi_similarity: permission denied: the directory "
        f"{unwritable} is not writable; {HOW.format(d=unwritable)}"
    )
    assert "Traceback" not in result.stderr and "epoch 1/" not in result.stderr, "no training started"
    assert not (root / "records").exists() or files_under(root / "records") == []
    assert _runs(env["MLFLOW_TRACKING_URI"]) == [], "no MLflow run was started"


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
