"""The e2e fixtures: a committed temporary copy of the repository on the smoke profile, and one real
`dvc repro` of it shared by every e2e test that reads its outputs (a test that edits a file there restores
it before it returns); and the helpers that queue `dvc exp run` experiments, run them in several `dvc queue`
workers and check that the MLflow store holds exactly the runs of their records.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.tracking.mirror import record_params
from tests.conftest import REPO

BIN = Path(sys.executable).parent
PAPER_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())["multi_similarity"]
METHODS = set(PAPER_PARAMS["methods"])
DATASETS = set(PAPER_PARAMS["datasets"])
# the queued experiments of the queue tests: two learning rates of one run stage
QUEUE_STAGE = "run-multi_similarity-omniglot"
QUEUE_LR_KEY = "multi_similarity.train.optimizer.lr"


def omniglot_source() -> Path | None:
    for candidate in (os.environ.get("OMNIGLOT_DIR"), REPO.parent / "shared" / "data" / "omniglot"):
        if candidate and (Path(candidate) / "images_background_small1.zip").is_file():
            return Path(candidate).resolve()
    return None


def fashion_mnist_available() -> bool:
    return bool(os.environ.get("FASHION_MNIST_DIR")) or Path("/usr/share/datasets/fashion-mnist").is_dir()


def local_omniglot(fashion_mnist: bool = True) -> Path:
    """The Omniglot source; skips the test where the local data it needs (and Fashion-MNIST) is missing."""
    omniglot = omniglot_source()
    if omniglot is None:
        pytest.skip("no local Omniglot source: set OMNIGLOT_DIR to a folder with the small background zips")
    if fashion_mnist and not fashion_mnist_available():
        pytest.skip("no local Fashion-MNIST: apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR")
    return omniglot


def pipeline_env(*first_on_path: Path, **extra: str) -> dict[str, str]:
    """The environment for `dvc` in a copy: this venv first on PATH (the stages run `python -m ...`), no
    inherited tracking URI or DVC root, no analytics; ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PATH"] = os.pathsep.join([*map(str, first_on_path), str(BIN), env.get("PATH", "")])
    return env | {"DVC_NO_ANALYTICS": "1"} | extra


def copy_repo(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not name.startswith(("records/", "reports/", "dvc.lock")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def make_smoke_repo(tmp_path_factory, name: str, omniglot: Path, profile: str = "smoke") -> Path:
    """A committed git copy of the working tree (no records, reports or lock) on the smoke profile."""
    repo = tmp_path_factory.mktemp(name) / "repo"
    repo.mkdir()
    copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = profile
    params["data"]["omniglot"]["source_dir"] = str(omniglot)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", name)
    return repo


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    repo = make_smoke_repo(tmp_path_factory, "smoke", local_omniglot())
    env = pipeline_env()
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return repo, env, seconds


# ----------------------------------------------------------------------------- experiments in dvc queue workers


def queue_experiments(repo: Path, env: dict, stage: str, key: str, experiments: dict[str, object]) -> None:
    """`dvc exp run --queue -n NAME -S KEY=VALUE STAGE` for each experiment."""
    for name, value in experiments.items():
        queue = [str(BIN / "dvc"), "exp", "run", "--queue", "-n", name, "-S", f"{key}={value}", stage]
        result = subprocess.run(queue, cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def run_queue(repo: Path, env: dict, experiments: int, jobs: int = 2, timeout: float = 600) -> float:
    """Start `jobs` queue workers, wait until `experiments` experiments are committed (or one failed), stop
    the workers; returns the seconds taken."""
    baseline = git(repo, "rev-parse", "HEAD").strip()
    started = time.perf_counter()
    # `dvc queue start` and polling, not `dvc exp run --run-all`, which can hang after both experiments
    # finished (treeverse/dvc#10398: a worker that never completes its shutdown)
    result = subprocess.run(
        [str(BIN / "dvc"), "queue", "start", "-j", str(jobs)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
            finished = [r for r in refs if r.startswith(experiment_refs(baseline))]
            if len(finished) == experiments or "refs/exps/celery/failed" in refs:
                break
            time.sleep(1)
        _wait_for_workers(repo, 60)
    finally:
        _stop_workers(repo)
    return time.perf_counter() - started


def experiment_refs(baseline: str) -> str:
    """The prefix of the git refs of the experiments based on commit ``baseline``."""
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


def committed_experiments(repo: Path, baseline: str, records: str) -> dict[str, dict]:
    """Each finished experiment's committed params and the records under ``records``, read from its git ref."""
    refs = git(repo, "for-each-ref", "--format=%(refname)", experiment_refs(baseline)).split()
    found = {}
    for ref in refs:
        name = ref.rsplit("/", 1)[1]
        files = git(repo, "ls-tree", "-r", "--name-only", ref, records).split()
        found[name] = {
            "ref": ref,
            "params": yaml.safe_load(git(repo, "show", f"{ref}:params.yaml")),
            "records": [json.loads(git(repo, "show", f"{ref}:{f}")) for f in files if f.endswith(".json")],
        }
    return found


def assert_queue_finished(repo: Path, experiments: dict[str, dict], names) -> None:
    if sorted(experiments) != sorted(names):
        queue = subprocess.run(
            [str(BIN / "dvc"), "queue", "status"], cwd=repo, capture_output=True, text=True
        )
        pytest.fail(f"not every experiment finished and was committed:\n{queue.stdout}")


def assert_runs_are_their_records(runs: dict, owner: dict[str, tuple[str, dict]]) -> None:
    """The store's runs (id -> Run) are exactly the records' runs (id -> (experiment, record)), each
    FINISHED with its own record's name, params, tags and metrics: nothing missing, extra or mixed."""
    assert set(runs) == set(owner), "an MLflow run without a record, or a record without its run"
    for run_id, (name, record) in owner.items():
        run = runs[run_id]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{record['method']}/{record['dataset']}/seed{record['seed']}"
        assert run.data.params == record_params(record), f"{name}: params of another run"
        assert run.data.tags["params_hash"] == record["config_hash"]
        assert run.data.tags["method"] == record["method"]
        assert run.data.tags["git_commit"] == record["provenance"]["git_commit"]
        for metric, value in record["metrics"].items():
            assert run.data.metrics[metric] == pytest.approx(value), f"{name} {record['method']}: {metric}"


def assert_ran_at_once(runs: dict, owner: dict[str, tuple[str, dict]], first: str, second: str) -> None:
    """Some run of experiment ``first`` overlapped in time with some run of experiment ``second``."""
    intervals = {
        name: [(runs[i].info.start_time, runs[i].info.end_time) for i, (n, _) in owner.items() if n == name]
        for name in (first, second)
    }
    assert any(a0 < b1 and b0 < a1 for a0, a1 in intervals[first] for b0, b1 in intervals[second]), (
        "the two experiments did not run at the same time"
    )
