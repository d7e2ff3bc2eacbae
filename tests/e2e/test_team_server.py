"""A team shares one MLflow tracking server on PostgreSQL; the pipeline runs against it unchanged.

The test starts PostgreSQL (Debian's `postgresql`, as a non-root user, on loopback, in a temporary data
directory) and an `mlflow server` backed by it, and points `MLFLOW_TRACKING_URI` at the server. In a committed
copy of the repository on the smoke profile:

- `dvc repro report-multi_similarity` (prepare, run and report stages of a paper) logs every run to the
  server, and `repro audit` passes against it;
- two `dvc exp run --queue` experiments run by two `dvc queue` workers at once both land whole: the server
  holds exactly the runs of the committed records, each with its own params and metrics;
- `repro mirror` fills the server from committed records (a paper of this checkout) over HTTP, and adds
  nothing for runs already there, mirrored or original.

Skipped, saying so, where PostgreSQL's server programs are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.conftest import (
    BIN,
    METHODS,
    PAPER_PARAMS,
    QUEUE_LR_KEY,
    QUEUE_STAGE,
    assert_queue_finished,
    assert_ran_at_once,
    assert_runs_are_their_records,
    committed_experiments,
    git,
    local_omniglot,
    make_smoke_repo,
    pipeline_env,
    queue_experiments,
    run_queue,
)

pytestmark = pytest.mark.e2e

EXPERIMENTS = {"team-lr-two": 0.002, "team-lr-four": 0.004}
MIRRORED_PAPER = "protonets"  # committed records of this checkout, mirrored into the server
COMMIT = ["-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm"]


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs (initdb, pg_ctl): on PATH, or Debian's place."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return directory
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temporary data directory; yields its database URI."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin): "
            "`apt-get install postgresql` (make test does it where it may use apt-get)"
        )
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install -e '.[dev]' (psycopg[binary])")
    # PostgreSQL refuses to run as root: then it runs as Debian's `postgres` user, or `nobody`
    as_user: dict = {}
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
                break
    home = Path(tempfile.mkdtemp(prefix="repro-postgres-"))  # pytest's tmp is root's alone
    if as_user:
        os.chown(home, as_user["user"], as_user["group"])
    data, port = home / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}

    def pg(*command: str) -> None:
        result = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, **as_user)
        assert result.returncode == 0, f"{command[0]}: {result.stdout[-2000:]}{result.stderr[-2000:]}"

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync")
        server_options = f"-h 127.0.0.1 -p {port} -k {home} -F"  # loopback only, socket in the temp dir
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(home / "log"),
            "-w",
            "-o",
            server_options,
            "start",
        )
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """`mlflow server` on the PostgreSQL database, artifacts in a temporary directory; yields its URI."""
    root = tmp_path_factory.mktemp("team-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres]
    command += [
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    uri = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240  # the schema's migrations run first
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def team_repo(team_server, tmp_path_factory):
    """The smoke pipeline of one paper, then two queued experiments in two workers, all on the server."""
    repo = make_smoke_repo(tmp_path_factory, "team", local_omniglot())
    env = pipeline_env(MLFLOW_TRACKING_URI=team_server)

    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "dvc"), "repro", "report-multi_similarity"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    pipeline = time.perf_counter() - started
    git(repo, "add", "-A")
    git(repo, *COMMIT, "the smoke pipeline of multi_similarity, run on the team server")

    queue_experiments(repo, env, QUEUE_STAGE, QUEUE_LR_KEY, EXPERIMENTS)
    queued = run_queue(repo, env, len(EXPERIMENTS))
    return repo, env, {"pipeline": pipeline, "queue": queued}


def repro(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(REPO)}  # cwd may be no repository: the code is this checkout's
    return subprocess.run(
        [str(BIN / "python"), "-m", "common.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def committed_records(repo: Path, paper: str = "multi_similarity") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((repo / "records" / paper).glob("*/*/seed*.json"))]


def test_the_smoke_pipeline_runs_unchanged_against_the_team_server(team_repo, team_server):
    repo, env, seconds = team_repo
    print(f"report-multi_similarity on the team server: {seconds['pipeline']:.1f} s")
    assert not (repo / "mlflow.db").exists(), "nothing went to a local SQLite store"
    client = MlflowClient(team_server)
    records = committed_records(repo)
    assert {(r["dataset"], r["method"]) for r in records} == {
        (d, m) for d in PAPER_PARAMS["datasets"] for m in METHODS
    }
    owner = {r["provenance"]["mlflow_run_id"]: ("pipeline", r) for r in records}
    assert_runs_are_their_records({run_id: client.get_run(run_id) for run_id in owner}, owner)
    for record in records:
        [artifact] = client.list_artifacts(record["provenance"]["mlflow_run_id"], "record")
        assert artifact.path == f"record/seed{record['seed']}.json"

    audit = repro(repo, env, "audit", "reports/multi_similarity.md")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert "MLflow: " not in audit.stdout, "every run found in the server under its own id"
    down = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    started = time.perf_counter()
    unreachable = repro(repo, down, "audit", "reports/multi_similarity.md")
    assert unreachable.returncode == 1 and time.perf_counter() - started < 60, "no minutes of retries"
    assert "no run checked in MLflow: the MLflow tracking store http://127.0.0.1:" in unreachable.stderr
    assert "connection refused" in unreachable.stderr


def test_two_queued_experiments_land_whole_and_unmixed_on_the_team_server(team_repo, team_server):
    repo, env, seconds = team_repo
    print(f"two queued experiments, two workers, team server: {seconds['queue']:.1f} s")
    baseline = git(repo, "rev-parse", "HEAD").strip()
    experiments = committed_experiments(repo, baseline, "records/multi_similarity/omniglot")
    assert_queue_finished(repo, experiments, EXPERIMENTS)

    owner = {r["provenance"]["mlflow_run_id"]: ("pipeline", r) for r in committed_records(repo)}
    for name, exp in experiments.items():
        assert exp["params"]["multi_similarity"]["train"]["optimizer"]["lr"] == EXPERIMENTS[name]
        assert {r["method"] for r in exp["records"]} == METHODS and len(exp["records"]) == len(METHODS)
        for record in exp["records"]:
            assert record["provenance"]["mlflow_run_id"] not in owner, "two records name one MLflow run"
            owner[record["provenance"]["mlflow_run_id"]] = (name, record)
    client = MlflowClient(team_server)
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    pipeline_runs = len(PAPER_PARAMS["datasets"]) * len(METHODS)
    assert len(runs) == len(owner) == pipeline_runs + len(EXPERIMENTS) * len(METHODS)
    assert_runs_are_their_records(runs, owner)
    for run_id, (name, record) in owner.items():
        if name in EXPERIMENTS:
            assert runs[run_id].data.params["optimizer.lr"] == str(EXPERIMENTS[name])
            logged = client.download_artifacts(run_id, f"record/seed{record['seed']}.json", str(repo.parent))
            assert json.loads(Path(logged).read_text()) == record, "the record artifact is the run's own"
    assert_ran_at_once(runs, owner, *EXPERIMENTS)


def test_committed_runs_mirror_into_the_team_server_once(team_repo, team_server, tmp_path):
    repo, env, _ = team_repo
    for part in (f"records/{MIRRORED_PAPER}", f"reports/figures/{MIRRORED_PAPER}"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy2(REPO / "reports" / f"{MIRRORED_PAPER}.md", tmp_path / "reports")
    paths = [p for p in (tmp_path / "records").rglob("*.json") if p.name != "certificates.json"]
    n_records = len(paths)
    assert (tmp_path / "records" / MIRRORED_PAPER / "omniglot" / "certificates.json").is_file(), "not a run"

    first = repro(tmp_path, env, "mirror", MIRRORED_PAPER)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"{n_records} run(s) mirrored into {team_server}" in first.stdout
    again = repro(tmp_path, env, "mirror")
    assert again.returncode == 0 and f"0 run(s) mirrored into {team_server}" in again.stdout
    assert f"{n_records} as a mirror" in again.stdout

    client = MlflowClient(team_server)
    experiment = client.get_experiment_by_name(MIRRORED_PAPER)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == n_records
    assert {r.data.tags["original_run_id"] for r in runs} == {
        json.loads(p.read_text())["provenance"]["mlflow_run_id"] for p in paths
    }
    report_run = next(r for r in runs if "tuning_point" not in r.data.tags)
    figures = client.list_artifacts(report_run.info.run_id, f"report/figures/{MIRRORED_PAPER}")
    assert sorted(Path(a.path).name for a in figures) == sorted(
        p.name for p in (tmp_path / "reports" / "figures" / MIRRORED_PAPER).glob("*.png")
    )
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "mlartifacts").exists()

    # the pipeline's own records: their original runs are on the server already
    own = repro(repo, env, "mirror")
    n_own = len(committed_records(repo))
    assert own.returncode == 0, own.stderr[-3000:]
    assert f"0 run(s) mirrored into {team_server}; already there: {n_own} as the original run" in own.stdout
