"""The e2e fixtures: a committed temporary copy of the repository on the smoke profile, and one real
`dvc repro` of it shared by every e2e test that reads its outputs (a test that edits a file there restores
it before it returns).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
PAPER_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())["multi_similarity"]
METHODS = set(PAPER_PARAMS["methods"])
DATASETS = set(PAPER_PARAMS["datasets"])


def omniglot_source() -> Path | None:
    for candidate in (os.environ.get("OMNIGLOT_DIR"), REPO.parent / "shared" / "data" / "omniglot"):
        if candidate and (Path(candidate) / "images_background_small1.zip").is_file():
            return Path(candidate).resolve()
    return None


def fashion_mnist_available() -> bool:
    return bool(os.environ.get("FASHION_MNIST_DIR")) or Path("/usr/share/datasets/fashion-mnist").is_dir()


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


def make_smoke_repo(tmp_path_factory, name: str, omniglot: Path) -> Path:
    """A committed git copy of the working tree (no records, reports or lock) on the smoke profile."""
    repo = tmp_path_factory.mktemp(name) / "repo"
    repo.mkdir()
    copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"]["omniglot"]["source_dir"] = str(omniglot)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", name)
    return repo


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    omniglot = omniglot_source()
    if omniglot is None:
        pytest.skip("no local Omniglot source: set OMNIGLOT_DIR to a folder with the small background zips")
    if not fashion_mnist_available():
        pytest.skip("no local Fashion-MNIST: apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR")
    repo = make_smoke_repo(tmp_path_factory, "smoke", omniglot)

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return repo, env, seconds
