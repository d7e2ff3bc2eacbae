"""The hand-run `repro` commands on the smoke repository that one real `dvc repro` built (conftest.py):
`papers` says which reports are current and which stages are stale, `reproduce` is `dvc repro` of the
paper's report stage (nothing to do here, as nothing changed), `show` prints the report's tables."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import BIN, PAPER_PARAMS, git, local_omniglot, make_smoke_repo, pipeline_env

pytestmark = pytest.mark.e2e


def _repro(repo, env, *args: str) -> subprocess.CompletedProcess:
    # `python -m` from the copy's root runs the copy's code, as its DVC stages do
    return subprocess.run(
        [str(BIN / "python"), "-m", "common.cli", *args], cwd=repo, env=env, capture_output=True, text=True
    )


def test_papers_lists_each_paper_with_its_verdicts_and_report_status(smoke_repo):
    repo, env, _ = smoke_repo
    result = _repro(repo, env, "papers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["paper", "paper's claims", "our checks", "report", "title"]
    assert max(len(line) for line in lines) <= 100
    for paper in ("multi_similarity", "circle_loss", "arcface", "protonets"):
        row = next(re.split(r"\s{2,}", line) for line in lines if line.startswith(f"{paper} "))
        assert row[3] == "current", row
        assert row[1].split("/")[3] != "0", "one seed decides no claim: some are inconclusive"

    loss = repo / "common" / "losses" / "multi_similarity.py"
    original = loss.read_text()
    try:
        loss.write_text(original + "\n# an edit\n")
        edited = _repro(repo, env, "papers")
    finally:
        loss.write_text(original)
    row = next(line for line in edited.stdout.splitlines() if line.startswith("multi_similarity "))
    assert "stale (2)" in row
    assert "multi_similarity: stale: run-multi_similarity-fashion_mnist, run-multi_similarity-omniglot" in (
        edited.stdout
    )
    assert "current" in next(line for line in edited.stdout.splitlines() if line.startswith("arcface "))


def test_reproduce_runs_dvc_repro_of_the_report_stage(smoke_repo):
    repo, env, _ = smoke_repo
    result = _repro(repo, env, "reproduce", "multi_similarity")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.startswith("repro: dvc repro report-multi_similarity\n")
    assert "Running stage" not in result.stdout, "nothing changed since the smoke repro"
    dry = _repro(repo, env, "reproduce", "multi_similarity", "--dataset", "omniglot", "--dry")
    assert dry.returncode == 0 and dry.stdout.startswith(
        "repro: dvc repro --dry run-multi_similarity-omniglot\n"
    )


def test_show_prints_the_reports_tables(smoke_repo):
    repo, env, _ = smoke_repo
    result = _repro(repo, env, "show", "multi_similarity", "--width", "200")
    assert result.returncode == 0, result.stderr
    assert "profile smoke, seeds [0]" in result.stdout
    for method in PAPER_PARAMS["methods"].values():
        rows = [line for line in result.stdout.splitlines() if line.startswith(f"{method['label']}  ")]
        assert len(rows) == 2, method["label"]  # one per dataset
        assert all(re.search(r"\d+\.\d \(n=1\)", row) for row in rows)


def test_a_try_of_another_profile_leaves_the_repository_as_it_was(tmp_path_factory):
    """On a clean clone whose profile is cpu, `repro reproduce arcface --profile smoke` runs in tries/smoke:
    the clone's git status stays clean (its records, reports, params.yaml and dvc.lock untouched), no run
    enters the repository's MLflow store, and the try has its records, report and MLflow runs."""
    repo = make_smoke_repo(tmp_path_factory, "try", local_omniglot(fashion_mnist=False), profile="cpu")
    env = pipeline_env()
    params = (repo / "params.yaml").read_text()
    result = _repro(
        repo, env, "reproduce", "arcface", "--profile", "smoke", "-S", "arcface.train.optimizer.lr=2e-3"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "params.yaml").read_text() == params and not (repo / "records").exists()
    assert not (repo / "mlflow.db").exists() and not (repo / "reports").exists()
    assert not (repo / "mlartifacts").exists(), "the try's artifacts are the try's"

    workspace = repo / "tries" / "smoke_arcface.train.optimizer.lr=2e-3"
    records = [
        json.loads(p.read_text()) for p in sorted((workspace / "records" / "arcface").rglob("seed*.json"))
    ]
    assert records and all(r["config"]["profile"] == "smoke" for r in records)
    assert {r["config"]["optimizer"]["lr"] for r in records} == {0.002}
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("arcface").experiment_id])
    assert {r.info.run_id for r in runs} == {r["provenance"]["mlflow_run_id"] for r in records}
    assert (workspace / "mlartifacts" / "arcface").is_dir()
    shown = _repro(repo, env, "show", "arcface", "--try", workspace.name, "--width", "200")
    assert shown.returncode == 0 and "profile smoke, seeds [0]" in shown.stdout, shown.stderr
    missing = _repro(repo, env, "show", "arcface", "--try", "nope")
    assert (
        missing.returncode == 2 and f"no try 'nope' in tries: its tries: {workspace.name}" in missing.stderr
    )
