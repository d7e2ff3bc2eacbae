"""`repro evaluate` and `repro compare`: a run's weights come back from MLflow and give its record's metrics to
the last bit; the comparison groups the store's runs by method across seeds."""

from __future__ import annotations

import json
import statistics

import pytest
from mlflow.tracking import MlflowClient

from common.commands import compare_runs
from common.evaluate import comparison_lines, reevaluate
from common.params import ConfigError
from common.records import read_paper_records
from common.runner import run_paper
from tests.integration.test_runner import tiny_params


@pytest.fixture()
def ran(tmp_path, tiny_prepared, mlflow_store, monkeypatch):
    """The tiny Multi-Similarity stage on Omniglot, two seeds, run in tmp_path."""
    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path, seeds=[0, 1])
    run_paper("multi_similarity", "omniglot", params_path=params, prepared_root=tiny_prepared)
    return tmp_path, tiny_prepared, mlflow_store


def test_a_runs_logged_weights_evaluate_again_to_its_records_metrics(ran):
    root, prepared, store = ran
    path = root / "records" / "multi_similarity" / "omniglot" / "contrastive" / "seed1.json"
    record, metrics = reevaluate(path, prepared_root=prepared)
    assert metrics == record["metrics"]
    assert all(line.endswith("equal") for line in comparison_lines(record, metrics)[2:])

    # the comparison can tell: other weights (seed 0's) under seed 1's record differ
    other = json.loads(path.with_name("seed0.json").read_text())["provenance"]["mlflow_run_id"]
    swapped = {**record, "provenance": {**record["provenance"], "mlflow_run_id": other}}
    path.write_text(json.dumps(swapped))
    _, theirs = reevaluate(path, prepared_root=prepared)
    assert theirs != record["metrics"]
    assert any(line.endswith("DIFFERS") for line in comparison_lines(record, theirs))

    client = MlflowClient(store)
    client.delete_run(other)  # deleted runs keep their artifacts; a run without them is refused by name
    unlogged = client.create_run(client.get_experiment_by_name("multi_similarity").experiment_id).info.run_id
    path.write_text(json.dumps({**record, "provenance": {**record["provenance"], "mlflow_run_id": unlogged}}))
    with pytest.raises(ConfigError, match=f"MLflow run {unlogged} has no checkpoint/ artifact"):
        reevaluate(path, prepared_root=prepared)


def test_compare_groups_the_runs_by_method_with_mean_and_spread_over_seeds(ran):
    root, _, store = ran
    records = read_paper_records(root / "records", "multi_similarity")
    lines = compare_runs("multi_similarity", "smoke", ["recall_at_1"], uri=store)
    table = {tuple(line.split()[:2]): line.split()[2:] for line in lines[3:]}
    methods = {r["method"] for r in records}
    assert set(table) == {("omniglot", m) for m in methods}
    for method in methods:
        values = [r["metrics"]["recall_at_1"] for r in records if r["method"] == method]
        n, mean, _, sd = table[("omniglot", method)]
        assert (int(n), float(mean), float(sd)) == (
            2,
            round(statistics.mean(values), 4),
            round(statistics.stdev(values), 4),
        )
    with pytest.raises(ConfigError, match="no finished cpu runs of multi_similarity"):
        compare_runs("multi_similarity", "cpu", uri=store)
