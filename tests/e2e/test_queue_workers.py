"""Two `dvc exp run --queue` experiments run by two workers at once both land in one MLflow store, whole.

A temporary copy of the repository (as in test_smoke_pipeline) queues two experiments of the omniglot run
stage that differ in the learning rate, then `dvc queue start -j 2` runs them in two workers at the
same time, each in its own temporary copy under `.dvc/tmp/exps/`. Both log to the SQLite store at the
original root (the copies are deleted afterwards: a run logged there would be lost), and MLflow must hold
exactly the runs of the committed records: every run FINISHED, with its own experiment's params and the
metrics of its own record, nothing missing, extra or mixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from common.tracking.mlflow_tracking import flatten
from tests.e2e.conftest import BIN, PAPER_PARAMS, git, make_smoke_repo, omniglot_source

pytestmark = pytest.mark.e2e

STAGE = "run-multi_similarity-omniglot"
LR_KEY = "multi_similarity.train.optimizer.lr"
EXPERIMENTS = {"lr-two": 0.002, "lr-four": 0.004}  # both differ from params.yaml, so both change it
METHODS = set(PAPER_PARAMS["methods"])


@pytest.fixture(scope="module")
def queued_repo(tmp_path_factory):
    omniglot = omniglot_source()
    if omniglot is None:
        pytest.skip("no local Omniglot source: set OMNIGLOT_DIR to a folder with the small background zips")
    repo = make_smoke_repo(tmp_path_factory, "queue", omniglot)

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    for name, lr in EXPERIMENTS.items():
        queue = [str(BIN / "dvc"), "exp", "run", "--queue", "-n", name, "-S", f"{LR_KEY}={lr}", STAGE]
        result = subprocess.run(queue, cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (repo / "mlflow.db").exists()  # the two workers create the store, at the same time
    baseline = git(repo, "rev-parse", "HEAD").strip()
    started = time.perf_counter()
    # `dvc queue start` and polling, not `dvc exp run --run-all`, which can hang after both experiments
    # finished (treeverse/dvc#10398: a worker that never completes its shutdown)
    result = subprocess.run(
        [str(BIN / "dvc"), "queue", "start", "-j", "2"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
            finished = [r for r in refs if r.startswith(_prefix(baseline))]
            if len(finished) == len(EXPERIMENTS) or "refs/exps/celery/failed" in refs:
                break
            time.sleep(1)
        _wait_for_workers(repo, 60)
    finally:
        _stop_workers(repo)
    return repo, env, time.perf_counter() - started


def _prefix(baseline: str) -> str:
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/"


def _workers(repo: Path) -> list[int]:
    """The queue workers this test started (their pid files) that still run in its repository."""
    alive = []
    for info in (repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json"):
        pid = json.loads(info.read_text()).get("pid")
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except (OSError, IndexError, TypeError):
            continue
        if state != "Z" and cwd == repo.resolve():
            alive.append(pid)
    return alive


def _wait_for_workers(repo: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _workers(repo) and time.monotonic() < deadline:
        time.sleep(1)


def _stop_workers(repo: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _workers(repo):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        _wait_for_workers(repo, 20)


def _experiments(repo: Path, baseline: str) -> dict[str, dict]:
    """Each finished experiment's committed params and records, read from its git ref."""
    refs = git(repo, "for-each-ref", "--format=%(refname)", _prefix(baseline)).split()
    found = {}
    for ref in refs:
        name = ref.rsplit("/", 1)[1]
        files = git(repo, "ls-tree", "-r", "--name-only", ref, "records/multi_similarity/omniglot").split()
        found[name] = {
            "ref": ref,
            "params": yaml.safe_load(git(repo, "show", f"{ref}:params.yaml")),
            "records": [json.loads(git(repo, "show", f"{ref}:{f}")) for f in files if f.endswith(".json")],
        }
    return found


def test_both_queued_experiments_land_whole_and_unmixed_in_one_store(queued_repo):
    repo, env, seconds = queued_repo
    print(f"two queued experiments, two workers: {seconds:.1f} s")
    baseline = git(repo, "rev-parse", "HEAD").strip()
    experiments = _experiments(repo, baseline)
    if sorted(experiments) != sorted(EXPERIMENTS):
        queue = subprocess.run(
            [str(BIN / "dvc"), "queue", "status"], cwd=repo, capture_output=True, text=True
        )
        pytest.fail(f"not both experiments finished and were committed:\n{queue.stdout}")

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    owner = {}  # MLflow run id -> (experiment name, record)
    for name, exp in experiments.items():
        lr = EXPERIMENTS[name]
        assert exp["params"]["multi_similarity"]["train"]["optimizer"]["lr"] == lr
        assert {r["method"] for r in exp["records"]} == METHODS and len(exp["records"]) == len(METHODS)
        for record in exp["records"]:
            run_id = record["provenance"]["mlflow_run_id"]
            assert run_id not in owner, "two records name one MLflow run"
            owner[run_id] = (name, record)
    assert len(runs) == len(owner) == len(EXPERIMENTS) * len(METHODS)
    assert set(runs) == set(owner), "an MLflow run without a record, or a record without its run"

    for run_id, (name, record) in owner.items():
        run = runs[run_id]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{record['method']}/omniglot/seed{record['seed']}"
        assert run.data.params == flatten(record["config"]), f"{name}: params of another run"
        assert run.data.params["optimizer.lr"] == str(EXPERIMENTS[name])
        assert run.data.tags["params_hash"] == record["config_hash"]
        assert run.data.tags["method"] == record["method"]
        assert run.data.tags["git_commit"] == record["provenance"]["git_commit"] == baseline
        # read in the experiment's own copy, whose params.yaml differs from the commit (not in the original root)
        assert run.data.tags["git_dirty"] == "True"
        for metric, value in record["metrics"].items():
            assert run.data.metrics[metric] == pytest.approx(value), f"{name} {record['method']}: {metric}"
        [artifact] = client.list_artifacts(run_id, "record")
        logged = repo / "mlartifacts" / "multi_similarity" / run_id / "artifacts" / artifact.path
        assert json.loads(logged.read_text()) == record, "the record artifact lies at the original root"

    by_method = {}
    for name, record in owner.values():
        by_method.setdefault(record["method"], {})[name] = record["metrics"]["map_at_r"]
    assert any(len(set(values.values())) == 2 for values in by_method.values()), (
        "the two learning rates must give different metrics, or a mix-up could not show"
    )

    intervals = {
        name: [(runs[i].info.start_time, runs[i].info.end_time) for i, (n, _) in owner.items() if n == name]
        for name in EXPERIMENTS
    }
    first, second = intervals.values()
    assert any(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second), (
        "the two experiments did not run at the same time"
    )
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "no store inside a temporary copy"
