"""Where a number came from: repository state, versions and hardware, recorded with every run."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

# What a stage's results depend on; a change outside these (reports, records, dvc.lock) is not "dirty code".
SOURCE_PATHS = ("common", "papers", "params.yaml", "dvc.yaml", "pyproject.toml")
PACKAGES = ("torch", "accelerate", "datasets", "mlflow", "dvc", "numpy", "pydantic")


# A queued (`dvc exp run --queue`) or `--temp` experiment runs in a temporary copy at <root>/.dvc/tmp/exps/<tmp>.
_EXPERIMENT_COPIES = (".dvc", "tmp", "exps")


def repo_root() -> Path:
    """The user's repository root, home of the MLflow store and its artifacts.

    ``DVC_ROOT`` inside a DVC stage, else git's top level, else the working dir. A queued or ``--temp``
    experiment runs in a temporary copy that DVC deletes afterwards; DVC (3.67 here) sets ``DVC_ROOT`` to
    the original root there, and a root inside ``<root>/.dvc/tmp/exps/`` is mapped back to ``<root>`` in any
    case, so no run is logged into a copy that disappears.
    """
    root = Path(os.environ["DVC_ROOT"]) if os.environ.get("DVC_ROOT") else workspace_root()
    return outside_experiment_copy(root.resolve())


def outside_experiment_copy(path: Path) -> Path:
    """``<root>`` for a path inside ``<root>/.dvc/tmp/exps/``; any other path unchanged."""
    parts = path.parts
    n = len(_EXPERIMENT_COPIES)
    for i in range(len(parts) - n + 1):
        if parts[i : i + n] == _EXPERIMENT_COPIES:
            return Path(*parts[:i])
    return path


def workspace_root() -> Path:
    """Where this run's code and params are: git's top level from the working dir, else the working dir.

    The same as ``repo_root()`` except in a queued experiment, whose temporary copy is a git work tree of its
    own (the baseline commit plus the experiment's ``-S`` changes): provenance is read there.
    """
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True, timeout=10
        )
        return Path(out.stdout.strip()).resolve()
    except (OSError, subprocess.SubprocessError):
        return Path.cwd().resolve()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=30, cwd=workspace_root()
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    return _git("rev-parse", "HEAD") or "unknown"


def git_dirty() -> bool:
    """True if the code or params a run depends on differ from the commit (untracked files count)."""
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *SOURCE_PATHS)
    return bool(status) if status is not None else True


@cache
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


@cache
def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.cpu_count()} x {cpu}"
    if torch.cuda.is_available():
        text += f"; {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return text
