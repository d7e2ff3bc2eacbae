"""Faults made on purpose: a full disk, unwritable directories, an unreachable tracking store.

Without root, a full disk is simulated in-process (a write that stores part of its data, then raises ENOSPC,
as a full file system does) or in a subprocess with a file size limit (RLIMIT_FSIZE: the write fails with
EFBIG at the operating system level). A directory is made unwritable with chmod; as root, which ignores file
modes, the command runs in a subprocess that has dropped CAP_DAC_OVERRIDE, so the modes apply to it too.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import io
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.test_runner import tiny_params

RUN = [sys.executable, "-m", "common.runner", "multi_similarity", "--dataset", "omniglot"]
# runs go in sorted method order: contrastive is the first
FIRST_RECORD = Path("records/multi_similarity/omniglot/contrastive/seed0.json")
FIRST_CHECKPOINTS = Path("checkpoints/multi_similarity/omniglot/contrastive")


@pytest.fixture()
def workspace(tmp_path, tiny_prepared) -> tuple[Path, dict[str, str]]:
    """A directory laid out like the repository for the run stage (tiny data), and the environment for it."""
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "prepared").symlink_to(tiny_prepared)
    tiny_params(root)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return root, env


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- a full disk, in-process


class _FullDiskFile:
    """A file on a disk that fills up: the first write stores half its data, then raises ENOSPC."""

    def __init__(self, file: io.IOBase) -> None:
        self._file = file

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@pytest.fixture()
def full_disk(monkeypatch) -> Callable[[Path], None]:
    """``full_disk(directory)``: from now on, Python-level writes of files under ``directory`` hit a full disk."""
    real_open = builtins.open

    def fill(directory: Path) -> None:
        directory = directory.resolve()

        def open_(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
                if Path(file).resolve().is_relative_to(directory):
                    return _FullDiskFile(handle)
            return handle

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)

    return fill


# ----------------------------------------------------------------------------- unwritable directories


def _drop_root_override() -> None:  # runs in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (
        1,
        2,
    ):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: out of the bounding set, so exec drops them
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` so that file modes apply to it (as root: without CAP_DAC_OVERRIDE)."""
    preexec = _drop_root_override if os.geteuid() == 0 else None
    return subprocess.run(command, preexec_fn=preexec, capture_output=True, text=True, **kwargs)


@pytest.fixture()
def read_only(tmp_path):
    """``read_only(directory)`` makes ``directory`` unwritable for ``run_unprivileged`` (skips where it cannot)."""
    made: list[Path] = []
    probe_dir = tmp_path / "probe-read-only"
    probe_dir.mkdir()
    probe_dir.chmod(0o555)
    made.append(probe_dir)
    try:
        probe = run_unprivileged(
            [sys.executable, "-c", f"open({str(probe_dir / 'x')!r}, 'w')"], env={"PATH": os.environ["PATH"]}
        )
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot drop root's permission override here: {err}")
    if probe.returncode == 0:
        pytest.skip("a read-only directory is writable here (root without a way to drop CAP_DAC_OVERRIDE)")

    def make(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(
            stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        )
        made.append(directory)
        return directory

    yield make
    for directory in made:
        directory.chmod(0o755)
