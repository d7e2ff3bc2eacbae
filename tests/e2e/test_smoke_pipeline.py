"""The whole pipeline on the smoke profile through real `dvc repro` and a real MLflow store.

A temporary copy of the repository (its tracked and untracked-but-not-ignored files, committed to a
fresh git repository) runs raw data -> prepare -> run -> report -> index, with MLflow on its default
store (the SQLite file at the copy's root).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from common.paper import load_paper
from tests.conftest import REPO
from tests.e2e.conftest import BIN, DATASETS, METHODS, PAPER_PARAMS, git

FIGURES = ("forest.png", "recall_at_k.png", "similarities.png", "training_loss.png")


def test_smoke_repro_writes_the_report_and_index(smoke_repo):
    repo, _, seconds = smoke_repo
    print(f"smoke dvc repro: {seconds:.1f} s")
    report = (repo / "reports" / "multi_similarity.md").read_text()
    assert report.startswith("# Multi-Similarity Loss")
    for heading in ("## Summary", "## Results", "## Claims", "## The paper's headline numbers", "## Figures"):
        assert heading in report
    for method in PAPER_PARAMS["methods"].values():
        assert f"| {method['label']} |" in report
    assert "65.7" in report and "88.0" in report, "the paper's headline numbers stand beside ours"
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert f"`{commit[:10]}`" in report and "profile `smoke`" in report
    for figure in ("recall_at_k.png", "similarities.png", "training_loss.png"):
        path = repo / "reports" / "figures" / "multi_similarity" / figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/multi_similarity/{figure}" in report
    index = (repo / "reports" / "README.md").read_text()
    assert "[Multi-Similarity Loss" in index and "(multi_similarity.md)" in index
    board = index[index.index("## Leaderboard: retrieval") :].split("\n## ")[0]
    for dataset in DATASETS:
        tables = [part for part in board.split("\n### ")[1:] if part.startswith(f"{dataset}: ")]
        labels = {
            line.split(" | ")[1] for table in tables for line in table.splitlines() if line.startswith("| ")
        }
        doubled = {c.doubled for c in load_paper("multi_similarity").report.budget_checks}
        compared = {m["label"] for name, m in PAPER_PARAMS["methods"].items() if name not in doubled}
        assert compared <= labels, "every compared method has its row"
        assert not {PAPER_PARAMS["methods"][name]["label"] for name in doubled} & labels, (
            "a budget check's doubled run is no row of the leaderboard"
        )
    assert "figures/forest.png" in index and (repo / "reports" / "figures" / "forest.png").is_file()
    summary = json.loads((repo / "reports" / "multi_similarity.json").read_text())
    claims = yaml.safe_load((REPO / "papers" / "multi_similarity" / "paper.yaml").read_text())["claims"]
    checks = [(c["claim"], c["dataset"]) for c in summary["claims"]]
    assert sorted(checks) == sorted((c["id"], d) for c in claims for d in DATASETS)
    assert all(c["verdict"] == "inconclusive" for c in summary["claims"]), "one seed cannot decide a claim"


def test_every_row_traces_to_a_finished_mlflow_run(smoke_repo):
    repo, _, _ = smoke_repo
    records = [
        json.loads(p.read_text()) for p in sorted((repo / "records" / "multi_similarity").rglob("seed*.json"))
    ]
    assert {(r["dataset"], r["method"]) for r in records} == {(d, m) for d in DATASETS for m in METHODS}
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == len(records)
    commit = git(repo, "rev-parse", "HEAD").strip()
    report = (repo / "reports" / "multi_similarity.md").read_text()
    for record in records:
        provenance = record["provenance"]
        run = runs[provenance["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["git_commit"] == provenance["git_commit"] == commit
        assert run.data.tags["git_dirty"] == "False"
        assert run.data.tags["dvc_stage"] == f"run-multi_similarity-{record['dataset']}"
        assert run.data.tags["profile"] == "smoke"
        assert run.data.tags["data_fingerprint"] == provenance["data_fingerprint"]
        assert run.data.metrics["map_at_r"] == pytest.approx(record["metrics"]["map_at_r"])
        assert f"`{provenance['mlflow_run_id'][:8]}`" in report
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "record")]
        assert artifacts == ["record/seed0.json"]
        attached = [a.path for a in client.list_artifacts(run.info.run_id, "report")]
        assert attached == ["report/figures", "report/multi_similarity.md"], (
            "the report stage attaches its report"
        )
        figures = [a.path for a in client.list_artifacts(run.info.run_id, "report/figures/multi_similarity")]
        assert figures == [f"report/figures/multi_similarity/{name}" for name in FIGURES]


def test_nothing_is_stale_and_a_second_repro_does_nothing(smoke_repo):
    repo, env, _ = smoke_repo
    status = subprocess.run(
        [str(BIN / "dvc"), "status", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert json.loads(status.stdout) == {}
    started = time.perf_counter()
    again = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"no-op dvc repro: {seconds:.1f} s")
    assert again.returncode == 0 and "Running stage" not in again.stdout


def _check_reports_after_editing(repo: Path, env: dict, relative: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "python"), "-m", "common.cli", "check-reports"]
    edited = repo / relative
    original = edited.read_text()
    try:
        edited.write_text(original + "\n# an edit\n")
        return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    finally:
        edited.write_text(original)


def test_check_reports_passes_when_current_and_names_the_stage_when_code_changes(smoke_repo):
    repo, env, _ = smoke_repo
    command = [str(BIN / "python"), "-m", "common.cli", "check-reports"]
    current = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert current.returncode == 0, current.stderr
    stale = _check_reports_after_editing(repo, env, "common/losses/multi_similarity.py")
    assert stale.returncode == 2
    for dataset in ("omniglot", "fashion_mnist"):
        assert (
            f"run-multi_similarity-{dataset}: dependency common/losses/multi_similarity.py modified"
            in stale.stderr
        )
    assert "report-multi_similarity" not in stale.stderr, "the report stage does not import the loss"
    assert "Traceback" not in stale.stderr


def test_a_change_to_a_loss_no_method_uses_stales_nothing(smoke_repo):
    repo, env, _ = smoke_repo
    for unrelated in (
        "common/samplers/class_balanced.py",
        "common/losses/siglip.py",
    ):
        result = _check_reports_after_editing(repo, env, unrelated)
        assert result.returncode == 0, f"{unrelated}: {result.stderr}"


def test_a_change_to_an_optional_evaluation_stales_only_the_papers_that_use_it(smoke_repo):
    repo, env, _ = smoke_repo
    result = _check_reports_after_editing(repo, env, "common/metrics/verification.py")
    assert result.returncode == 2
    stale = {line.split(":")[0].strip("- ") for line in result.stderr.splitlines() if "modified" in line}
    assert stale == {"run-arcface-omniglot", "run-arcface-omniglot_noise20", "run-arcface-omniglot_noise40"}


def test_a_change_to_views_probe_or_corruptions_stales_only_the_contrastive_papers(smoke_repo):
    repo, env, _ = smoke_repo
    expected = {
        "common/data/views.py": {"run-supcon-fashion_mnist", "run-align_uniform-fashion_mnist"},
        "common/engine/representation.py": {"run-supcon-fashion_mnist", "run-align_uniform-fashion_mnist"},
        "common/data/corruptions.py": {"run-supcon-fashion_mnist"},
    }
    for module, stages in expected.items():
        result = _check_reports_after_editing(repo, env, module)
        assert result.returncode == 2, f"{module}: {result.stdout}{result.stderr}"
        stale = {line.split(":")[0].strip("- ") for line in result.stderr.splitlines() if "modified" in line}
        assert stale == stages, module


def test_a_change_to_sam_or_to_classifier_evaluation_stales_only_the_papers_that_use_it(smoke_repo):
    repo, env, _ = smoke_repo

    def stale_stages(relative: str) -> set[str]:
        result = _check_reports_after_editing(repo, env, relative)
        assert result.returncode == 2, result.stderr
        return {line.split(":")[0].strip("- ") for line in result.stderr.splitlines() if "modified" in line}

    sam_stages = {
        f"run-sam-{d}" for d in yaml.safe_load((repo / "params.yaml").read_text())["sam"]["datasets"]
    }
    assert stale_stages("common/optim/sam.py") == sam_stages
    classifier_stages = {
        stage
        for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
        # supcon too: its cross-entropy baseline is a classifier
        if stage.startswith(("run-sam-", "run-polyloss-", "run-squentropy-", "run-ldam_drw-", "run-supcon-"))
    }
    assert stale_stages("common/engine/classification.py") == classifier_stages


def test_classification_reports_have_their_tables_and_their_own_leaderboard(smoke_repo):
    repo, _, _ = smoke_repo
    for slug, columns in (
        ("sam", ("top-1", "rho-sharpness (loss)", "Hessian λ_max")),
        ("polyloss", ("top-1", "few-shot", "ECE")),
        ("squentropy", ("top-1", "ECE", "NLL (nats)")),
        ("ldam_drw", ("top-1", "many-shot", "medium-shot", "few-shot")),
    ):
        report = (repo / "reports" / f"{slug}.md").read_text()
        header = next(line for line in report.splitlines() if line.startswith("| method |"))
        for column in columns:
            assert f" {column} |" in header, (slug, column)
        records = list((repo / "records" / slug).glob("*/*/seed*.json"))
        assert records and all("reliability" in json.loads(p.read_text()) for p in records)
    assert "## Cost: time per epoch" in (repo / "reports" / "sam.md").read_text()
    assert "## The epsilon sweep" in (repo / "reports" / "polyloss.md").read_text()
    assert "## Spread over random initializations" in (repo / "reports" / "squentropy.md").read_text()
    assert (repo / "reports" / "figures" / "squentropy" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    index = (repo / "reports" / "README.md").read_text()
    retrieval = index.split("## Leaderboard: retrieval")[1].split("\n## ")[0]
    classification = index.split("## Leaderboard: classification")[1].split("\n## ")[0]
    assert "squentropy.md" not in retrieval and "sam.md" not in retrieval, "no retrieval metrics, no row"
    assert "squentropy.md" in classification and "sam.md" in classification


def test_audit_traces_every_run_and_flags_drift(smoke_repo):
    repo, env, _ = smoke_repo
    command = [str(BIN / "python"), "-m", "common.cli", "audit", "reports/multi_similarity.md"]
    clean = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (repo / "records" / "multi_similarity").rglob("seed*.json")]
    for record in records:
        assert record["provenance"]["mlflow_run_id"] in clean.stdout
    assert "run-multi_similarity-omniglot in dvc.lock" in clean.stdout

    params = repo / "params.yaml"
    original = params.read_text()
    try:
        edited = yaml.safe_load(original)
        edited["multi_similarity"]["methods"]["triplet"]["loss"]["margin"] = 0.3
        params.write_text(yaml.safe_dump(edited, sort_keys=False))
        drifted = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    finally:
        params.write_text(original)
    assert drifted.returncode == 1
    assert "omniglot/triplet/seed0: params drifted" in drifted.stderr
    assert "omniglot/contrastive/seed0: params drifted" not in drifted.stderr

    record = repo / "records" / "multi_similarity" / "omniglot" / "triplet" / "seed0.json"
    original = record.read_text()
    try:  # a metric edited in a record: the report's cell no longer follows from the records
        edited = json.loads(original)
        edited["metrics"]["recall_at_1"] += 0.1
        record.write_text(json.dumps(edited, indent=1))
        tampered = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    finally:
        record.write_text(original)
    assert tampered.returncode == 1
    assert "rebuilt from the records: reports/multi_similarity.md: committed: | Triplet" in tampered.stderr
