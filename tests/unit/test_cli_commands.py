"""`repro reproduce`, `show`, `ui` and `papers`: what they run, what they print, and their errors (one line
each, exit status 2, no traceback). Their runs against a real smoke repository are in tests/e2e/test_cli.py."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common import commands
from common.commands import render_table, reproduce, reproduce_command, show_report
from common.params import ConfigError
from tests.conftest import REPO

PYTHON = sys.executable


def _repro(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "common.cli", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_reproduce_is_dvc_repro_of_the_papers_report_stage(monkeypatch):
    monkeypatch.chdir(REPO)
    dvc = commands.executable("dvc")
    assert reproduce_command("multi_similarity") == [dvc, "repro", "report-multi_similarity"]
    assert reproduce_command("multi_similarity", "omniglot", force=True, dry=True) == [
        dvc,
        "repro",
        "--force",
        "--dry",
        "run-multi_similarity-omniglot",
    ]


def test_a_try_applies_its_changes_to_a_copy_of_params_and_names_its_folder_by_them():
    params = {"profile": "cpu", "arcface": {"train": {"optimizer": {"name": "adam", "lr": 0.001}}}}
    tried = commands.apply_sets(params, ["profile=smoke", "arcface.train.optimizer.lr=1e-2", "x.y=[1, 2]"])
    assert tried["profile"] == "smoke" and tried["arcface"]["train"]["optimizer"] == {
        "name": "adam",
        "lr": 0.01,
    }
    assert tried["x"] == {"y": [1, 2]}
    assert params["profile"] == "cpu" and params["arcface"]["train"]["optimizer"]["lr"] == 0.001  # a copy
    assert commands.try_name("smoke", []) == "smoke"
    assert (
        commands.try_name("cpu", ["arcface.train.optimizer.lr=0.01"]) == "cpu_arcface.train.optimizer.lr=0.01"
    )
    assert commands.try_name("cpu", ["a/b=c d"]) == "cpu_a-b=c-d"
    long = commands.try_name("cpu", ["k" * 100 + "=1"])
    assert len(long) == 71 and long != commands.try_name("cpu", ["k" * 100 + "=2"])
    with pytest.raises(ConfigError, match=r"--set 'profile': expected KEY=VALUE"):
        commands.apply_sets(params, ["profile"])
    with pytest.raises(
        ConfigError, match=r"--set 'profile.x=1': params.yaml's profile is 'cpu', not a mapping"
    ):
        commands.apply_sets(params, ["profile.x=1"])


def test_a_try_runs_the_stages_commands_in_its_own_workspace(tmp_path):
    """The copy holds the code and papers but none of the repository's results; params.yaml is the try's;
    the commands are dvc.yaml's, the launcher resolved, with the data preparation where data is missing."""
    root = tmp_path / "repo"
    for name, text in {
        "params.yaml": "profile: cpu  # a comment\nlauncher: python\n",
        "dvc.yaml": (
            "stages:\n"
            "  prepare-omniglot: {cmd: python -m common.data.prepare omniglot}\n"
            "  run-p-omniglot: {cmd: '${launcher} -m common.runner p --dataset omniglot', "
            "deps: [common/x.py, data/prepared/omniglot]}\n"
            "  run-p-fashion_mnist: {cmd: '${launcher} -m common.runner p --dataset fashion_mnist', "
            "deps: [data/prepared/fashion_mnist]}\n"
            "  report-p: {cmd: python -m common.report.build p}\n"
        ),
        "common/x.py": "",
        "records/p/omniglot/m/seed0.json": "{}",
        "reports/p.md": "",
        "dvc.lock": "",
        "data/prepared/fashion_mnist/state.json": "{}",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".gitignore").write_text("/data/prepared/\n/tries/\n")
    workspace = commands.prepare_try("p", "smoke", ["p.train.epochs=3"], root)
    assert workspace == root / "tries" / "smoke_p.train.epochs=3"
    copied = sorted(str(f.relative_to(workspace)) for f in workspace.rglob("*") if f.is_file())
    assert copied == [".gitignore", "common/x.py", "dvc.yaml", "params.yaml"]
    assert (workspace / "data" / "prepared").resolve() == (root / "data" / "prepared").resolve()
    assert yaml.safe_load((workspace / "params.yaml").read_text()) == {
        "profile": "smoke",
        "launcher": "python",
        "p": {"train": {"epochs": 3}},
    }
    assert (root / "params.yaml").read_text() == "profile: cpu  # a comment\nlauncher: python\n"
    # made again: a file the repository no longer has goes, the try's outputs stay
    (root / "common" / "x.py").unlink()
    (workspace / "records" / "p").mkdir(parents=True)
    (workspace / "records" / "p" / "r.json").write_text("{}")
    assert commands.prepare_try("p", "smoke", ["p.train.epochs=3"], root) == workspace
    assert not (workspace / "common" / "x.py").exists() and (workspace / "records" / "p" / "r.json").exists()
    (root / "common" / "x.py").write_text("")
    commands.prepare_try("p", "smoke", ["p.train.epochs=3"], root)
    commands_ = commands.try_commands("p", None, workspace, root)
    assert commands_ == [
        (root, [PYTHON, "-m", "common.data.prepare", "omniglot"]),
        (workspace, [PYTHON, "-m", "common.runner", "p", "--dataset", "fashion_mnist"]),
        (workspace, [PYTHON, "-m", "common.runner", "p", "--dataset", "omniglot"]),
        (workspace, [PYTHON, "-m", "common.report.build", "p"]),
    ]
    assert commands.try_commands("p", "fashion_mnist", workspace, root) == [commands_[1]]
    (workspace / "params.yaml").write_text("launcher: accelerate launch --num_processes 2\n")
    launched = ["accelerate", "launch", "--num_processes", "2", "-m", "common.runner", "p", "--dataset"]
    assert commands.try_commands("p", "fashion_mnist", workspace, root) == [
        (workspace, [*launched, "fashion_mnist"])
    ]


