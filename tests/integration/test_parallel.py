"""A stage's runs side by side in worker processes: the same records as one at a time, every run in MLflow,
a failed run surfacing as it does without workers while the others' records are kept."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from common import runner
from common.engine import parallel
from common.records import read_paper_records
from common.runner import run_paper
from tests.integration.test_runner import tiny_params

# what differs between two executions of one run: its MLflow run, when and how long it ran, what it resumed
PER_EXECUTION = ("mlflow_run_id", "finished_at", "duration_s", "earlier_attempts", "resumed_from_epoch")
PER_EXECUTION_OPTIONAL = ("resumed_from",)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without the fields of one execution (and the epochs' wall times)."""
    record = copy.deepcopy(record)
    for key in PER_EXECUTION:
        del record["provenance"][key]
    for key in PER_EXECUTION_OPTIONAL:
        record["provenance"].pop(key, None)
    for epoch in record["history"]:
        del epoch["epoch_seconds"]
    return record


def assert_same_records(first: list[dict], second: list[dict]) -> None:
    """Field by field, so that a difference names the run and the field."""
    by_run = {(r["dataset"], r["method"], r["seed"]): comparable(r) for r in first}
    other = {(r["dataset"], r["method"], r["seed"]): comparable(r) for r in second}
    assert by_run.keys() == other.keys() and by_run
    for key, record in by_run.items():
        assert record.keys() == other[key].keys(), key
        for field, value in record.items():
            if isinstance(value, dict):
                for name in value.keys() | other[key][field].keys():
                    assert value.get(name) == other[key][field].get(name), (key, field, name)
            else:
                assert value == other[key][field], (key, field)


def _stage(workdir: Path, tiny_prepared: Path, monkeypatch, workers: int, edit=None) -> list[dict]:
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    params = tiny_params(workdir, edit)
    run_paper(
        "multi_similarity", "fashion_mnist", params, prepared_root=tiny_prepared, workers=workers, threads=1
    )
    return read_paper_records(Path("records"), "multi_similarity")


def test_records_with_two_workers_equal_those_with_one(tmp_path, tiny_prepared, monkeypatch):
    one = _stage(tmp_path / "one", tiny_prepared, monkeypatch, workers=1)
    two = _stage(tmp_path / "two", tiny_prepared, monkeypatch, workers=2)
    assert len(one) == 5 and all(r["provenance"]["threads"] == 1 for r in one + two)
    assert_same_records(one, two)


