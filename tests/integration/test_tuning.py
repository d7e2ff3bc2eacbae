"""Hyper-parameters picked on held-out training data (``tune`` in a paper's params) through the run stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from common.config import point_label, resolve_trials
from common.records import read_paper_records, read_record
from common.runner import load_run_data, run_paper
from tests.integration.test_runner import tiny_params

GRID = [0.001, 0.01]


def _with_tuning(params):
    section = params["multi_similarity"]
    section["tune"] = {
        "metric": "map_at_r",
        "holdout": {"share": 0.25, "seed": 3},
        "grid": {method: {"optimizer.lr": GRID} for method in section["methods"]},
    }
    section["tune"]["grid"]["multi_similarity"] = {"loss.beta": [10.0, 50.0]}


@pytest.mark.parametrize("dataset", ["omniglot", "fashion_mnist"])
def test_trials_score_held_out_training_data_only(tmp_path, tiny_prepared, dataset):
    params = tiny_params(tmp_path, _with_tuning)
    trials = resolve_trials("multi_similarity", params, "smoke")
    run = next(r for r, _ in trials if r.dataset == dataset)
    train, held_out = load_run_data(run, tiny_prepared)
    full_train, test = load_run_data(run.model_copy(update={"holdout": None}), tiny_prepared)
    assert len(train.labels) + len(held_out.labels) == len(full_train.labels)
    assert not any(bool((test.images == x).all(dim=(1, 2, 3)).any()) for x in held_out.images[:5]), (
        "test images never appear in a trial's evaluation"
    )
    assert torch.equal(torch.unique(train.labels), torch.arange(int(train.labels.max()) + 1)), "renumbered"
    if dataset == "omniglot":  # unseen test classes: whole training classes are held out
        assert len(torch.unique(held_out.labels)) == 5  # round(0.25 * 20)
        assert len(torch.unique(train.labels)) == 15
    else:  # the test has the training classes: a quarter of each class's samples is held out
        assert torch.equal(torch.unique(held_out.labels), torch.unique(full_train.labels))
        assert torch.bincount(held_out.labels).tolist() == [round(0.25 * 30)] * 10


def test_each_method_runs_with_its_best_point_on_held_out_data(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path, _with_tuning)
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)

    trial_paths = sorted(Path("records/multi_similarity/omniglot/_tuning").rglob("*.json"))
    methods = set(yaml.safe_load(params.read_text())["multi_similarity"]["methods"])
    assert len(trial_paths) == 2 * len(methods), "2 points a method, 1 seed"
    trial_scores = {
        (r["method"], point_label(r["tuning_point"])): r["metrics"]["map_at_r"]
        for r in map(read_record, trial_paths)
    }
    records = read_paper_records(Path("records"), "multi_similarity")
    assert {r["method"] for r in records} == methods
    for record in records:
        tuning = record["tuning"]
        scores = {point_label(t["point"]): t["mean"] for t in tuning["trials"]}
        assert scores == {p: v for (m, p), v in trial_scores.items() if m == record["method"]}
        best = max(scores, key=scores.get)
        assert point_label(tuning["chosen"]) == best
        [(key, value)] = tuning["chosen"].items()
        component, name = key.split(".")
        assert record["config"][component][name] == value, "the reported run uses the chosen point"
        assert record["config"]["holdout"] is None, "the reported run trains on all training data"

    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = client.search_runs([experiment.experiment_id])
    tuned = [r for r in runs if r.info.run_name.startswith("tune/")]
    assert len(tuned) == len(trial_paths) and len(runs) == len(trial_paths) + len(records)
    assert all(r.data.tags["evaluated_on"].startswith("held-out training data") for r in tuned)

    mtimes = {p: p.stat().st_mtime_ns for p in Path("records").rglob("*.json")}
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
    assert {p: p.stat().st_mtime_ns for p in Path("records").rglob("*.json")} == mtimes, "nothing reran"


def test_a_changed_tuning_metric_reruns_the_reported_runs_but_not_the_trials(
    tmp_path, tiny_prepared, mlflow_store, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path, _with_tuning)
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
    trials = {
        p: p.stat().st_mtime_ns for p in Path("records/multi_similarity/omniglot/_tuning").rglob("*.json")
    }
    reported = {p: p.stat().st_mtime_ns for p in Path("records").glob("*/*/*/seed*.json")}
    assert trials and reported, "the first run wrote trials and reported runs"
    other = next(m for m in read_record(next(iter(trials)))["metrics"] if m != "map_at_r")

    section = yaml.safe_load(params.read_text())
    section["multi_similarity"]["tune"]["metric"] = other
    params.write_text(yaml.safe_dump(section, sort_keys=False))
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)

    assert {p: p.stat().st_mtime_ns for p in trials} == trials, "the trials' config is unchanged"
    for path, before in reported.items():
        assert path.stat().st_mtime_ns != before, f"{path} kept the tuning by the old metric"
        assert read_record(path)["tuning"]["metric"] == other