def test_reproduce_names_what_is_wrong(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    with pytest.raises(
        ConfigError, match="no such paper; papers with a paper.yaml: align_uniform, arcface, circle_loss"
    ):
        reproduce_command("nope")
    with pytest.raises(ConfigError, match=r"no dataset 'mnist' .*its datasets: fashion_mnist, omniglot"):
        reproduce_command("multi_similarity", "mnist")
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages:\n  index: {cmd: 'true'}\n")
    with pytest.raises(ConfigError, match=r"has no stage report-arcface: .* run `repro dvc-yaml`"):
        reproduce_command("arcface", dvc_yaml=stale)


def test_reproduce_passes_dvcs_output_through_and_fails_with_its_status(tmp_path, capfd, monkeypatch):
    fake = tmp_path / "dvc"
    fake.write_text('#!/bin/sh\necho "dvc got: $*"\necho "python: $(command -v python)"\nexit "$EXIT"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("EXIT", "0")
    reproduce([str(fake), "repro", "report-x"])
    out = capfd.readouterr().out
    assert out.startswith("repro: dvc repro report-x\ndvc got: repro report-x\n")
    assert f"python: {Path(sys.executable).parent}/python" in out, "the stages get this venv's python"
    monkeypatch.setenv("EXIT", "3")
    with pytest.raises(ConfigError, match=r"`dvc repro report-x` failed with exit status 3"):
        reproduce([str(fake), "repro", "report-x"])


def test_render_table_aligns_and_splits_a_wide_table_repeating_the_first_column():
    rows = [["method", "R@1", "MAP@R"], ["MS", "53.2 ± 6.2", "21.1 ± 5.0"], ["Contrastive", "60.2", "26.4"]]
    assert render_table(rows, width=200) == [
        "method       R@1         MAP@R",
        "-----------  ----------  ----------",
        "MS           53.2 ± 6.2  21.1 ± 5.0",
        "Contrastive  60.2        26.4",
    ]
    narrow = render_table(rows, width=25)
    assert narrow[:4] == [
        "method       R@1",
        "-----------  ----------",
        "MS           53.2 ± 6.2",
        "Contrastive  60.2",
    ]
    assert narrow[4] == "" and narrow[5] == "method       MAP@R"
    assert all(len(line) <= 25 for line in narrow)


def test_show_prints_every_row_of_the_committed_report():
    report = (REPO / "reports" / "multi_similarity.md").read_text()
    text = show_report("multi_similarity", reports_root=REPO / "reports", width=250)
    assert text.startswith("Multi-Similarity Loss with General Pair Weighting")
    shown = [re.split(r"\s{2,}", line) for line in text.splitlines()]
    rows = [_md_cells(line) for line in report.split("## Claims")[0].splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * 7  # a header and six methods (the budget check's doubled run too), per dataset
    for row in rows:
        assert row[:-1] in shown, row  # the MLflow runs column is left out
    for dataset in ("omniglot", "fashion_mnist"):
        assert f"\n{dataset}\n" in text
    header = ["claim", "of", "dataset", "metric", "better", "worse", "difference", "margin", "verdict"]
    assert ["ms_over_contrastive", "paper", "omniglot", "recall_at_1"] == shown[shown.index(header) + 2][:4]
    assert "ms_over_contrastive: MS loss > contrastive loss" in text
    assert "`" not in text and "**" not in text
    with_runs = show_report("multi_similarity", reports_root=REPO / "reports", width=250, runs=True)
    assert "MLflow runs" in with_runs and "MLflow runs" not in text
    narrow = show_report("multi_similarity", reports_root=REPO / "reports", width=80)
    assert all(len(line) <= 80 for line in narrow.splitlines() if "±" in line)


def _md_cells(line: str) -> list[str]:
    return [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]


def test_show_without_a_report_says_how_to_build_it(tmp_path):
    with pytest.raises(
        ConfigError, match=r"reports/arcface.md does not exist yet: build it with `repro reproduce arcface`"
    ):
        show_report("arcface", reports_root=tmp_path / "reports")


def test_ui_without_a_store_says_where_runs_go(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["DVC_ROOT"] = str(tmp_path)  # the store's home: the repository root (no mlflow.db there)
    result = _repro("ui", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"repro ui: error: no MLflow store at {tmp_path}/mlflow.db: ")
    assert "Traceback" not in result.stderr


def test_ui_on_a_busy_port_says_so(tmp_path, monkeypatch):
    (tmp_path / "mlflow.db").write_bytes(b"")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"cannot listen on 127.0.0.1:{port}: .*choose another port with --port"
        ):
            commands.serve_ui("127.0.0.1", port)


def test_ui_on_a_tracking_server_points_to_it(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    commands.serve_ui("127.0.0.1", 5000)
    assert "the runs are logged to the MLflow server http://mlflow.example:5000" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reproduce", "nope"], "repro reproduce: error: "),
        (["show", "nope"], "repro show: error: "),
        (
            ["reproduce", "multi_similarity", "--dataset", "mnist"],
            "repro reproduce: error: multi_similarity has no dataset",
        ),
    ],
)
def test_errors_are_one_message_without_a_traceback(args, message):
    result = _repro(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr


def test_help_explains_every_command():
    result = _repro("--help")
    assert result.returncode == 0
    for command in ("papers", "reproduce", "show", "ui", "audit", "check-reports", "dvc-yaml"):
        assert f"    {command}" in result.stdout
    for command in ("reproduce", "show", "ui", "papers"):
        sub = _repro(command, "--help")
        assert sub.returncode == 0 and "usage: repro " + command in sub.stdout


def test_papers_counts_verdicts_by_source_fits_the_width_and_lists_stale_stages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    claims = [
        {"verdict": "reproduced", "source": "paper"},
        {"verdict": "inconclusive", "source": "paper"},
        {"verdict": "inconclusive"},  # a claim without a source is the paper's
        {"verdict": "reversed", "source": "ours"},
        {"verdict": "no effect", "source": "ours"},
    ]
    (tmp_path / "reports" / "sam.json").write_text(json.dumps({"claims": claims}))
    stages = ", ".join(f"run-sam-fashion_mnist_noise{n}" for n in (20, 40, 60))
    status = {"sam": f"stale: report-sam, {stages}", "supcon": "current"}
    lines = commands.papers_table(["sam", "supcon"], status, width=80)
    assert max(len(line) for line in lines) <= 80
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in lines[2:4]}
    assert rows["sam"][1:4] == [
        "1/0/0/2",
        "0/1/1/0",
        "stale (4)",
    ]  # reproduced/reversed/no effect/inconclusive
    assert rows["sam"][4].startswith("Sharpness-Aware") and rows["sam"][4].endswith("...")
    assert rows["supcon"][1:3] == ["no report yet", "-"]  # no summary: nothing counted, no status
    listed = " ".join(line.strip() for line in lines if not line.startswith(("sam ", "supcon ")))
    assert f"sam: stale: report-sam, {stages}" in listed


def test_papers_reuses_the_status_while_nothing_dvc_reads_changed(tmp_path, monkeypatch):
    import common.staleness

    monkeypatch.chdir(tmp_path)
    dep = tmp_path / "common" / "loss.py"
    dep.parent.mkdir()
    dep.write_text("x = 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  run-a-d:\n    cmd: python -m common.runner a\n    deps: [common/loss.py]\n"
        "    outs:\n      - records/a/d:\n          cache: false\n"
    )
    (tmp_path / "params.yaml").write_text("a: {}\n")
    calls = []
    monkeypatch.setattr(commands, "executable", lambda name: name)
    monkeypatch.setattr(common.staleness, "stale_stages", lambda **_: calls.append(1) or {"run-a-d": ["x"]})
    assert commands.paper_status(["a"]) == {"a": "stale: run-a-d"}
    assert commands.paper_status(["a"]) == {"a": "stale: run-a-d"} and len(calls) == 1
    dep.write_text("x = 22\n")  # a dependency changed: dvc status is asked again
    commands.paper_status(["a"])
    (tmp_path / "records" / "a" / "d").mkdir(parents=True)
    (tmp_path / "records" / "a" / "d" / "seed0.json").write_text("{}")  # so did an output
    commands.paper_status(["a"])
    assert len(calls) == 3


def _fake_proc(root: Path, commands_by_pid: dict[int, list[str]]) -> Path:
    for pid, argv in commands_by_pid.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir()  # not a process: skipped
    return root


def test_a_run_stage_or_a_certification_is_seen_alive_from_proc(tmp_path):
    idle = _fake_proc(tmp_path / "a", {11: ["bash"], 12: ["python", "-m", "mlflow", "ui"]})
    assert not commands.runner_alive(idle)
    stage = _fake_proc(tmp_path / "b", {11: ["bash"], 13: ["python", "-m", "common.runner", "sam"]})
    assert commands.runner_alive(stage)
    certify = _fake_proc(tmp_path / "c", {14: ["/repo/.venv/bin/python", "-m", "common.cli", "certify"]})
    assert commands.runner_alive(certify)
    assert commands.runner_alive(tmp_path / "no-proc-here"), "where it cannot tell, it assumes a live run"


def test_the_ui_closes_runs_left_running_only_when_no_run_stage_runs(tmp_path, monkeypatch, mlflow_store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment("sam", artifact_location=(tmp_path / "artifacts").as_uri())
    left = client.create_run(experiment).info.run_id  # a run whose process was killed: still RUNNING
    done = client.create_run(experiment).info.run_id
    client.set_terminated(done, status="FINISHED")

    monkeypatch.setattr(commands, "runner_alive", lambda: True)
    assert commands.close_abandoned_runs(mlflow_store) == 0
    assert client.get_run(left).info.status == "RUNNING", "a run stage is running: its runs may be live"
    monkeypatch.setattr(commands, "runner_alive", lambda: False)
    assert commands.close_abandoned_runs("http://team-server:5000") == 0, "a server's runs may live elsewhere"
    assert commands.close_abandoned_runs(mlflow_store) == 1
    assert client.get_run(left).info.status == "KILLED" and "abandoned" in client.get_run(left).data.tags
    assert client.get_run(done).info.status == "FINISHED"
