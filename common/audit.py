"""``repro audit reports/<paper>.md``: where each number of a report came from, and whether it still holds.

For every run behind the report it prints the MLflow run, the git commit and dirty flag recorded at run
time, the DVC stage with its ``dvc.lock`` hashes, the params hash and the data fingerprint, and checks them
against the current checkout:

- params: the run's config hash equals the config ``params.yaml`` resolves to now;
- code: the run's code hash equals the hash of the code its stage runs now, or leads to it through the
  stage's neutral-change certificates (`repro certify`), each of which it names;
- data: the run's data fingerprint equals that of ``data/prepared/<dataset>`` (when it is present);
- lock: ``dvc.lock`` has the stage, and ``dvc status`` reports no change behind it;
- report: the report names the run;
- rebuild: the report and its summary, built again from the committed records, are what is committed, line
  for line (an edited or deleted record changes a cell, or a run the report names; ``rebuilt_differences``,
  which ``repro check-reports`` runs for every paper and the index);
- MLflow: the run exists in the tracking store with the same tags (when the store has it; a clean clone has
  no store, which the audit says plainly instead of failing). A store filled by ``repro mirror`` holds a copy
  under a new id, tagged ``original_run_id``: it is accepted only if it is finished and its run name, tags,
  params and metrics equal the record's.

Exit status 0 when everything matches, 1 on any drift or missing run.
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.config import expected_config, resolve_runs, tune_of
from common.params import ConfigError, all_papers
from common.pipeline import report_stage, run_code_hash, run_stage
from common.records import certificate_chain, read_certificates, read_paper_records
from common.staleness import stale_stages


@dataclass
class AuditResult:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.problems


def _mlflow_run(record: dict):
    """(run, mirrored, why): the record's run by its id, else its mirror (tagged original_run_id; see
    common/tracking/mirror.py), else ``None`` and why."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from common.tracking import tracking_uri
    from common.tracking.mirror import ORIGINAL_RUN_ID, MirrorConflict, stored_run
    from common.tracking.mlflow_tracking import absent_sqlite_store

    uri = tracking_uri()
    if absent_sqlite_store(uri) is not None:
        return (
            None,
            False,
            f"no MLflow store at {uri} (a clean clone has none; `repro` runs or `repro mirror` fill it)",
        )
    try:
        run, mirrored = stored_run(MlflowClient(uri), record)
    except MirrorConflict as err:
        return None, False, str(err)
    except MlflowException as err:
        return None, False, f"not in the MLflow store {uri}: {str(err).splitlines()[0]}"
    if run is None:
        return None, False, f"not in the MLflow store {uri}, nor a run tagged {ORIGINAL_RUN_ID} with its id"
    return run, mirrored, None


def _unreachable_server() -> str | None:
    """Why a tracking server cannot be used (one request, seconds), or None: without this check, MLflow's
    client would retry every run's lookup for minutes."""
    from common.tracking import tracking_uri
    from common.tracking.mlflow_tracking import TrackingStoreError, check_tracking_store

    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        check_tracking_store(uri)
    except TrackingStoreError as err:
        return str(err)
    return None


