"""`repro audit`'s drift checks (common/audit.py) on a checkout built in a temporary folder: the committed params
and two committed records of a paper, without data, MLflow store or DVC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from common import audit
from tests.conftest import REPO

PAPER = "multi_similarity"
RECORDS = ("omniglot/triplet/seed0.json", "omniglot/contrastive/seed0.json")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """The current params.yaml, two of the paper's committed records, a report naming their runs and a
    dvc.lock holding the stages behind them. ``dvc status`` and the report rebuild are stubbed out (both have
    tests of their own); with no MLflow store and no prepared data the audit says so and checks the rest."""
    shutil.copy(REPO / "params.yaml", tmp_path)
    stages = {f"run-{PAPER}-omniglot": {"deps": []}, f"report-{PAPER}": {"deps": []}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    run_ids = []
    for rel in RECORDS:
        target = tmp_path / "records" / PAPER / rel
        target.parent.mkdir(parents=True)
        shutil.copy(REPO / "records" / PAPER / rel, target)
        run_ids.append(json.loads(target.read_text())["provenance"]["mlflow_run_id"])
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / f"{PAPER}.md").write_text("runs: " + ", ".join(run_ids) + "\n")
    monkeypatch.setattr(audit, "stale_stages", lambda dvc: {})
    monkeypatch.setattr(audit, "rebuilt_differences", lambda *args, **kwargs: [])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params_problems() -> list[str]:
    result = audit.audit_report(Path("reports") / f"{PAPER}.md", Path("params.yaml"), dvc="unused")
    return [p for p in result.problems if "params" in p]


def test_the_audit_finds_no_params_drift_in_the_current_params(checkout):
    assert _params_problems() == []


def test_the_audit_reports_a_record_whose_params_hash_no_longer_matches_the_params(checkout):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params[PAPER]["methods"]["triplet"]["loss"]["margin"] = 0.3
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    recorded = json.loads((checkout / "records" / PAPER / RECORDS[0]).read_text())["config_hash"]

    (problem,) = _params_problems()

    assert problem.startswith(f"omniglot/triplet/seed0: params drifted (run {recorded}, now ")
    assert not problem.endswith(f"now {recorded})")
