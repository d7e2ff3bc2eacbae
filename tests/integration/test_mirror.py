"""`repro mirror` on tiny records and a real SQLite MLflow store: what a mirrored run holds, a second mirror
adds nothing, and bad input (another schema version, an unreachable server, a different run under a record's
original run id, an interrupted mirror) gets a clear error with nothing half-written."""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path

import pytest
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.cli import main
from common.records import RecordError, write_record
from common.tracking.mirror import (
    MIRRORED_FROM,
    ORIGINAL_RUN_ID,
    MirrorConflict,
    differences,
    mirror_records,
    stored_run,
)
from common.tracking.mlflow_tracking import RunTracker, TrackingStoreError

PAPER = "multi_similarity"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """One new SQLite store, created once (its migrations take seconds) and copied by each test."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def store(tmp_path, empty_store, monkeypatch) -> MlflowClient:
    """An empty store in a repository-like working dir (records/, reports/) that is the current dir."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    figures = tmp_path / "reports" / "figures" / PAPER
    figures.mkdir(parents=True)
    (figures / "recall_at_k.png").write_bytes(PNG)
    (tmp_path / "reports" / f"{PAPER}.md").write_text("# a report\n")
    return MlflowClient(uri)


def tiny_record(
    root: Path, method: str = "contrastive", seed: int = 0, tuning_point: str | None = None, **changes
) -> tuple[Path, dict]:
    """A record as the runner writes it (two epochs), at its place under root/records."""
    tags = {
        "paper": PAPER,
        "method": method,
        "dataset": "omniglot",
        "seed": seed,
        "git_commit": "0" * 40,
        "git_dirty": False,
        "dvc_stage": f"run-{PAPER}-omniglot",
        "params_hash": "c0ffee",
        "code_hash": "dec0de",
        "data_fingerprint": "f1f1",
        "profile": "smoke",
        "device": "cpu",
        "world_size": 1,
        "hardware": "2 x test",
    }
    if tuning_point:
        tags |= {"evaluated_on": "held-out training data (tuning trial)", "tuning_point": tuning_point}
    record = {
        "paper": PAPER,
        "dataset": "omniglot",
        "method": method,
        "label": method.title(),
        "seed": seed,
        "config": {"epochs": 2, "loss": {"name": method, "margin": 0.5}, "optimizer": {"lr": 0.01}},
        "config_hash": "c0ffee",
        "metrics": {"map_at_r": 0.25 + seed / 100, "precision_at_1": 0.5},
        "history": [
            {"epoch": 1, "train_loss": 0.9, "epoch_seconds": 0.1},
            {"epoch": 2, "train_loss": 0.7, "epoch_seconds": 0.1},
        ],
        "similarity_histograms": {},
        "provenance": {
            **tags,
            "mlflow_run_id": uuid.uuid4().hex,
            "mlflow_experiment": PAPER,
            "earlier_attempts": [],
            "resumed_from_epoch": 0,
            "versions": {"python": "3.11", "torch": "2.13.0"},
            "finished_at": "2026-01-01T00:00:00+00:00",
            "duration_s": 1.5,
        },
        **changes,
    }
    if tuning_point:
        path = root / "records" / PAPER / "omniglot" / "_tuning" / method / f"{tuning_point}-seed{seed}.json"
        record["tuning_point"] = {"loss.margin": 0.5}
    else:
        path = root / "records" / PAPER / "omniglot" / method / f"seed{seed}.json"
    write_record(path, record)
    return path, json.loads(path.read_text())


