"""The run stage under `accelerate launch` with two CPU processes: one record and one MLflow run per run, and
the same trained parameters as one process with the doubled batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from tests.integration.test_runner import tiny_params

pytestmark = pytest.mark.distributed


def _run_stage(
    workdir: Path, prepared: Path, processes: int, edit=None, threads: int = 1
) -> subprocess.CompletedProcess:
    """`repro run multi_similarity --dataset omniglot` in ``workdir``, under `accelerate launch` if > 1."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    if not (workdir / "data" / "prepared").exists():
        (workdir / "data" / "prepared").symlink_to(prepared)
    tiny_params(workdir, edit=edit, epochs=2, batches_per_epoch=3)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "PYTHONPATH": str(Path.cwd()),
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": str(threads),
        "REPRO_THREADS": str(threads),
    }
    command = [sys.executable]
    if processes > 1:
        with socket.socket() as probe:  # a free port, so that runs beside this one cannot collide
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu"]
        command += ["--num_processes", str(processes), "--main_process_port", str(port)]
    command += ["-m", "common.runner", "multi_similarity", "--dataset", "omniglot"]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    # a crashed rank's own traceback is what explains the others' errors: show it first
    crashed = "\n".join(line for line in result.stderr.splitlines() if line.startswith("[rank1]"))
    assert result.returncode == 0, crashed[-3000:] + "\n---\n" + result.stderr[-3000:]
    return result


def test_two_process_launch_trains_every_run_once(tmp_path, tiny_prepared):
    _run_stage(tmp_path, tiny_prepared, processes=2)
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("seed*.json")]
    assert records and all(r["provenance"]["world_size"] == 2 for r in records)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(r["provenance"]["mlflow_run_id"] for r in records)
    assert all(r.data.tags["world_size"] == "2" and r.info.status == "FINISHED" for r in runs)


def test_a_run_never_resumes_a_checkpoint_that_other_processes_or_threads_computed(tmp_path, tiny_prepared):
    """The stage trains on 1 process, its records are dropped (the checkpoints stay, as after a run killed
    before its record): the same stage again resumes them; on 2 processes, or on 1 process of 2 threads, it
    does not, so each record says what trained it."""
    records, checkpoints = tmp_path / "records", tmp_path / "checkpoints"

    def run(processes: int, threads: int = 1) -> list[dict]:
        shutil.rmtree(records, ignore_errors=True)
        _run_stage(tmp_path, tiny_prepared, processes=processes, threads=threads)
        return [json.loads(p.read_text()) for p in sorted(records.rglob("seed*.json"))]

    one = run(processes=1)
    assert one and all(r["provenance"]["world_size"] == 1 for r in one)
    shutil.copytree(checkpoints, tmp_path / "one-process")
    for processes, threads, resumes in ((1, 1, True), (2, 1, False), (1, 2, False)):
        shutil.rmtree(checkpoints)  # a finished run keeps only its own final checkpoint: restore the first's
        shutil.copytree(tmp_path / "one-process", checkpoints)
        again = run(processes, threads)
        assert len(again) == len(one)
        expected = [2 if resumes else 0] * len(one)  # the control: the same ones resume (from the last epoch)
        assert [r["provenance"]["resumed_from_epoch"] for r in again] == expected, (processes, threads)
        assert {(r["provenance"]["world_size"], r["provenance"]["threads"]) for r in again} == {
            (processes, threads)
        }


def _global_batch(classes_per_batch: int):
    """No BatchNorm (per-process statistics), no augmentation (per-process RNG), and SGD: Adam divides by
    the gradient's running magnitude, which turns float rounding in near-zero gradients into lr-sized steps."""

    def edit(params: dict) -> None:
        paper = params["multi_similarity"]
        paper["train"]["model"]["batch_norm"] = False
        paper["train"]["optimizer"] = {"name": "sgd", "lr": 0.05}
        paper["train"]["augment"] = "none"
        paper["datasets"]["omniglot"]["sampler"]["classes_per_batch"] = classes_per_batch

    return edit


def _trained_weights(workdir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Final model weights of every method's run (one seed)."""
    files = sorted((workdir / "checkpoints").rglob("epoch_2/model.safetensors"))
    return {f.parents[2].name: load_file(f) for f in files}


def test_two_processes_train_like_one_process_with_the_doubled_batch(tmp_path, tiny_prepared):
    _run_stage(tmp_path / "two", tiny_prepared, processes=2, edit=_global_batch(classes_per_batch=4))
    _run_stage(tmp_path / "one", tiny_prepared, processes=1, edit=_global_batch(classes_per_batch=8))
    _run_stage(tmp_path / "half", tiny_prepared, processes=1, edit=_global_batch(classes_per_batch=4))
    two, one, half = (_trained_weights(tmp_path / d) for d in ("two", "one", "half"))
    assert one and two.keys() == one.keys() == half.keys()
    for method, weights in one.items():
        assert two[method].keys() == weights.keys()
        for name, value in weights.items():
            torch.testing.assert_close(
                two[method][name],
                value,
                rtol=1e-4,
                atol=1e-5,
                msg=lambda m, where=f"{method} {name}": f"{where}: {m}",
            )
        # the comparison can tell: one process with only the local batch ends elsewhere
        assert any(not torch.allclose(half[method][n], v, rtol=1e-3, atol=1e-4) for n, v in weights.items())
