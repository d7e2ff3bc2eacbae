"""A full disk while writing a run record, a checkpoint or a prepared dataset.

Each gives one line that names what could not be written and says the disk is full, exit status 2 and no
traceback; it leaves nothing that DVC or the resume logic would take for a finished output (no record and no
``.partial`` file, no complete checkpoint, no prepared dataset nor temporary directory), and the MLflow run
is marked FAILED.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from common import runner
from common.data import omniglot
from common.data import prepare as prepare_module
from common.engine.trainer import latest_checkpoint
from common.errors import StorageError
from common.records import write_record
from tests.conftest import REPO
from tests.faults.conftest import FIRST_CHECKPOINTS, FIRST_RECORD, files_under
from tests.unit.test_data import fake_omniglot, tree_bytes

FULL = "no space left on device: the disk is full"


def _mlflow_runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multi_similarity")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _run_stage(root: Path, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("REPRO_WORKERS", "1")  # the faults are patched into this process, not into workers
    code = runner.main(["multi_similarity", "--dataset", "omniglot"])
    return code, capsys.readouterr().err


def test_write_record_on_a_full_disk_names_the_record_and_leaves_nothing(tmp_path, full_disk):
    path = tmp_path / "records" / "p" / "d" / "m" / "seed0.json"
    path.parent.mkdir(parents=True)
    full_disk(tmp_path / "records")
    with pytest.raises(StorageError) as caught:
        write_record(path, {"metrics": {"map_at_r": 0.5}})
    assert str(caught.value) == (
        f"cannot write the run record {path}: {FULL}; free some space (or write elsewhere) and run it again"
    )
    assert list(path.parent.iterdir()) == [], "no record and no .partial file"


def test_a_full_disk_while_writing_a_figure_or_a_report_names_it_and_keeps_the_old_file(tmp_path, full_disk):
    import matplotlib.pyplot as plt

    from common.records import write_atomically
    from common.report.plots import save_figure

    figure, report = tmp_path / "reports" / "figures" / "forest.png", tmp_path / "reports" / "p.md"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"the previous figure")
    report.write_text("the previous report")
    full_disk(tmp_path / "reports")
    with pytest.raises(StorageError) as caught:
        save_figure(plt.subplots()[0], figure)
    assert str(caught.value).startswith(f"cannot write the figure {figure}: {FULL}")
    with pytest.raises(StorageError) as caught:
        write_atomically(report, "# a new report\n", "the report")
    assert str(caught.value).startswith(f"cannot write the report {report}: {FULL}")
    assert figure.read_bytes() == b"the previous figure" and report.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["forest.png", "p.md"], "no .partial"


def test_a_full_disk_at_the_record_fails_the_run_and_writes_no_record(
    workspace, full_disk, monkeypatch, capsys
):
    root, _ = workspace
    full_disk(root / "records")
    code, err = _run_stage(root, monkeypatch, capsys)
    assert code == 2
    assert f"run: error: cannot write the run record {FIRST_RECORD}: {FULL}" in err
    assert "Traceback" not in err
    assert files_under(root / "records") == [], "no record, no .partial"
    [run] = _mlflow_runs(root)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("StorageError: cannot write the run record")


def test_a_full_disk_at_a_checkpoint_leaves_no_checkpoint_taken_as_complete(workspace, monkeypatch, capsys):
    root, _ = workspace

    def save_on_a_full_disk(obj, f, *args, **kwargs):  # torch.save: the file is begun, then the disk is full
        Path(f).write_bytes(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_on_a_full_disk)
        code, err = _run_stage(root, monkeypatch, capsys)
    assert code == 2
    assert f"run: error: cannot write the checkpoint {FIRST_CHECKPOINTS}/" in err
    assert f"/.partial_epoch_1: {FULL}" in err
    assert "Traceback" not in err
    [checkpoint_dir] = (root / FIRST_CHECKPOINTS).iterdir()
    assert (checkpoint_dir / ".partial_epoch_1" / "optimizer.bin").exists()  # the half-written checkpoint ...
    assert latest_checkpoint(checkpoint_dir) == (None, 0)  # ... is not taken for a complete one
    assert not (root / FIRST_RECORD).exists()
    [failed] = _mlflow_runs(root)
    assert failed.info.status == "FAILED"

    code, err = _run_stage(root, monkeypatch, capsys)  # space freed: the stage runs again, from scratch
    assert code == 0, err
    record = json.loads((root / FIRST_RECORD).read_text())
    assert record["provenance"]["resumed_from_epoch"] == 0
    assert record["provenance"]["earlier_attempts"] == [failed.info.run_id]
    assert not list(checkpoint_dir.glob(".partial_*")), "the half checkpoint was cleared"


def _fake_source(tmp_path: Path) -> dict[str, str]:
    sums, _ = fake_omniglot(tmp_path / "src")
    return sums


def test_a_full_disk_while_preparing_leaves_no_prepared_dataset(tmp_path, monkeypatch, capsys):
    import datasets

    sums = _fake_source(tmp_path)
    real = prepare_module.builder("omniglot")
    monkeypatch.setattr(
        prepare_module,
        "builder",
        lambda name: types.SimpleNamespace(
            build=partial(real.build, checksums=sums), DEFAULT_DOWNLOAD_DIR=real.DEFAULT_DOWNLOAD_DIR
        ),
    )
    args = ["omniglot", "--source-dir", str(tmp_path / "src"), "--no-download", "--params", "none.yaml"]
    out = tmp_path / "data" / "prepared" / "omniglot"
    assert prepare_module.main([*args, "--out", str(out)]) == 0
    before = tree_bytes(out)
    capsys.readouterr()

    real_save = datasets.DatasetDict.save_to_disk

    def save_on_a_full_disk(self, path, **kwargs):
        real_save(self, path, **kwargs)
        (Path(path) / "train" / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_on_a_full_disk)
    for target in (out, tmp_path / "data" / "prepared" / "fresh"):
        code = prepare_module.main([*args, "--out", str(target)])
        err = capsys.readouterr().err
        assert code == 2
        assert err == (
            f"prepare omniglot: error: cannot write the prepared dataset {target}: {FULL}; "
            "free some space (or write elsewhere) and run it again\n"
        )
    assert tree_bytes(out) == before, "the previous output is untouched"
    assert sorted(p.name for p in out.parent.iterdir()) == ["omniglot"], "no new output, no temporary"


def _run_under_file_size_limit(args: list[str], cwd: Path, limit: int) -> subprocess.CompletedProcess:
    """``python -c args...`` in ``cwd`` with RLIMIT_FSIZE at ``limit`` bytes (Python ignores SIGXFSZ, so an
    over-limit write fails with EFBIG, as the operating system refuses it)."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-c", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
    )