def active_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(PAPER)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_mirrored_run_holds_the_record_and_a_second_mirror_adds_nothing(store, tmp_path):
    path, record = tiny_record(tmp_path)
    trial_path, trial = tiny_record(tmp_path, tuning_point="loss.margin=0.5")
    (path.parents[1] / "certificates.json").write_text("[]")  # a stage's certificates: not a run
    summary = mirror_records(tmp_path, progress=False)
    assert sorted(summary.mirrored) == sorted(r["provenance"]["mlflow_run_id"] for r in (record, trial))

    for file, rec, name in (
        (path, record, "contrastive/omniglot/seed0"),
        (trial_path, trial, "tune/contrastive/omniglot/loss.margin=0.5/seed0"),
    ):
        run, mirrored = stored_run(store, rec)
        assert mirrored and run.info.status == "FINISHED" and run.info.run_name == name
        assert differences(run, rec) == []
        assert run.data.tags[ORIGINAL_RUN_ID] == rec["provenance"]["mlflow_run_id"]
        assert run.data.tags[MIRRORED_FROM] == str(file.relative_to(tmp_path))
        assert run.data.tags["version.torch"] == "2.13.0" and run.data.tags["git_dirty"] == "False"
        assert "finished_at" not in run.data.tags, "record-only provenance is not a tag"
        assert run.data.params == {
            "epochs": "2",
            "loss.name": "contrastive",
            "loss.margin": "0.5",
            "loss.neg_margin": "0.5",  # the loss's defaults are params too
            "loss.pos_margin": "1.0",
            "optimizer.lr": "0.01",
        }
        # the training's times (finished_at, duration_s), not the mirror's
        assert (run.info.start_time, run.info.end_time) == (1767225598500, 1767225600000)
        experiment = store.get_experiment(run.info.experiment_id)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        history = store.get_metric_history(run.info.run_id, "train_loss")
        assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7)]
        [final] = store.get_metric_history(run.info.run_id, "map_at_r")
        assert (final.step, final.value) == (2, rec["metrics"]["map_at_r"])
        logged = Path(store.download_artifacts(run.info.run_id, f"record/{file.name}", str(tmp_path / "dl")))
        assert json.loads(logged.read_text()) == rec

    run, _ = stored_run(store, record)
    assert [a.path for a in store.list_artifacts(run.info.run_id, "report")] == [
        "report/figures",
        f"report/{PAPER}.md",
    ]
    figures = store.list_artifacts(run.info.run_id, f"report/figures/{PAPER}")
    assert [a.path for a in figures] == [f"report/figures/{PAPER}/recall_at_k.png"]
    trial_run, _ = stored_run(store, trial)
    assert [a.path for a in store.list_artifacts(trial_run.info.run_id)] == ["record"], (
        "a tuning trial is not in the report"
    )

    again = mirror_records(tmp_path, progress=False)
    assert again.mirrored == [] and len(again.already) == 2
    assert len(active_runs(store)) == 2


def test_the_cli_prints_what_it_did(store, tmp_path, capsys):
    tiny_record(tmp_path)
    assert main(["mirror"]) == 0
    assert "1 run(s) mirrored into sqlite:///" in capsys.readouterr().out
    assert main(["mirror", PAPER]) == 0
    out = capsys.readouterr().out
    assert "0 run(s) mirrored" in out and "1 as a mirror" in out
    assert main(["mirror", "nopaper"]) == 2
    assert "repro mirror: error: no run records for nopaper under records" in capsys.readouterr().err


def test_a_run_already_in_the_store_under_its_own_id_is_left_alone(store, tmp_path):
    with RunTracker(PAPER, "contrastive/omniglot/seed0", {"epochs": 2}, {}) as tracker:
        pass  # the original run, logged by the runner in this store
    path, record = tiny_record(tmp_path)
    record["provenance"]["mlflow_run_id"] = tracker.run_id
    write_record(path, record)
    summary = mirror_records(tmp_path, progress=False)
    assert summary.mirrored == [] and summary.originals == [tracker.run_id]
    assert [r.info.run_id for r in active_runs(store)] == [tracker.run_id]


