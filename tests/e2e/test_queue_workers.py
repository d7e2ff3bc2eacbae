"""Two `dvc exp run --queue` experiments run by two workers at once both land in one MLflow store, whole.

A temporary copy of the repository (as in test_smoke_pipeline) queues two experiments of the omniglot run
stage that differ in the learning rate, then `dvc queue start -j 2` runs them in two workers at the
same time, each in its own temporary copy under `.dvc/tmp/exps/`. Both log to the SQLite store at the
original root (the copies are deleted afterwards: a run logged there would be lost), and MLflow must hold
exactly the runs of the committed records: every run FINISHED, with its own experiment's params and the
metrics of its own record, nothing missing, extra or mixed.
"""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import (
    METHODS,
    QUEUE_LR_KEY,
    QUEUE_STAGE,
    assert_queue_finished,
    assert_ran_at_once,
    assert_runs_are_their_records,
    committed_experiments,
    git,
    local_omniglot,
    make_smoke_repo,
    pipeline_env,
    queue_experiments,
    run_queue,
)

pytestmark = pytest.mark.e2e

EXPERIMENTS = {"lr-two": 0.002, "lr-four": 0.004}  # both differ from params.yaml, so both change it


@pytest.fixture(scope="module")
def queued_repo(tmp_path_factory):
    repo = make_smoke_repo(tmp_path_factory, "queue", local_omniglot(fashion_mnist=False))
    env = pipeline_env()
    queue_experiments(repo, env, QUEUE_STAGE, QUEUE_LR_KEY, EXPERIMENTS)
    assert not (repo / "mlflow.db").exists()  # the two workers create the store, at the same time
    seconds = run_queue(repo, env, len(EXPERIMENTS))
    return repo, env, seconds


def test_both_queued_experiments_land_whole_and_unmixed_in_one_store(queued_repo):
    repo, env, seconds = queued_repo
    print(f"two queued experiments, two workers: {seconds:.1f} s")
    baseline = git(repo, "rev-parse", "HEAD").strip()
    experiments = committed_experiments(repo, baseline, "records/multi_similarity/omniglot")
    assert_queue_finished(repo, experiments, EXPERIMENTS)

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multi_similarity")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    owner = {}  # MLflow run id -> (experiment name, record)
    for name, exp in experiments.items():
        lr = EXPERIMENTS[name]
        assert exp["params"]["multi_similarity"]["train"]["optimizer"]["lr"] == lr
        assert {r["method"] for r in exp["records"]} == METHODS and len(exp["records"]) == len(METHODS)
        for record in exp["records"]:
            run_id = record["provenance"]["mlflow_run_id"]
            assert run_id not in owner, "two records name one MLflow run"
            owner[run_id] = (name, record)
    assert len(runs) == len(owner) == len(EXPERIMENTS) * len(METHODS)
    assert_runs_are_their_records(runs, owner)

    for run_id, (name, record) in owner.items():
        run = runs[run_id]
        assert run.data.params["optimizer.lr"] == str(EXPERIMENTS[name])
        assert run.data.tags["git_commit"] == baseline
        # read in the experiment's own copy, whose params.yaml differs from the commit (not in the original root)
        assert run.data.tags["git_dirty"] == "True"
        [artifact] = client.list_artifacts(run_id, "record")
        logged = repo / "mlartifacts" / "multi_similarity" / run_id / "artifacts" / artifact.path
        assert json.loads(logged.read_text()) == record, "the record artifact lies at the original root"

    by_method = {}
    for name, record in owner.values():
        by_method.setdefault(record["method"], {})[name] = record["metrics"]["map_at_r"]
    assert any(len(set(values.values())) == 2 for values in by_method.values()), (
        "the two learning rates must give different metrics, or a mix-up could not show"
    )
    assert_ran_at_once(runs, owner, *EXPERIMENTS)
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "no store inside a temporary copy"
