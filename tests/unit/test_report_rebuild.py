"""A committed report must be what its committed records give: `rebuilt_differences` (run by `repro audit` and
`repro check-reports`) builds it again and names every line that differs."""

from __future__ import annotations

import json
import shutil

import pytest

from common.audit import rebuilt_differences
from common.report.build import build_report
from tests.conftest import REPO

PAPER = "multi_similarity"


@pytest.fixture
def roots(tmp_path):
    """Copies of the paper's committed records, and its report as they give it."""
    records, reports = tmp_path / "records", tmp_path / "reports"
    shutil.copytree(REPO / "records" / PAPER, records / PAPER)
    reports.mkdir()
    build_report(PAPER, records, reports, REPO / "params.yaml")
    return records, reports


def _differences(roots):
    records, reports = roots
    return rebuilt_differences([PAPER], records, reports, REPO / "params.yaml")


def test_a_report_its_records_give_has_no_difference(roots):
    assert _differences(roots) == []


def test_an_edited_metric_is_named_by_the_cell_it_changes(roots):
    records, reports = roots
    path = records / PAPER / "omniglot" / "triplet" / "seed0.json"
    record = json.loads(path.read_text())
    record["metrics"]["recall_at_1"] += 0.05
    path.write_text(json.dumps(record))

    found = _differences(roots)

    md = [d for d in found if d.startswith(f"{reports / PAPER}.md: ")]
    committed = [d for d in md if ": committed: | Triplet (semi-hard) |" in d]
    rebuilt = [d for d in md if ": rebuilt: | Triplet (semi-hard) |" in d]
    assert committed and rebuilt and committed[0].split("|")[2] != rebuilt[0].split("|")[2]  # the R@1 cell
    assert any(d.startswith(f"{reports / PAPER}.json: ") for d in found)


def test_a_deleted_record_the_report_names_is_found(roots):
    records, reports = roots
    (records / PAPER / "fashion_mnist" / "contrastive" / "seed3.json").unlink()

    (found,) = _differences(roots)

    assert found.startswith(f"{reports / PAPER}.md: cannot be rebuilt from {records}/{PAPER}")
    assert "('fashion_mnist', 'contrastive', 3" in found


def test_an_edited_report_is_found(roots):
    _, reports = roots
    report = reports / f"{PAPER}.md"
    report.write_text(report.read_text().replace("| Contrastive |", "| Contrastive (edited) |", 1))

    found = _differences(roots)

    assert any(": committed: | Contrastive (edited) |" in d for d in found)
