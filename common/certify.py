"""``repro certify``: show that a shared-code change leaves a run stage's numbers as they are, instead of
rerunning every run of every paper it touches.

For each run stage that ``dvc status`` calls stale because of its code alone (no parameter, data or output
change), a fixed sample of its runs is trained again with the current code, into a scratch folder, and each new
record is compared with the committed one, field by field, leaving out what differs between any two executions
(the provenance: run ids, times, commit; the seconds per epoch). If every sampled record is identical, the
stage gets a certificate in ``records/<paper>/<dataset>/certificates.json`` (the code hashes before and after,
the changed files, the commit, the runs rerun and their equality) and is re-locked with ``dvc commit``: the
runner then counts the old records as done, and ``repro audit`` accepts them and names the certificate. If any
sampled record differs, nothing is written and the command names the differences: the change alters numbers,
and the stage must rerun (``dvc repro``).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.params import ConfigError
from common.records import (
    RECORDS_ROOT,
    add_certificate,
    certified_hash,
    read_certificates,
    read_record,
)

# What differs between two executions of the same run and says nothing about its numbers.
VOLATILE_HISTORY_KEYS = frozenset({"epoch_seconds"})
SAMPLE_SIZE = 2


def record_differences(committed: dict[str, Any], rerun: dict[str, Any], limit: int = 5) -> list[str]:
    """Where two records of one run differ, leaving out the provenance and the per-epoch timings: empty when
    the rerun reproduced the committed numbers bit for bit."""

    def comparable(record: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in record.items() if k != "provenance"}
        kept["history"] = [
            {k: v for k, v in epoch.items() if k not in VOLATILE_HISTORY_KEYS} for epoch in record["history"]
        ]
        return kept

    differences: list[str] = []
    _diff(comparable(committed), comparable(rerun), "", differences)
    return differences[:limit]


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}{key}: {'only in the rerun' if key in b else 'missing in the rerun'}")
            else:
                _diff(a[key], b[key], f"{where}{key}.", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}{i}.", out)
    elif not same_value(a, b):
        out.append(f"{where.rstrip('.')}: {a!r} committed, {b!r} rerun")


def same_value(a: Any, b: Any) -> bool:
    """Equal, bit for bit; two NaNs (a metric undefined in both runs) count as equal."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def sample_records(paths: list[Path], size: int = SAMPLE_SIZE) -> list[Path]:
    """A fixed, spread sample of a stage's records (sorted paths, evenly spaced, the first and the last among
    them): the same for anyone who certifies the same stage."""
    paths = sorted(paths)
    if len(paths) <= size:
        return paths
    step = (len(paths) - 1) / (size - 1) if size > 1 else 0
    return [paths[round(i * step)] for i in range(size)]


def _code_only(reasons: Iterable[str]) -> list[str]:
    """The reasons that are not a change of a code file (a parameter, data, an output, the command)."""
    return [
        r
        for r in reasons
        if not (r.startswith("dependency ") and r.removeprefix("dependency ").split(" ")[0].endswith(".py"))
    ]


def _changed_files(reasons: Iterable[str]) -> list[str]:
    return sorted(r.removeprefix("dependency ").split(" ")[0] for r in reasons)


RerunFn = Callable[[dict[str, Any], Path], dict[str, Any]]