def test_every_run_of_two_workers_is_a_finished_mlflow_run_with_its_metrics(
    tmp_path, tiny_prepared, monkeypatch
):
    records = _stage(tmp_path / "ws", tiny_prepared, monkeypatch, workers=2)
    client = MlflowClient(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
    assert len(runs) == len(records) == 5
    by_id = {r.info.run_id: r for r in runs}
    for record in records:
        run = by_id[record["provenance"]["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["threads"] == "1"
        for name, value in record["metrics"].items():
            assert run.data.metrics[name] == pytest.approx(value), name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == [1, 2]


def test_a_run_that_fails_in_a_worker_fails_the_stage_and_the_finished_runs_are_kept(
    tmp_path, tiny_prepared, monkeypatch, capsys
):
    """The first run (contrastive) diverges at its first steps while a second worker trains the next one
    (ms_no_mining): the stage fails with the NaN guard's message and exit status, as with one worker; the run in
    flight finishes and keeps its record; no run is lost (each is FAILED or has a record), and the stage stops
    before its last run (triplet). Which runs a worker finished before the divergence reached the parent
    depends on timing, so only these are asserted."""

    def diverge_contrastive(params: dict) -> None:
        paper = params["multi_similarity"]
        paper["varies"] = ["loss", "optimizer"]
        paper["methods"]["contrastive"]["optimizer"] = {"name": "adam", "lr": 1e30}

    outcomes = {}
    for workers in (1, 2):
        workdir = tmp_path / f"workers{workers}"
        (workdir / "data").mkdir(parents=True)
        (workdir / "data" / "prepared").symlink_to(tiny_prepared)
        monkeypatch.chdir(workdir)
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        tiny_params(workdir, diverge_contrastive, epochs=3, batches_per_epoch=30)
        code = runner.main(
            ["multi_similarity", "--dataset", "fashion_mnist", "--workers", str(workers), "--threads", "1"]
        )
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
        stderr = capsys.readouterr().err
        assert "Traceback" not in stderr
        outcomes[workers] = (
            code,
            [line for line in stderr.splitlines() if line.startswith("run: ")],
            [r["method"] for r in read_paper_records(Path("records"), "multi_similarity")],
            {r.info.run_name: r.info.status for r in runs},
            {r.info.run_name: r.data.tags.get("error") for r in runs},
        )
    code, err, methods, status, errors = outcomes[2]
    assert (code, err) == outcomes[1][:2], "the same exit status and message as with one worker"
    [line] = err
    assert code == 2 and line.startswith("run: error: multi_similarity ") and "not finite" in line, line
    assert outcomes[1][2:4] == ([], {"contrastive/fashion_mnist/seed0": "FAILED"})
    assert "ms_no_mining" in methods, "the run in flight finished and kept its record"
    assert "triplet" not in methods, "no new run starts after a failure"
    assert status == {
        "contrastive/fashion_mnist/seed0": "FAILED",
        **{f"{method}/fashion_mnist/seed0": "FINISHED" for method in methods},
    }
    assert errors["contrastive/fashion_mnist/seed0"] == outcomes[1][4]["contrastive/fashion_mnist/seed0"]
    assert errors["contrastive/fashion_mnist/seed0"].startswith("NonFiniteLossError: ")


def test_workers_and_threads_default_to_the_machine_and_are_settable(monkeypatch):
    monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)
    monkeypatch.delenv(parallel.THREADS_ENV, raising=False)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 8)
    assert parallel.choose(None, None, one_at_a_time=False) == (8, 1)
    assert parallel.choose(None, 2, one_at_a_time=False) == (4, 2)
    assert parallel.choose(3, None, one_at_a_time=False) == (3, 1)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    assert parallel.choose(None, None, one_at_a_time=False) == (2, 3)
    assert parallel.choose(5, 1, one_at_a_time=False) == (5, 1), "the flags win over the environment"
    assert parallel.choose(4, 3, one_at_a_time=True) == (1, 3), "one at a time on a GPU or under a launch"
    monkeypatch.setenv(parallel.WORKERS_ENV, "zero")
    with pytest.raises(parallel.WorkersError, match="REPRO_WORKERS must be a positive integer; got 'zero'"):
        parallel.choose(None, None, one_at_a_time=False)
    with pytest.raises(parallel.WorkersError, match="--threads must be a positive integer; got 0"):
        parallel.choose(1, 0, one_at_a_time=False)


def _where(_task: int) -> tuple[int, bool, int]:
    import os

    import torch

    return os.getpid(), parallel.in_worker(), torch.get_num_threads()


def test_a_lone_task_runs_here_and_several_run_in_the_workers(monkeypatch):
    import os
    from concurrent.futures import Future

    seen = []
    submit = parallel.Workers._submit

    def record(self, fn, task, here):
        future: Future = submit(self, fn, task, here)
        future.add_done_callback(lambda f: seen.append(f.result()))
        return future

    monkeypatch.setattr(parallel.Workers, "_submit", record)
    with parallel.Workers(2, 1) as pool:
        pool.run(_where, [0], ["lone"], "one task", progress=False)
        assert seen == [(os.getpid(), False, 1)]  # no worker started for one task, on a worker's threads
        pool.run(_where, [1, 2, 3], ["a", "b", "c"], "three tasks", progress=False)
        workers = {pid for pid, inside, _ in seen[1:] if inside}
        assert len(seen) == 4 and len(workers) >= 1 and os.getpid() not in workers
        pool.run(_where, [4], ["lone, after"], "one task", progress=False)
        assert seen[-1][1], "once the workers run, a lone task goes to them too"
