"""A paper's run stage in-process on tiny data: records, MLflow runs, skipping, the NaN guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from common.engine.trainer import NonFiniteLossError
from common.params import ConfigError
from common.records import read_paper_records
from common.runner import CodeChangedError, run_paper
from common.tracking.mirror import record_params
from tests.conftest import REPO


def tiny_params(tmp_path: Path, edit=None, **budget) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    smoke = params["multi_similarity"]["profiles"]["smoke"]
    smoke.update({"seeds": [0], "epochs": 2, "batches_per_epoch": 2, "train_limit": None, **budget})
    smoke["eval"] = {"max_items": None, "histogram_pairs": 100}
    params["multi_similarity"]["datasets"]["fashion_mnist"]["sampler"]["classes_per_batch"] = 6
    params["multi_similarity"]["datasets"]["omniglot"]["sampler"]["classes_per_batch"] = 6
    # the fixture paper: every method on the same budget (a budget check's doubled run trains longer)
    methods = params["multi_similarity"]["methods"]
    for name in [m for m, spec in methods.items() if "epochs_share" in spec]:
        methods.pop(name)
    if edit:
        edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_runs_write_records_and_mlflow_runs_then_skip(tmp_path, tiny_prepared, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path)
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
    records = read_paper_records(Path("records"), "multi_similarity")
    assert {(r["dataset"], r["method"], r["seed"]) for r in records} == {
        ("omniglot", m, 0) for m in yaml.safe_load(params.read_text())["multi_similarity"]["methods"]
    }
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == len(records)
    for record in records:
        run = runs[record["provenance"]["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        for tag in (
            "git_commit",
            "git_dirty",
            "dvc_stage",
            "params_hash",
            "data_fingerprint",
            "profile",
            "device",
            "world_size",
            "version.torch",
            "hardware",
        ):
            assert tag in run.data.tags, tag
        assert run.data.tags["params_hash"] == record["config_hash"]
        assert run.data.tags["dvc_stage"] == f"run-multi_similarity-{record['dataset']}"
        assert run.data.params["loss.name"] == record["config"]["loss"]["name"]
        assert run.data.params == record_params(record), "the config and each component's defaults"
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        checkpoint = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"model.safetensors", "optimizer.bin", "history.json"} <= checkpoint
        assert run.data.metrics["recall_at_1"] == pytest.approx(record["metrics"]["recall_at_1"])
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2]
        assert 0.0 <= record["metrics"]["map_at_r"] <= record["metrics"]["r_precision"] + 1e-9 <= 1.0 + 1e-9

    mtimes = {p: p.stat().st_mtime_ns for p in Path("records").rglob("*.json")}
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
    assert {p: p.stat().st_mtime_ns for p in Path("records").rglob("*.json")} == mtimes, (
        "done runs were rerun"
    )
    assert len(client.search_runs([experiment.experiment_id])) == len(records)


def test_a_changed_method_reruns_only_that_method_and_drops_removed_ones(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run_paper(
        "multi_similarity", "fashion_mnist", params_path=tiny_params(tmp_path), prepared_root=tiny_prepared
    )
    before = {p: json.loads(p.read_text())["config_hash"] for p in Path("records").rglob("*.json")}

    def edit(params):
        params["multi_similarity"]["methods"]["triplet"]["loss"]["margin"] = 0.2

    run_paper(
        "multi_similarity",
        "fashion_mnist",
        params_path=tiny_params(tmp_path, edit),
        prepared_root=tiny_prepared,
    )
    after = {p: json.loads(p.read_text())["config_hash"] for p in Path("records").rglob("*.json")}
    changed = {p.parent.name for p in before if before[p] != after[p]}
    assert changed == {"triplet"}


def test_a_code_change_reruns_every_run(tmp_path, tiny_prepared, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path)
    run_paper("multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared)
    before = {
        p: json.loads(p.read_text())["provenance"]["mlflow_run_id"] for p in Path("records").rglob("*.json")
    }
    monkeypatch.setattr("common.runner.run_code_hash", lambda *args: "changed-code")
    run_paper("multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared)
    after = {p: json.loads(p.read_text())["provenance"] for p in Path("records").rglob("*.json")}
    assert set(after) == set(before)
    assert all(
        after[p]["mlflow_run_id"] != before[p] and after[p]["code_hash"] == "changed-code" for p in after
    )


def test_code_changed_while_the_stage_ran_fails_it_so_dvc_does_not_lock_the_new_code(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path)
    hashes = iter(["code-at-start", "code-at-the-end"])
    monkeypatch.setattr("common.runner.run_code_hash", lambda *args: next(hashes))
    with pytest.raises(
        CodeChangedError, match="run-multi_similarity-fashion_mnist changed while the stage ran"
    ):
        run_paper("multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared)
    records = [json.loads(p.read_text()) for p in Path("records").rglob("seed*.json")]
    assert records and all(r["provenance"]["code_hash"] == "code-at-start" for r in records)


def test_a_nan_loss_stops_the_run_and_marks_it_failed(tmp_path, tiny_prepared, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def edit(params):
        params["multi_similarity"]["train"]["optimizer"]["lr"] = 1e30  # diverges at once

    with pytest.raises(NonFiniteLossError, match="the loss is|the model's outputs are not finite"):
        run_paper(
            "multi_similarity",
            "fashion_mnist",
            params_path=tiny_params(tmp_path, edit, epochs=3, batches_per_epoch=5),
            prepared_root=tiny_prepared,
            workers=1,  # every method diverges: one worker stops at the first (test_parallel: two workers)
        )
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("multi_similarity").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "NonFiniteLossError" in runs[0].data.tags["error"]
    assert not list(Path("records").rglob("*.json"))


def test_missing_prepared_data_fails_before_compute(tmp_path, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from common.data.sources import DataSourceError

    with pytest.raises(DataSourceError, match="dvc repro prepare-omniglot"):
        run_paper(
            "multi_similarity", "omniglot", params_path=tiny_params(tmp_path), prepared_root=tmp_path / "none"
        )


def test_a_batch_the_sampler_cannot_fill_fails_before_compute(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    from common.params import ConfigError

    def edit(params):
        params["multi_similarity"]["datasets"]["fashion_mnist"]["sampler"]["classes_per_batch"] = 11

    with pytest.raises(ConfigError, match=r"fashion_mnist.*needs 11 classes x 1 process.*labels have 10"):
        run_paper(
            "multi_similarity",
            "fashion_mnist",
            params_path=tiny_params(tmp_path, edit),
            prepared_root=tiny_prepared,
        )
    assert not Path("records").exists() and not Path("checkpoints").exists()


def test_the_same_seed_and_profile_give_identical_metrics_twice(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    """Determinism on CPU: two independent runs (fresh records and checkpoints) agree to the last bit."""
    results = []
    for attempt in ("first", "second"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        params = tiny_params(workdir)
        run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
        records = read_paper_records(Path("records"), "multi_similarity")
        results.append({(r["method"], r["seed"]): (r["metrics"], r["history"]) for r in records})
    first, second = results
    assert first.keys() == second.keys() and first
    for key, (metrics, history) in first.items():
        assert metrics == second[key][0], key
        assert [h["train_loss"] for h in history] == [h["train_loss"] for h in second[key][1]], key


def test_a_classifier_on_a_class_disjoint_dataset_fails_before_training(tmp_path, tiny_prepared, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def classify_omniglot(params: dict) -> None:
        params["multi_similarity"]["methods"]["ce"] = {"loss": {"name": "cross_entropy"}}

    with pytest.raises(
        ConfigError,
        match=r"method ce\): loss 'cross_entropy' trains a classifier, but the test classes of omniglot",
    ):
        run_paper(
            "multi_similarity",
            "omniglot",
            params_path=tiny_params(tmp_path, classify_omniglot),
            prepared_root=tiny_prepared,
        )
    assert not Path("records").exists() and not Path("checkpoints").exists()


def test_outputs_that_stop_being_finite_stop_the_run_though_the_loss_reads_zero(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    """A pair-mining loss on NaN embeddings mines no pair and reads 0: the outputs are checked themselves."""
    monkeypatch.chdir(tmp_path)
    import common.engine.trainer as trainer

    original = trainer.batch_loss

    def nan_after_first_step(model, *args):
        if not hasattr(nan_after_first_step, "done"):
            nan_after_first_step.done = True
        else:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return original(model, *args)

    monkeypatch.setattr(trainer, "batch_loss", nan_after_first_step)
    with pytest.raises(NonFiniteLossError, match="the model's outputs are not finite at epoch 1, step 1"):
        run_paper(
            "multi_similarity",
            "fashion_mnist",
            params_path=tiny_params(tmp_path, epochs=1, batches_per_epoch=3),
            prepared_root=tiny_prepared,
            workers=1,
        )
    assert not list(Path("records").rglob("*.json"))


def test_a_run_resumes_only_its_own_checkpoint_and_reruns_on_other_data(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    import common.runner as runner

    params = tiny_params(
        tmp_path,
        edit=lambda p: p["multi_similarity"].update(
            methods={m: p["multi_similarity"]["methods"][m] for m in ("contrastive", "triplet")}
        ),
    )

    def run() -> list[dict]:
        run_paper(
            "multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared, workers=1
        )
        return read_paper_records(Path("records"), "multi_similarity")

    first = run()
    assert [r["provenance"]["resumed_from_epoch"] for r in first] == [0, 0]
    deleted = Path("records/multi_similarity/fashion_mnist/contrastive/seed0.json")
    deleted.unlink()
    again = run()  # the same run's final checkpoint: evaluated again, not trained again
    assert [r["provenance"]["resumed_from_epoch"] for r in again] == [2, 0]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]

    other = "0" * 16  # the prepared data changed: every record is out of date, no checkpoint is its own
    monkeypatch.setattr(runner, "data_fingerprint", lambda path: other)
    changed = run()
    assert [r["provenance"]["data_fingerprint"] for r in changed] == [other, other]
    assert [r["provenance"]["resumed_from_epoch"] for r in changed] == [0, 0]


def test_a_truncated_checkpoint_is_an_error_naming_it(tmp_path, tiny_prepared, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from common.engine.trainer import CheckpointError

    params = tiny_params(
        tmp_path,
        edit=lambda p: p["multi_similarity"].update(
            methods={"triplet": {"label": "T", "loss": {"name": "triplet"}}}
        ),
    )
    run_paper("multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared, workers=1)
    Path("records/multi_similarity/fashion_mnist/triplet/seed0.json").unlink()
    [weights] = Path("checkpoints").rglob("epoch_2/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(
        CheckpointError, match=f"the checkpoint {weights.parent} is unreadable .*delete that folder"
    ):
        run_paper(
            "multi_similarity", "fashion_mnist", params_path=params, prepared_root=tiny_prepared, workers=1
        )


def test_non_finite_outputs_at_sams_perturbed_weights_stop_the_run_saying_where(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    """SAM's second pass (at the perturbed weights) is checked as the first is, and the message says so."""
    monkeypatch.chdir(tmp_path)
    import common.engine.trainer as trainer

    original, calls = trainer.batch_loss, []

    def nan_at_the_perturbed_weights(model, *args):
        calls.append(1)
        if len(calls) == 2:  # step 0's second pass
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return original(model, *args)

    def sam(params: dict) -> None:
        params["multi_similarity"]["train"]["optimizer"] = {
            "name": "sam",
            "base": "sgd",
            "lr": 0.01,
            "rho": 0.05,
        }

    monkeypatch.setattr(trainer, "batch_loss", nan_at_the_perturbed_weights)
    with pytest.raises(
        NonFiniteLossError,
        match=r"the model's outputs are not finite at SAM's perturbed weights, epoch 1, step 0; .* optimizer sam",
    ):
        run_paper(
            "multi_similarity",
            "fashion_mnist",
            params_path=tiny_params(tmp_path, edit=sam, epochs=1, batches_per_epoch=3),
            prepared_root=tiny_prepared,
            workers=1,
        )
