"""Provenance read from the repository: whether the code and params a run depends on differ from the commit."""

from __future__ import annotations

import subprocess

import pytest

from common.tracking.provenance import git_dirty


def _git(repo, *args):
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with a committed source file and a .gitignore; the working dir."""
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "losses.py").write_text("SCALE = 1\n")
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_clean_checkout_is_not_dirty(repo):
    assert git_dirty() is False


def test_an_edited_source_file_makes_it_dirty(repo):
    (repo / "common" / "losses.py").write_text("SCALE = 2\n")
    assert git_dirty() is True


def test_an_untracked_source_file_makes_it_dirty(repo):
    (repo / "common" / "new_loss.py").write_text("SCALE = 3\n")
    assert git_dirty() is True


def test_ignored_files_and_files_outside_the_source_paths_do_not_count(repo):
    (repo / "common" / "__pycache__").mkdir()
    (repo / "common" / "__pycache__" / "losses.cpython-311.pyc").write_bytes(b"\0")
    (repo / "reports").mkdir()
    (repo / "reports" / "notes.md").write_text("a report is an output, not code\n")
    assert git_dirty() is False
