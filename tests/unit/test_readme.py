"""`repro readme`: the README's table of the papers is generated from papers/*/paper.yaml, and the committed
README holds the table the papers give."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.commands import (
    README_BEGIN,
    README_END,
    cited_authors,
    readme_papers_table,
    render_readme,
)
from common.params import ConfigError, all_papers
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _repro_readme(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [sys.executable, "-m", "common.cli", "readme", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def workspace(tmp_path):
    """README.md and params.yaml of the repository in a folder of their own (the papers are the repository's)."""
    for name in ("README.md", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_the_committed_readme_has_the_table_the_papers_give():
    table = readme_papers_table(REPO / "params.yaml")
    assert render_readme(README, table) == README, (
        "README.md's papers table is out of date: run `repro readme`"
    )
    assert len(table) == 2 + len(all_papers()) and all(f"(reports/{s}.md)" in README for s in all_papers())
    assert (
        "| Wang et al., Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning (CVPR 2019) | "
        "[reports/multi_similarity.md](reports/multi_similarity.md) |"
    ) == table[2], "the first section of params.yaml comes first"


def test_check_passes_on_the_committed_readme_and_leaves_it_byte_identical(workspace):
    result = _repro_readme(workspace, "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "README.md's papers table is current\n"
    result = _repro_readme(workspace)
    assert result.returncode == 0 and result.stdout == "README.md unchanged\n", result.stderr
    assert (workspace / "README.md").read_bytes() == (REPO / "README.md").read_bytes()


def test_check_fails_on_an_edited_row_and_readme_rewrites_it(workspace):
    row = "Sun et al., Circle Loss: A Unified Perspective of Pair Similarity Optimization (CVPR 2020)"
    assert README.count(row) == 1
    (workspace / "README.md").write_text(README.replace(row, row.replace("CVPR 2020", "CVPR 2021")))
    result = _repro_readme(workspace, "--check")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "repro readme: error: README.md: the papers table differs from papers/*/paper.yaml and params.yaml; "
        "run `repro readme`\n"
    )
    result = _repro_readme(workspace)
    assert result.returncode == 0 and result.stdout == "README.md's papers table written\n", result.stderr
    assert (workspace / "README.md").read_text() == README


def test_check_fails_on_a_row_added_or_removed_by_hand(workspace):
    row = next(line for line in README.splitlines() if "(reports/sam.md)" in line)
    (workspace / "README.md").write_text(README.replace(row + "\n", ""))
    assert _repro_readme(workspace, "--check").returncode == 2
    (workspace / "README.md").write_text(README.replace(row, row + "\n" + row))
    assert _repro_readme(workspace, "--check").returncode == 2


def test_the_text_around_the_markers_is_kept():
    text = f"intro\n{README_BEGIN}\nold table\n{README_END}\noutro\n"
    assert (
        render_readme(text, ["| a |", "|---|"])
        == f"intro\n{README_BEGIN}\n\n| a |\n|---|\n\n{README_END}\noutro\n"
    )


@pytest.mark.parametrize(
    "text",
    ["no markers\n", f"{README_END}\n{README_BEGIN}\n", f"{README_BEGIN}\n{README_BEGIN}\n{README_END}\n"],
    ids=["none", "swapped", "twice"],
)
def test_missing_or_misplaced_markers_name_the_file_and_the_markers(text):
    with pytest.raises(
        ConfigError, match=r"README.md: expected one line '<!-- papers:begin .*<!-- papers:end -->'"
    ):
        render_readme(text, [])


def test_a_readme_without_markers_fails_in_one_line(workspace):
    (workspace / "README.md").write_text("# A README without the table's markers\n")
    result = _repro_readme(workspace, "--check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("repro readme: error: README.md: expected one line '<!-- papers:begin")


def test_authors_are_cited_by_surname():
    assert cited_authors("Jake Snell") == "Snell"
    assert cited_authors("Tongzhou Wang, Phillip Isola") == "Wang & Isola"
    assert cited_authors("Like Hui, Mikhail Belkin, Stephen Wright") == "Hui et al."
    assert (
        cited_authors("Xun Wang, Xintong Han, Weilin Huang, Dengke Dong, Matthew R. Scott") == "Wang et al."
    )
