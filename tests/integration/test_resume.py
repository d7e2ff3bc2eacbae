"""A run killed with SIGKILL mid-training resumes from its last checkpoint and ends as if never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.integration.test_runner import tiny_params

# runs go in sorted method order: contrastive is the first
FIRST_RUN = Path("records/multi_similarity/omniglot/contrastive/seed0.json")


def _workspace(root: Path, tiny_prepared: Path) -> tuple[Path, dict[str, str]]:
    root.mkdir()
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(tiny_prepared)
    tiny_params(root, epochs=3, batches_per_epoch=25)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": str(Path.cwd()),
    }
    return root, env


def _command() -> list[str]:
    return [sys.executable, "-m", "common.runner", "multi_similarity", "--dataset", "omniglot"]


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, tiny_prepared):
    reference, env = _workspace(tmp_path / "reference", tiny_prepared)
    subprocess.run(_command(), cwd=reference, env=env, check=True, capture_output=True)

    killed, env = _workspace(tmp_path / "killed", tiny_prepared)
    process = subprocess.Popen(
        _command(), cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = killed / "checkpoints" / "multi_similarity" / "omniglot" / "contrastive"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("seed0-*/epoch_1")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / FIRST_RUN).exists(), "killed too late: the first run had already finished"

    subprocess.run(_command(), cwd=killed, env=env, check=True, capture_output=True)
    resumed = json.loads((killed / FIRST_RUN).read_text())
    uninterrupted = json.loads((reference / FIRST_RUN).read_text())
    assert resumed["provenance"]["resumed_from_epoch"] >= 1
    assert resumed["metrics"] == uninterrupted["metrics"], "bit-for-bit equal metrics expected on CPU"
    assert [h["train_loss"] for h in resumed["history"]] == [
        h["train_loss"] for h in uninterrupted["history"]
    ]

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [killed_id] = resumed["provenance"]["earlier_attempts"]
    assert client.get_run(killed_id).info.status == "KILLED"
    new_run = client.get_run(resumed["provenance"]["mlflow_run_id"])
    assert new_run.info.status == "FINISHED"
    assert new_run.data.tags["resumed_from"] == killed_id
    steps = [m.step for m in client.get_metric_history(new_run.info.run_id, "train_loss")]
    assert steps == [1, 2, 3], "the resumed MLflow run carries the whole per-epoch history"
