"""`repro certify` through real DVC on a smoke copy: a code change that moves no number is certified (the stage
re-locked without rerunning its runs, the audit names the certificate, the runner skips the runs); one that
moves a number is refused, naming what moved, and leaves the lock and the records alone."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.e2e.conftest import BIN, local_omniglot, make_smoke_repo, pipeline_env

pytestmark = pytest.mark.e2e

STAGE = "run-protonets-omniglot"
LOSS = "common/losses/prototypical.py"
SCALE_LINE = "    return scale * scores, classes\n"


def _run(repo, env, *args):
    return subprocess.run([*args], cwd=repo, env=env, capture_output=True, text=True)


def _repro(repo, env, *args):
    return _run(repo, env, str(BIN / "python"), "-m", "common.cli", *args)


@pytest.fixture(scope="module")
def protonets_repo(tmp_path_factory):
    """A smoke copy whose ProtoNets report is built (its run stage and report stage locked)."""
    repo = make_smoke_repo(tmp_path_factory, "certify", local_omniglot(fashion_mnist=False))
    env = pipeline_env()
    done = _run(repo, env, str(BIN / "dvc"), "repro", "report-protonets")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return repo, env


def _records(repo):
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted((repo / "records" / "protonets").rglob("*.json"))
    }


def test_a_change_that_alters_numbers_is_refused_and_a_neutral_one_is_certified(protonets_repo):
    repo, env = protonets_repo
    loss = repo / LOSS
    original = loss.read_text()
    assert SCALE_LINE in original
    lock_before, records_before = (repo / "dvc.lock").read_text(), _records(repo)

    # 1. a change of the numbers: the logits scaled by 1.01
    loss.write_text(original.replace(SCALE_LINE, SCALE_LINE.replace("scale *", "1.01 * scale *")))
    refused = _repro(repo, env, "certify", STAGE)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{STAGE}: the change alters its numbers" in refused.stdout
    assert "committed" in refused.stdout and "rerun" in refused.stdout  # names a value that moved
    assert (repo / "dvc.lock").read_text() == lock_before and _records(repo) == records_before
    assert not (repo / "records/protonets/omniglot/certificates.json").exists()

    # 2. a neutral change: a comment
    loss.write_text(original + "# a comment changes the code hash, not a number\n")
    status = json.loads(_run(repo, env, str(BIN / "dvc"), "status", "--json", STAGE).stdout or "{}")
    assert STAGE in status, "the edit makes the run stage stale"
    everything = _repro(repo, env, "certify")  # the other papers' stages never ran here: named, not certified
    assert everything.returncode == 1 and "run-sam-fashion_mnist: not certified" in everything.stdout
    assert f"{STAGE}: certified" in everything.stdout, everything.stdout + everything.stderr
    certified = _repro(repo, env, "certify", STAGE)  # now current: nothing to do
    assert certified.returncode == 0 and f"{STAGE}: current" in certified.stdout, certified.stdout
    certificates = json.loads((repo / "records/protonets/omniglot/certificates.json").read_text())
    (certificate,) = certificates
    assert certificate["changed_files"] == [LOSS]
    assert certificate["runs_rerun"] and all(r["identical"] for r in certificate["runs_rerun"])
    after = _records(repo)
    assert {k: v for k, v in after.items() if not k.endswith("certificates.json")} == records_before
    assert json.loads(_run(repo, env, str(BIN / "dvc"), "status", "--json", STAGE).stdout or "{}") == {}
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][STAGE]["deps"]
    assert any(d["path"] == LOSS for d in locked)

    # the report reruns (its records folder holds the certificate), the runner skips every run, the audit
    # accepts the old records and names the certificate
    rebuilt = _run(repo, env, str(BIN / "dvc"), "repro", "report-protonets")
    assert rebuilt.returncode == 0, rebuilt.stdout[-2000:] + rebuilt.stderr[-2000:]
    rerun = _repro(repo, env, "run", "protonets", "--dataset", "omniglot")
    assert "0 to run" in rerun.stdout, rerun.stdout + rerun.stderr
    audit = _repro(repo, env, "audit", "reports/protonets.md")
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert "certified neutral" in audit.stdout and "certificates.json" in audit.stdout
