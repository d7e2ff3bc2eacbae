"""The run stage under `accelerate launch` with two CPU processes: one record and one MLflow run per run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.test_runner import tiny_params

pytestmark = pytest.mark.distributed


def test_two_process_launch_trains_every_run_once(tmp_path, tiny_prepared):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(tiny_prepared)
    tiny_params(tmp_path, epochs=2, batches_per_epoch=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": str(Path.cwd()),
        "ACCELERATE_USE_CPU": "true",
    }
    with socket.socket() as probe:  # a free port, so that runs beside this one cannot collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [Path(sys.executable).parent / "accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", str(port)]
    command = [*map(str, launch), "-m", "common.cli", "run", "multi_similarity", "--dataset", "omniglot"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("seed*.json")]
    assert records and all(r["provenance"]["world_size"] == 2 for r in records)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(r["provenance"]["mlflow_run_id"] for r in records)
    assert all(r.data.tags["world_size"] == "2" and r.info.status == "FINISHED" for r in runs)