def certify_stage(
    paper: str,
    dataset: str,
    reasons: list[str],
    rerun: RerunFn,
    code_hash: str,
    commit: str | None,
    records_root: Path = RECORDS_ROOT,
    size: int = SAMPLE_SIZE,
    machine: str | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Rerun a sample of the stage's records with ``rerun(record, scratch_dir) -> new record`` and compare.

    Returns the certificate (also appended to the stage's certificates) when every sampled record is
    identical, else None and the differences. Only on the kind of machine that computed the records
    (``machine``: this one's ``hardware()`` by default): another CPU picks other kernels, and its floating-point
    sums differ in the last bits whatever the code, so nothing could be certified there."""
    stage_dir = records_root / paper / dataset
    other = _code_only(reasons)
    if other:
        raise ConfigError(
            f"run-{paper}-{dataset}: stale for more than its code ({'; '.join(other)}); only a code change can "
            "be certified: rerun it with `dvc repro`"
        )
    paths = sorted([*stage_dir.glob("*/seed*.json"), *stage_dir.glob("_tuning/*/*.json")])
    if not paths:
        raise ConfigError(f"{stage_dir}: no run records to compare against; run the stage with `dvc repro`")
    certificates = read_certificates(stage_dir)
    records = {path: read_record(path) for path in paths}
    # every record must stand for one code hash (directly or through earlier certificates)
    froms = {certified_hash(r["provenance"]["code_hash"], certificates) for r in records.values()}
    if len(froms) != 1:
        raise ConfigError(
            f"{stage_dir}: its records were made by different code ({', '.join(sorted(froms))}); rerun the "
            "stage with `dvc repro`"
        )
    (from_hash,) = froms
    if machine is None:
        from common.tracking.provenance import hardware

        machine = hardware()
    computed_on = sorted(
        {r["provenance"]["hardware"] for r in records.values() if "hardware" in r["provenance"]}
    )
    if computed_on and computed_on != [machine]:
        raise ConfigError(
            f"run-{paper}-{dataset}: its records were computed on {', '.join(computed_on)}, this machine is "
            f"{machine}: another CPU's floating-point sums differ in the last bits whatever the code, so the "
            "change can only be certified on the machine kind that made them; rerun the stage with `dvc repro`"
        )
    if from_hash == code_hash:
        raise ConfigError(f"{stage_dir}: its records are already those of the current code ({code_hash})")
    checked, differences = [], []
    with tempfile.TemporaryDirectory(prefix="certify-") as scratch:
        for path in sample_records([p for p in paths if "_tuning" not in p.parts], size):
            committed = records[path]
            new = rerun(committed, Path(scratch))
            found = record_differences(committed, new)
            checked.append({"record": str(path.relative_to(records_root)), "identical": not found})
            differences += [f"{path.relative_to(records_root)}: {d}" for d in found]
    if differences:
        return None, differences
    certificate = {
        "from_code_hash": from_hash,
        "to_code_hash": code_hash,
        "changed_files": _changed_files(reasons),
        "git_commit": commit,
        "runs_rerun": checked,
        "compared": "every field of the record but its provenance and the seconds per epoch",
        "certified_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    add_certificate(stage_dir, certificate)
    return certificate, []


def dvc_commit(stage: str, dvc: str = "dvc", attempts: int = 30, wait_s: float = 2.0) -> None:
    """Re-lock a stage with its current dependencies and outputs; while another DVC command holds the
    repository's lock (a second certification, a `dvc status`), wait and try again, ``attempts`` times."""
    import time

    for attempt in range(attempts):
        done = subprocess.run([dvc, "commit", "--force", stage], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "Unable to acquire lock" not in done.stderr or attempt == attempts - 1:
            raise ConfigError(f"`dvc commit --force {stage}` failed: {done.stderr.strip()[-500:]}")
        time.sleep(wait_s)


def rerun_record(committed: dict[str, Any], scratch: Path, prepared_root: Path) -> dict[str, Any]:
    """Train the committed record's run again with the current code, on the threads it computed with, into
    ``scratch`` (its record, checkpoints and MLflow store), and return the new record."""
    import os

    import torch

    from common import runner
    from common.config import RunConfig
    from common.data.loading import data_fingerprint
    from common.pipeline import run_code_hash
    from common.tracking.provenance import git_commit, git_dirty

    run = RunConfig.model_validate(committed["config"])
    threads = committed["provenance"].get("threads")
    if threads is not None:
        torch.set_num_threads(int(threads))
    extra = {"tuning": committed["tuning"]} if "tuning" in committed else {}
    context = runner._RunContext(
        run.paper,
        git_commit(),
        git_dirty(),
        {run.dataset: run_code_hash(run.paper, run.dataset)},
        {run.data: data_fingerprint(prepared_root / run.data)},
        prepared_root,
        scratch / "checkpoints",
    )
    path = scratch / "records" / f"{run.method}-seed{run.seed}.json"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"  # not the user's store
    try:
        runner._train_and_record(context, runner.process_accelerator(), run, path, extra)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return read_record(path)


def certify(
    stages: list[str] | None = None,
    size: int = SAMPLE_SIZE,
    params_path: Path = Path("params.yaml"),
    prepared_root: Path = Path("data/prepared"),
    dvc: str = "dvc",
) -> int:
    """``repro certify``: certify every run stage that only its code made stale (or the named ones), then
    re-lock the certified stages. Returns 0 if every stage was certified, 1 if a stage's numbers moved or it is
    stale for more than its code (each such stage is named, with why; the others are still certified)."""
    from common.config import load_paper_section
    from common.params import all_papers
    from common.pipeline import run_code_hash, run_stage
    from common.staleness import stale_stages
    from common.tracking.provenance import git_commit

    known = {
        run_stage(paper, dataset): (paper, dataset)
        for paper in all_papers()
        for dataset in load_paper_section(paper, params_path).datasets
    }
    for name in stages or []:
        if name not in known:
            raise ConfigError(f"{name}: not a run stage; run stages: {', '.join(sorted(known))}")
    stale = {name: why for name, why in stale_stages(dvc=dvc).items() if name in known}
    chosen = sorted(stages or stale)
    if not chosen:
        print("no run stage is stale: nothing to certify")
        return 0
    status = 0
    for name in chosen:
        if name not in stale:
            print(f"{name}: current, nothing to certify")
            continue
        paper, dataset = known[name]
        code_hash = run_code_hash(paper, dataset, params_path)
        try:
            certificate, differences = certify_stage(
                paper,
                dataset,
                stale[name],
                lambda record, scratch: rerun_record(record, scratch, prepared_root),
                code_hash,
                git_commit(),
                size=size,
            )
        except ConfigError as err:  # stale for more than its code, or never run: this stage must rerun
            status = 1
            print(f"{name}: not certified: {err}")
            continue
        if certificate is None:
            status = 1
            print(f"{name}: the change alters its numbers; rerun it with `dvc repro {name}`")
            print("\n".join(f"  {d}" for d in differences))
            continue
        dvc_commit(name, dvc)
        runs = ", ".join(r["record"] for r in certificate["runs_rerun"])
        print(
            f"{name}: certified ({certificate['from_code_hash']} -> {code_hash}; {runs} rerun identical) "
            "and re-locked"
        )
    return status