@pytest.mark.parametrize("version", [0, 2])
def test_a_record_of_another_schema_version_stops_the_mirror_before_anything_is_written(
    store, tmp_path, capsys, version
):
    tiny_record(tmp_path, method="contrastive")
    path, record = tiny_record(tmp_path, method="triplet")
    path.write_text(json.dumps({**record, "schema_version": version}))
    other, _ = tiny_record(tmp_path, method="ms")
    other.write_text("{not json")
    assert main(["mirror"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path.relative_to(tmp_path)}: record schema version {version}, this code reads version 1" in err
    assert f"{other.relative_to(tmp_path)}: not valid JSON" in err, "every bad record is named"
    assert store.get_experiment_by_name(PAPER) is None, "nothing was written"


def test_an_unreachable_tracking_server_is_a_clear_error(store, tmp_path, monkeypatch, capsys):
    tiny_record(tmp_path)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert main(["mirror"]) == 2
    err = capsys.readouterr().err
    assert f"repro mirror: error: the MLflow tracking store http://127.0.0.1:{port} cannot be used: " in err
    assert "connection refused" in err and "Traceback" not in err


def test_a_different_run_under_the_same_original_id_is_an_error_naming_both_and_nothing_is_written(
    store, tmp_path, capsys
):
    path, record = tiny_record(tmp_path)
    mirror_records(tmp_path, progress=False)
    [mirrored] = active_runs(store)
    original = record["provenance"]["mlflow_run_id"]
    write_record(path, {**record, "metrics": {**record["metrics"], "map_at_r": 0.99}})  # same run id
    tiny_record(tmp_path, method="triplet")  # a new record, not to be written either
    with pytest.raises(MirrorConflict) as raised:
        mirror_records(tmp_path, progress=False)
    message = str(raised.value)
    assert str(path.relative_to(tmp_path)) in message
    assert f"run {mirrored.info.run_id} as the mirror of run {original}" in message
    assert "metric map_at_r=0.25, record says 0.99" in message and "nothing was mirrored" in message
    assert [r.info.run_id for r in active_runs(store)] == [mirrored.info.run_id]
    assert main(["mirror"]) == 2 and "Traceback" not in capsys.readouterr().err


def test_a_failed_write_leaves_no_run_and_an_interrupted_mirror_is_replaced(store, tmp_path, monkeypatch):
    _, record = tiny_record(tmp_path)

    def fail(self, path, artifact_path=None):
        raise MlflowException("the store went away")

    with monkeypatch.context() as patch:
        patch.setattr(RunTracker, "log_artifact", fail)
        with pytest.raises(TrackingStoreError, match="failed while mirroring: the store went away"):
            mirror_records(tmp_path, progress=False)
    assert active_runs(store) == [], "the half-written run was deleted"

    # a mirror killed mid-run (no chance to delete) leaves a RUNNING run: the next mirror replaces it
    experiment = store.get_experiment_by_name(PAPER).experiment_id
    killed = store.create_run(experiment, tags={ORIGINAL_RUN_ID: record["provenance"]["mlflow_run_id"]})
    summary = mirror_records(tmp_path, progress=False)
    assert summary.replaced == [record["provenance"]["mlflow_run_id"]]
    [run] = active_runs(store)
    assert run.info.run_id != killed.info.run_id and run.info.status == "FINISHED"
    assert store.get_run(killed.info.run_id).info.lifecycle_stage == "deleted"


def test_a_mirrored_run_is_accepted_only_while_it_equals_its_record(store, tmp_path):
    _, record = tiny_record(tmp_path)
    mirror_records(tmp_path, progress=False)
    run, mirrored = stored_run(store, record)
    assert mirrored and differences(run, record) == []
    store.set_tag(run.info.run_id, "data_fingerprint", "tampered")
    store.log_metric(run.info.run_id, "map_at_r", 0.5, step=3)
    run = store.get_run(run.info.run_id)
    assert differences(run, record) == [
        "tag data_fingerprint='tampered', record says 'f1f1'",
        f"metric map_at_r=0.5, record says {record['metrics']['map_at_r']!r}",
    ]
    # two finished mirrors of one run: the audit and the mirror name both
    second = store.create_run(run.info.experiment_id, tags={ORIGINAL_RUN_ID: run.data.tags[ORIGINAL_RUN_ID]})
    store.set_terminated(second.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
    with pytest.raises(
        MirrorConflict, match=f"holds 2 finished runs mirrored from run .*{second.info.run_id}"
    ):
        stored_run(store, record)


def test_records_that_are_not_run_records_are_named(store, tmp_path):
    path, record = tiny_record(tmp_path)
    twin, _ = tiny_record(tmp_path, method="triplet")
    data = json.loads(twin.read_text())
    data["provenance"]["mlflow_run_id"] = record["provenance"]["mlflow_run_id"]
    twin.write_text(json.dumps(data))
    broken, _ = tiny_record(tmp_path, method="ms")
    data = json.loads(broken.read_text())
    del data["history"]
    data["provenance"]["mlflow_run_id"] = "not-an-id"
    broken.write_text(json.dumps(data))
    with pytest.raises(RecordError) as raised:
        mirror_records(tmp_path, progress=False)
    message = str(raised.value)
    assert f"{broken.relative_to(tmp_path)}: not a run record: no history" in message
    assert f"names the MLflow run {record['provenance']['mlflow_run_id']} that" in message
    assert store.get_experiment_by_name(PAPER) is None
