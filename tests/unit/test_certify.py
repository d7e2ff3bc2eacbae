"""Neutral-change certificates: comparing records, the sample, the chain of code hashes, and certify_stage
with a rerun that reproduces or changes the numbers."""

import copy
import json
import math

import pytest

from common.certify import certify_stage, record_differences, sample_records
from common.params import ConfigError
from common.records import (
    CERTIFICATES,
    certificate_chain,
    certified_hash,
    read_certificates,
    write_record,
)


def _record(seed: int = 0, code_hash: str = "old", value: float = 0.5) -> dict:
    return {
        "paper": "p",
        "dataset": "d",
        "method": "m",
        "seed": seed,
        "config": {"lr": 0.1},
        "config_hash": "c",
        "metrics": {"recall_at_1": value, "nmi": math.nan},
        "history": [{"epoch": 1, "train_loss": 1.0, "epoch_seconds": 2.5}],
        "provenance": {"code_hash": code_hash, "mlflow_run_id": "abc", "duration_s": 3.0},
    }


def test_two_executions_of_a_run_differ_only_where_they_must():
    committed = _record()
    rerun = copy.deepcopy(committed)
    rerun["provenance"] = {"code_hash": "new", "mlflow_run_id": "def", "duration_s": 9.0}
    rerun["history"][0]["epoch_seconds"] = 7.0
    assert record_differences(committed, rerun) == []  # nan equals nan here


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda r: r["metrics"].update(recall_at_1=0.5000001), "metrics.recall_at_1"),
        (lambda r: r["history"][0].update(train_loss=1.1), "history.0.train_loss"),
        (lambda r: r.update(budget={"images": 10}), "budget: only in the rerun"),
        (lambda r: r["config"].update(lr=0.2), "config.lr"),
    ],
)
def test_any_number_that_moves_is_a_difference(edit, where):
    committed = _record()
    rerun = copy.deepcopy(committed)
    edit(rerun)
    (difference,) = record_differences(committed, rerun)
    assert difference.startswith(where)


def test_the_sample_is_fixed_and_spread():
    paths = [f"r{i:02d}" for i in range(10)]
    assert sample_records(list(reversed(paths)), 2) == ["r00", "r09"]
    assert sample_records(paths, 3) == ["r00", "r04", "r09"]  # round(4.5) = 4
    assert sample_records(paths[:1], 2) == ["r00"]


def test_certificates_chain_code_hashes():
    certificates = [
        {"from_code_hash": "a", "to_code_hash": "b"},
        {"from_code_hash": "b", "to_code_hash": "c"},
    ]
    assert certificate_chain("a", "a", certificates) == []
    assert certificate_chain("a", "c", certificates) == certificates
    assert certificate_chain("b", "c", certificates) == certificates[1:]
    assert certificate_chain("c", "a", certificates) is None  # no way back
    assert certificate_chain("x", "c", certificates) is None
    assert certified_hash("a", certificates) == "c" and certified_hash("x", certificates) == "x"
    loop = [{"from_code_hash": "a", "to_code_hash": "b"}, {"from_code_hash": "b", "to_code_hash": "a"}]
    assert certificate_chain("a", "z", loop) is None and certified_hash("a", loop) == "b"


@pytest.fixture
def stage(tmp_path):
    root = tmp_path / "records"
    for seed in range(3):
        write_record(root / "p" / "d" / "m" / f"seed{seed}.json", _record(seed))
    return root


CODE_CHANGE = ["dependency common/losses/contrastive.py modified"]


