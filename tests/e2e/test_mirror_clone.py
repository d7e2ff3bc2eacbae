"""A fresh clone browses every committed run: `repro mirror` there gives the runs of the original store.

The session's smoke repository (one real `dvc repro`, its MLflow store at its root) is cloned, its records,
reports and `dvc.lock` are committed in that clone, and the clone is cloned again: the second clone is what a
researcher gets, git and nothing else. Mirrored into a new store there, every run of the original store is
found (by its `original_run_id` tag) with the same name, status, params, tags and metric histories, and the
same record artifact; a second mirror adds nothing; and `repro audit` passes on the clone, reading the mirror.
The smoke repository itself is left as it was.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import BIN, git

pytestmark = pytest.mark.e2e

MIRROR_TAGS = {"original_run_id", "mirrored_from"}
COMMIT = ["-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm"]


@pytest.fixture(scope="module")
def fresh_clone(smoke_repo, tmp_path_factory):
    repo, env, _ = smoke_repo
    base = tmp_path_factory.mktemp("mirror")
    origin = base / "origin"
    git(base, "clone", "-q", str(repo), str(origin))
    for name in ("records", "reports"):
        shutil.copytree(repo / name, origin / name)
    shutil.copy2(repo / "dvc.lock", origin / "dvc.lock")
    git(origin, "add", "-A")
    git(origin, *COMMIT, "the smoke pipeline's records, reports and lock")
    clone = base / "clone"
    git(base, "clone", "-q", str(origin), str(clone))
    assert not (clone / "mlflow.db").exists() and not (clone / "data" / "prepared").exists()
    return repo, clone, env


def repro(clone: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "python"), "-m", "common.cli", *args]
    return subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)


def runs_by_experiment(client: MlflowClient, key=lambda run: run.info.run_id) -> dict[str, dict]:
    return {
        e.name: {key(r): r for r in client.search_runs([e.experiment_id], max_results=10_000)}
        for e in client.search_experiments()
        if e.name != "Default"
    }


def artifacts(client: MlflowClient, run_id: str, path: str) -> dict[str, bytes]:
    root = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))
    return {a.path: (root / a.path).read_bytes() for a in client.list_artifacts(run_id, path)}


def test_a_fresh_clone_mirrored_into_a_new_store_shows_the_runs_of_the_original(fresh_clone):
    repo, clone, env = fresh_clone
    mirrored = repro(clone, env, "mirror")
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    original = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    mirror = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    before = runs_by_experiment(original)
    after = runs_by_experiment(mirror, key=lambda run: run.data.tags["original_run_id"])
    n_runs = sum(len(runs) for runs in before.values())
    assert f"{n_runs} run(s) mirrored" in mirrored.stdout
    assert {e: set(runs) for e, runs in after.items()} == {e: set(runs) for e, runs in before.items()}
    assert any("tuning_point" in r.data.tags for runs in before.values() for r in runs.values()), (
        "the tuning trials are runs too"
    )

    for experiment, runs in before.items():
        for run_id, run in runs.items():
            copy = after[experiment][run_id]
            assert copy.info.run_id != run_id
            assert (
                (copy.info.run_name, copy.info.status)
                == (run.info.run_name, run.info.status)
                == (
                    run.info.run_name,
                    "FINISHED",
                )
            )
            assert copy.data.params == run.data.params
            tags = {k: v for k, v in copy.data.tags.items() if k not in MIRROR_TAGS}
            assert tags == run.data.tags, run.info.run_name
            assert copy.data.tags["mirrored_from"].startswith(f"records/{experiment}/")
            assert copy.data.metrics == run.data.metrics
            for key in run.data.metrics:
                history = [(m.step, m.value) for m in original.get_metric_history(run_id, key)]
                assert [
                    (m.step, m.value) for m in mirror.get_metric_history(copy.info.run_id, key)
                ] == history
            assert artifacts(mirror, copy.info.run_id, "record") == artifacts(original, run_id, "record")
            if "tuning_point" not in run.data.tags:
                figures = artifacts(mirror, copy.info.run_id, f"report/figures/{experiment}")
                committed = sorted((clone / "reports" / "figures" / experiment).glob("*.png"))
                assert figures == {f"report/figures/{experiment}/{p.name}": p.read_bytes() for p in committed}
                assert committed, f"{experiment}: the report has plots"

    again = repro(clone, env, "mirror")
    assert again.returncode == 0 and "0 run(s) mirrored" in again.stdout
    assert f"{n_runs} as a mirror" in again.stdout
    assert sum(len(r) for r in runs_by_experiment(mirror).values()) == n_runs
    assert git(clone, "status", "--porcelain") == "", "the store and its artifacts stay out of git"


def test_the_audit_passes_on_the_mirrored_clone_and_names_a_mirrored_run_that_drifts(fresh_clone):
    repo, clone, env = fresh_clone
    if not (clone / "mlflow.db").exists():
        assert repro(clone, env, "mirror").returncode == 0
    audit = repro(clone, env, "audit", "reports/multi_similarity.md")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    assert audit.stdout.count("MLflow: mirrored from the record as run") == len(
        list((clone / "records" / "multi_similarity").glob("*/*/seed*.json"))
    )

    mirror = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = mirror.get_experiment_by_name("multi_similarity")
    [run] = mirror.search_runs([experiment.experiment_id], "attributes.run_name = 'triplet/omniglot/seed0'")
    fingerprint = run.data.tags["data_fingerprint"]
    mirror.set_tag(run.info.run_id, "data_fingerprint", "tampered")
    try:
        drifted = repro(clone, env, "audit", "reports/multi_similarity.md")
    finally:
        mirror.set_tag(run.info.run_id, "data_fingerprint", fingerprint)
    assert drifted.returncode == 1
    assert (
        f"omniglot/triplet/seed0: mirrored MLflow run {run.info.run_id}: tag data_fingerprint='tampered', "
        f"record says '{fingerprint}'"
    ) in drifted.stderr