def _line_differences(committed: Path, rebuilt: Path, limit: int) -> list[str]:
    if not committed.is_file():
        return [f"{committed}: missing (the rebuild writes it)"]
    old, new = committed.read_text().splitlines(), rebuilt.read_text().splitlines()
    found = []
    for line in difflib.unified_diff(old, new, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        side = "committed" if line.startswith("-") else "rebuilt"
        text = line[1:].strip()
        found.append(f"{committed}: {side}: {text[:200]}{'...' if len(text) > 200 else ''}")
    return found[:limit]


def rebuilt_differences(
    slugs: Iterable[str] | None = None,
    records_root: Path = Path("records"),
    reports_root: Path = Path("reports"),
    params_path: Path = Path("params.yaml"),
    index: bool = False,
    limit: int = 6,
) -> list[str]:
    """Build the reports of ``slugs`` (default: every paper) again from ``records_root`` in a scratch folder and
    compare them, line by line, with the committed ``reports_root/<slug>.md`` and ``.json`` (and, with
    ``index``, ``README.md`` built from the rebuilt summaries): the differing lines, at most ``limit`` a file;
    empty when every table, verdict and named run is what the records give. Figures are not compared (their
    bytes vary with the plotting library); their numbers are the tables'."""
    from common.report.build import build_index, build_report

    slugs = list(slugs) if slugs is not None else all_papers()
    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rebuilt-reports-") as scratch:
        rebuilt_root = Path(scratch)
        for slug in slugs:
            try:
                build_report(slug, records_root, rebuilt_root, params_path)
            except ConfigError as err:
                found.append(f"{reports_root / slug}.md: cannot be rebuilt from {records_root}/{slug}: {err}")
                continue
            for name in (f"{slug}.md", f"{slug}.json"):
                found += _line_differences(reports_root / name, rebuilt_root / name, limit)
        if index and not found:
            for slug in set(all_papers()) - set(slugs):  # the index reads every paper's summary
                if (reports_root / f"{slug}.json").is_file():
                    shutil.copy2(reports_root / f"{slug}.json", rebuilt_root)
            build_index(rebuilt_root, params_path)
            found += _line_differences(reports_root / "README.md", rebuilt_root / "README.md", limit)
    return found


def audit_report(report: Path, params_path: Path = Path("params.yaml"), dvc: str = "dvc") -> AuditResult:
    from common.data.loading import data_fingerprint
    from common.data.sources import DataSourceError
    from common.tracking.mirror import differences

    result = AuditResult()
    slug = report.stem
    if not report.is_file():
        result.problems.append(f"{report}: no such report")
        return result
    text = report.read_text()
    records = read_paper_records(Path("records"), slug)
    if not records:
        result.problems.append(f"records/{slug}: no run records behind {report}")
        return result
    current = {(r.dataset, r.method, r.seed): r for r in resolve_runs(slug, params_path, check=False)}
    tune = tune_of(slug, params_path)
    code_hashes = {d: run_code_hash(slug, d, params_path) for d in {r["dataset"] for r in records}}
    lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").is_file() else {}
    stale = stale_stages(dvc=dvc)
    fingerprints: dict[str, str | None] = {}
    unreachable = _unreachable_server()
    if unreachable:
        result.problems.append(f"no run checked in MLflow: {unreachable}")

    for record in records:
        key = (record["dataset"], record["method"], record["seed"])
        prov = record["provenance"]
        stage = run_stage(slug, record["dataset"])
        code_hash = code_hashes[record["dataset"]]
        name = f"{record['dataset']}/{record['method']}/seed{record['seed']}"
        result.lines.append(
            f"{name}: MLflow run {prov['mlflow_run_id']} (experiment {prov['mlflow_experiment']}), commit "
            f"{prov['git_commit'][:10]}{' DIRTY' if str(prov['git_dirty']) == 'True' else ''}, stage {stage}, "
            f"params {record['config_hash']}, code {prov.get('code_hash')}, data {prov['data_fingerprint']}, "
            f"profile {prov['profile']}, world size {prov['world_size']}"
        )
        expected = expected_config(current[key], record, tune) if key in current else None
        if key not in current:
            result.problems.append(f"{name}: no longer in params.yaml ({slug})")
        elif expected is None:
            result.problems.append(
                f"{name}: params drifted (its tuning trials differ from the paper's tune section)"
            )
        elif expected.config_hash() != record["config_hash"]:
            result.problems.append(
                f"{name}: params drifted (run {record['config_hash']}, now {expected.config_hash()})"
            )
        if prov.get("code_hash") != code_hash:
            certificates = read_certificates(Path("records") / slug / record["dataset"])
            chain = certificate_chain(prov.get("code_hash"), code_hash, certificates)
            if chain is None:
                result.problems.append(f"{name}: code drifted (run {prov.get('code_hash')}, now {code_hash})")
            else:
                for step in chain:
                    result.lines.append(
                        f"  code {step['from_code_hash']} -> {step['to_code_hash']} certified neutral at commit "
                        f"{str(step['git_commit'])[:10]} ({', '.join(step['changed_files'])}): "
                        f"{len(step['runs_rerun'])} runs rerun identical "
                        f"(records/{slug}/{record['dataset']}/certificates.json)"
                    )
        source = record["config"].get("data", record["dataset"])  # a variant reads its source's data
        if source not in fingerprints:
            try:
                fingerprints[source] = data_fingerprint(Path("data/prepared") / source)
            except DataSourceError:
                fingerprints[source] = None
                result.lines.append(f"  data/prepared/{source} absent: data fingerprint not checkable here")
        now = fingerprints[source]
        if now is not None and now != prov["data_fingerprint"]:
            result.problems.append(f"{name}: data drifted (run {prov['data_fingerprint']}, now {now})")
        if prov["mlflow_run_id"][:8] not in text:
            result.problems.append(f"{name}: the report does not name its run {prov['mlflow_run_id']}")
        if unreachable:
            continue
        run, mirrored, why = _mlflow_run(record)
        if run is None:
            result.lines.append(f"  MLflow: {why}")
            if "clean clone" not in why:
                result.problems.append(f"{name}: MLflow run {prov['mlflow_run_id']} {why}")
        elif mirrored:  # a copy made from the record: accepted only if it holds exactly the record's run
            result.lines.append(f"  MLflow: mirrored from the record as run {run.info.run_id}")
            for difference in differences(run, record):
                result.problems.append(f"{name}: mirrored MLflow run {run.info.run_id}: {difference}")
            if run.info.status != "FINISHED":
                result.problems.append(
                    f"{name}: mirrored MLflow run {run.info.run_id} status {run.info.status}"
                )
        else:
            tags = run.data.tags
            for tag, expected in (
                ("git_commit", prov["git_commit"]),
                ("params_hash", record["config_hash"]),
                ("data_fingerprint", prov["data_fingerprint"]),
            ):
                if tags.get(tag) != str(expected):
                    result.problems.append(
                        f"{name}: MLflow tag {tag}={tags.get(tag)!r}, record says {expected!r}"
                    )
            if run.info.status != "FINISHED":
                result.problems.append(f"{name}: MLflow run status {run.info.status}")

    for stage in sorted({run_stage(slug, r["dataset"]) for r in records} | {report_stage(slug)}):
        locked = (lock or {}).get("stages", {}).get(stage)
        if locked is None:
            result.problems.append(f"{stage}: not in dvc.lock")
            continue
        hashes = ", ".join(f"{d['path']}={d.get('md5', '?')[:10]}" for d in locked.get("deps", []))
        result.lines.append(f"{stage} in dvc.lock: {hashes}")
        if stage in stale:
            result.problems.append(f"{stage}: {'; '.join(stale[stage])}")
    for difference in rebuilt_differences([slug], reports_root=report.parent, params_path=params_path):
        result.problems.append(f"rebuilt from the records: {difference}")
    summary = Path("reports") / f"{slug}.json"
    if summary.is_file():
        commits = json.loads(summary.read_text()).get("commits", [])
        result.lines.append(f"report built from runs at commit(s) {', '.join(c[:10] for c in commits)}")
    return result