def test_a_stage_whose_sample_reruns_identically_gets_a_certificate(stage):
    rerun_calls = []

    def rerun(record, scratch):
        rerun_calls.append(record["seed"])
        return {**copy.deepcopy(record), "provenance": {"code_hash": "new"}}

    certificate, differences = certify_stage(
        "p", "d", CODE_CHANGE, rerun, "new", "abc123", records_root=stage
    )

    assert differences == [] and rerun_calls == [0, 2]
    assert certificate["from_code_hash"] == "old" and certificate["to_code_hash"] == "new"
    assert certificate["changed_files"] == ["common/losses/contrastive.py"]
    assert [r["record"] for r in certificate["runs_rerun"]] == ["p/d/m/seed0.json", "p/d/m/seed2.json"]
    assert all(r["identical"] for r in certificate["runs_rerun"])
    assert read_certificates(stage / "p" / "d") == [certificate]


def test_a_stage_whose_numbers_move_gets_no_certificate(stage):
    def rerun(record, scratch):
        changed = copy.deepcopy(record)
        changed["metrics"]["recall_at_1"] += 1e-7
        return changed

    certificate, differences = certify_stage(
        "p", "d", CODE_CHANGE, rerun, "new", "abc123", records_root=stage
    )

    assert certificate is None
    assert differences[0].startswith("p/d/m/seed0.json: metrics.recall_at_1: 0.5 committed")
    assert not (stage / "p" / "d" / CERTIFICATES).exists()


@pytest.mark.parametrize(
    ("reasons", "match"),
    [
        (["parameter p.methods modified (params.yaml)"], "stale for more than its code"),
        (["dependency data/prepared/omniglot modified"], "stale for more than its code"),
    ],
)
def test_only_a_code_change_can_be_certified(stage, reasons, match):
    with pytest.raises(ConfigError, match=match):
        certify_stage("p", "d", reasons, lambda r, s: r, "new", None, records_root=stage)


def test_records_of_mixed_code_must_rerun(stage):
    path = stage / "p" / "d" / "m" / "seed1.json"
    record = json.loads(path.read_text())
    record["provenance"]["code_hash"] = "older"
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="made by different code"):
        certify_stage("p", "d", CODE_CHANGE, lambda r, s: r, "new", None, records_root=stage)


def test_records_of_another_machine_cannot_be_certified_here(stage):
    for path in (stage / "p" / "d" / "m").glob("seed*.json"):
        record = json.loads(path.read_text())
        record["provenance"]["hardware"] = "2 x AMD EPYC"
        path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="computed on 2 x AMD EPYC, this machine is 2 x Intel"):
        certify_stage(
            "p", "d", CODE_CHANGE, lambda r, s: r, "new", None, records_root=stage, machine="2 x Intel"
        )
    certificate, _ = certify_stage(
        "p", "d", CODE_CHANGE, lambda r, s: r, "new", None, records_root=stage, machine="2 x AMD EPYC"
    )
    assert certificate is not None


def test_relocking_waits_while_another_dvc_command_holds_the_lock_and_names_any_other_failure(tmp_path):
    """Two certifications side by side each re-lock their stages: a held lock is waited for; any other
    failure of `dvc commit` stops at once, with DVC's message."""
    from common.certify import dvc_commit

    count = tmp_path / "count"
    fake = tmp_path / "dvc"
    fake.write_text(
        "#!/bin/sh\n"
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}\n"
        'if [ "$n" -lt 2 ]; then echo "ERROR: Unable to acquire lock. Most likely ..." >&2; exit 1; fi\n'
        'if [ "$3" = "broken" ]; then echo "ERROR: stage broken: no such stage" >&2; exit 1; fi\n'
    )
    fake.chmod(0o755)
    dvc_commit("run-x-y", dvc=str(fake), wait_s=0.01)
    assert count.read_text().strip() == "3"  # two refusals, then the commit
    with pytest.raises(ConfigError, match="failed: ERROR: stage broken: no such stage"):
        dvc_commit("broken", dvc=str(fake), wait_s=0.01)
    assert count.read_text().strip() == "4", "a failure other than the lock is not retried"
    count.unlink()
    with pytest.raises(ConfigError, match="Unable to acquire lock"):
        dvc_commit("run-x-y", dvc=str(fake), attempts=2, wait_s=0.01)
