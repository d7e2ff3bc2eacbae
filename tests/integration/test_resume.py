"""A run killed with SIGKILL mid-training resumes from its last checkpoint and ends as if never killed; so do
the runs of two workers when the stage is killed while both train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from common.records import read_paper_records
from tests.integration.test_parallel import assert_same_records
from tests.integration.test_runner import tiny_params

# runs go in sorted method order: contrastive is the first
FIRST_RUN = Path("records/multi_similarity/omniglot/contrastive/seed0.json")


def _workspace(
    root: Path, tiny_prepared: Path, workers: int = 1, batches: int = 25
) -> tuple[Path, dict[str, str]]:
    root.mkdir()
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(tiny_prepared)
    tiny_params(root, epochs=3, batches_per_epoch=batches)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": str(Path.cwd()),
        "REPRO_WORKERS": str(workers),
        "REPRO_THREADS": "1",
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


def _workers_of(parent: int) -> list[int]:
    """The pool's worker processes of ``parent`` (spawned: ``spawn_main`` in their command line)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_stage_killed_while_two_workers_train_resumes_both_runs(tmp_path, tiny_prepared):
    """SIGKILL to the stage while two workers are past their first epoch: the workers die with it (no orphan
    keeps training into the checkpoints), and the restarted stage resumes both runs and ends with the records of
    an uninterrupted stage."""
    # long enough epochs (about 2 s) that the second worker, started a moment later, is caught mid-run too
    reference, env = _workspace(tmp_path / "reference", tiny_prepared, workers=2, batches=150)
    subprocess.run(_command(), cwd=reference, env=env, check=True, capture_output=True)

    killed, env = _workspace(tmp_path / "killed", tiny_prepared, workers=2, batches=150)
    process = subprocess.Popen(
        _command(), cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first_two = [
        killed / "checkpoints/multi_similarity/omniglot" / m for m in ("contrastive", "ms_no_mining")
    ]
    deadline = time.monotonic() + 180
    while not all(list(c.glob("seed0-*/epoch_[12]")) for c in first_two):
        assert process.poll() is None, "the stage ended before both runs had a checkpoint"
        assert time.monotonic() < deadline, "no checkpoints after 180 s"
        time.sleep(0.02)
    workers = _workers_of(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(workers) == 2, workers
    assert not list((killed / "records").rglob("seed0.json")), "killed too late: a run had already finished"
    deadline = time.monotonic() + 10
    try:
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived the stage"
            time.sleep(0.05)
    finally:  # no orphan left behind when they did
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)

    subprocess.run(_command(), cwd=killed, env=env, check=True, capture_output=True)
    resumed = read_paper_records(killed / "records", "multi_similarity")
    assert sorted(r["method"] for r in resumed if r["provenance"]["resumed_from_epoch"] >= 1) == [
        "contrastive",
        "ms_no_mining",
    ]
    assert_same_records(resumed, read_paper_records(reference / "records", "multi_similarity"))
