"""The report stage attaches the report and its figures to the paper's MLflow runs, where the store has them,
and never fails the report over MLflow: no store (a clean clone) is left uncreated, an unreachable one is a
warning."""

from __future__ import annotations

import socket
import time

from mlflow.tracking import MlflowClient

from common.tracking.report_artifacts import log_report_artifacts


def _files(tmp_path):
    report = tmp_path / "paper.md"
    report.write_text("# a report\n")
    figure = tmp_path / "training_loss.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    return [(report, "report"), (figure, "report/figures/paper")]


def test_the_report_goes_to_every_run_the_store_holds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("paper", artifact_location=(tmp_path / "artifacts").as_uri())
    run_ids = [client.create_run(experiment).info.run_id for _ in range(2)]
    missing = "0" * 32  # a record of a run logged to another store
    line = log_report_artifacts([*run_ids, missing], _files(tmp_path), uri=uri)
    assert (
        line
        == f"MLflow: 2 report file(s) attached to 2 run(s) under report/; 1 run(s) of the records are not in {uri}"
    )
    for run_id in run_ids:
        assert [a.path for a in client.list_artifacts(run_id, "report")] == [
            "report/figures",
            "report/paper.md",
        ]
        figures = [a.path for a in client.list_artifacts(run_id, "report/figures/paper")]
        assert figures == ["report/figures/paper/training_loss.png"]
    # again (the report stage reran): the same files, replaced
    assert log_report_artifacts(run_ids, _files(tmp_path), uri=uri).startswith("MLflow: 2 report file(s)")
    assert len(client.list_artifacts(run_ids[0], "report")) == 2


def test_no_store_is_created_where_there_is_none(tmp_path):
    database = tmp_path / "mlflow.db"
    line = log_report_artifacts(["0" * 32], _files(tmp_path), uri=f"sqlite:///{database}")
    assert line.startswith(f"MLflow: no store at sqlite:///{database}")
    assert not database.exists()


def test_an_unreachable_server_is_a_warning_in_seconds(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    line = log_report_artifacts(["0" * 32], _files(tmp_path), uri=f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    assert line.startswith(
        f"warning: the report was not attached to its MLflow runs in http://127.0.0.1:{port}: "
    )
    assert "connection refused" in line