_PREPARE_WITH_FAKE_CHECKSUMS = """
import functools, json, sys, types
from common.data import omniglot, prepare
sums = json.loads(sys.argv[1])
prepare.builder = lambda name: types.SimpleNamespace(
    build=functools.partial(omniglot.build, checksums=sums), DEFAULT_DOWNLOAD_DIR=omniglot.DEFAULT_DOWNLOAD_DIR
)
sys.exit(prepare.main(sys.argv[2:]))
"""


def test_a_file_size_limit_while_preparing_is_a_clear_error_and_leaves_nothing(tmp_path):
    """A real write refusal from the operating system (RLIMIT_FSIZE: EFBIG), through pyarrow, in a subprocess."""
    sums = _fake_source(tmp_path)
    limit = 64 * 1024  # the fake dataset's arrow files are larger; every other file written is smaller

    out = Path("data/prepared/omniglot")
    result = _run_under_file_size_limit(
        [_PREPARE_WITH_FAKE_CHECKSUMS, json.dumps(sums), "omniglot", "--out", str(out)]
        + ["--source-dir", str(tmp_path / "src"), "--no-download"],
        tmp_path,
        limit,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(
        f"prepare omniglot: error: cannot write the prepared dataset {out}: file too large: a file size limit "
        "was reached (ulimit -f"
    ), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert list((tmp_path / out.parent).iterdir()) == [], "no output, no temporary directory"
    assert omniglot  # the subprocess builds the same module


_SAVE_UNDER_A_SIZE_LIMIT = """
import sys
from pathlib import Path
import torch
from accelerate import Accelerator
from common.engine.trainer import _save_checkpoint
from common.errors import run_command
accelerator = Accelerator(cpu=True)
model = accelerator.prepare(torch.nn.Linear(1000, 100))
if sys.argv[1] == "torch.save":  # an empty model for safetensors; the optimizer state goes through torch.save
    torch.nn.Linear.state_dict = lambda self, *a, **k: {}
    optimizer = accelerator.prepare(torch.optim.Adam(model.parameters()))
    model(torch.zeros(2, 1000)).sum().backward()
    optimizer.step()
sys.exit(run_command("run", lambda: _save_checkpoint(accelerator, Path("ckpt"), 1, [])))
"""


@pytest.mark.parametrize(
    ("writer", "expected"),
    [("safetensors", "file too large: a file size limit was reached"), ("torch.save", "the write failed")],
)
def test_a_file_size_limit_while_checkpointing_is_a_clear_error(tmp_path, writer, expected):
    """A real write refusal (RLIMIT_FSIZE) inside safetensors (the model) or torch.save (the optimizer state)."""
    limit = 64 * 1024  # the model's 400 kB of weights, or Adam's 800 kB of moments, do not fit
    result = _run_under_file_size_limit([_SAVE_UNDER_A_SIZE_LIMIT, writer], tmp_path, limit)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("run: error: cannot write the checkpoint ckpt/.partial_epoch_1: "), (
        result.stderr[-3000:]
    )
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert latest_checkpoint(tmp_path / "ckpt") == (None, 0), "no checkpoint taken as complete"
