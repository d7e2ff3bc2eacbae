"""``repro evaluate RECORD``: load a run's trained weights back from MLflow and evaluate them again.

Every run logs its final checkpoint (weights, optimizer state, history) among its MLflow artifacts, under
``checkpoint/``. This downloads it into a temporary folder laid out as the run's checkpoint folder, so the
trainer resumes at the last epoch and only evaluates; the metrics are then set beside the record's. On the
record's device and threads, with the same prepared data, they are equal to the last bit.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.certify import same_value
from common.commands import render_table
from common.params import ConfigError


def _run_of(record: dict[str, Any], where: Path) -> Any:
    from common.config import RunConfig

    try:
        return RunConfig.model_validate(record["config"])
    except Exception as err:  # a record of another schema
        raise ConfigError(f"{where}: its config no longer validates ({err}); rerun its stage") from err


def download_checkpoint(run_id: str, epoch: int, into: Path) -> Path:
    """The run's logged final checkpoint, as ``into/epoch_<epoch>`` (what ``latest_checkpoint`` finds)."""
    from mlflow.tracking import MlflowClient

    from common.engine.trainer import CHECKPOINT_PREFIX
    from common.runner import CHECKPOINT_ARTIFACT
    from common.tracking.mlflow_tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    try:
        files = [a.path for a in client.list_artifacts(run_id, CHECKPOINT_ARTIFACT)]
    except Exception as err:
        raise ConfigError(f"MLflow run {run_id}: cannot list its artifacts ({err})") from err
    if not files:
        raise ConfigError(
            f"MLflow run {run_id} has no {CHECKPOINT_ARTIFACT}/ artifact: it was logged before runs kept their "
            "weights, or by a mirror (which has no weights); rerun the run to get them"
        )
    target = into / f"{CHECKPOINT_PREFIX}{epoch}"
    Path(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(into))).rename(target)
    return target


def reevaluate(
    record_path: Path, prepared_root: Path = Path("data/prepared")
) -> tuple[dict, dict[str, float]]:
    """(the record, the metrics of its run's logged weights evaluated again on the prepared data)."""
    from common.data.loading import data_fingerprint
    from common.engine import parallel
    from common.engine.trainer import fit_and_evaluate
    from common.runner import load_corrupted_tests, load_one_shot_runs, load_run_data, process_accelerator

    if not record_path.is_file():
        raise ConfigError(f"{record_path}: no such record (records/PAPER/DATASET/METHOD/seedN.json)")
    record = json.loads(record_path.read_text())
    provenance = record.get("provenance", {})
    if "mlflow_run_id" not in provenance:
        raise ConfigError(f"{record_path}: not a run record (no provenance.mlflow_run_id)")
    run = _run_of(record, record_path)
    data = prepared_root / run.data
    if not data.is_dir():
        raise ConfigError(f"{data}: the prepared data is missing: `dvc repro prepare-{run.data}`")
    if data_fingerprint(data) != provenance.get("data_fingerprint"):
        raise ConfigError(
            f"{data}: its fingerprint {data_fingerprint(data)} is not the record's "
            f"{provenance.get('data_fingerprint')}: the run was trained on other data"
        )
    with tempfile.TemporaryDirectory(prefix="repro-evaluate-") as tmp:
        checkpoint_dir = Path(tmp)
        download_checkpoint(provenance["mlflow_run_id"], run.epochs, checkpoint_dir)
        with parallel.torch_threads(int(provenance.get("threads", 1))):
            train, test = load_run_data(run, prepared_root)
            one_shot = (
                load_one_shot_runs(data, run.image_size, run.train_limit) if run.eval.one_shot_runs else None
            )
            result = fit_and_evaluate(
                run,
                train,
                test,
                checkpoint_dir,
                process_accelerator(),
                one_shot=one_shot,
                corrupted=load_corrupted_tests(run, prepared_root),
            )
    if result.resumed_from_epoch != run.epochs:
        raise ConfigError(f"{record_path}: the logged checkpoint is not the final epoch's; it trained again")
    return record, result.metrics


def differing(record: dict[str, Any], metrics: dict[str, float]) -> list[str]:
    """The metrics whose value evaluated again is not the record's (bit for bit)."""
    names = sorted(record["metrics"].keys() | metrics.keys())
    return [n for n in names if not same_value(record["metrics"].get(n), metrics.get(n))]


def comparison_lines(record: dict[str, Any], metrics: dict[str, float]) -> list[str]:
    """One line a metric: the record's value, the re-evaluated one, and whether they are equal."""
    differ = set(differing(record, metrics))
    rows = [["metric", "record", "evaluated again", ""]]
    for name in sorted(record["metrics"].keys() | metrics.keys()):
        recorded, again = record["metrics"].get(name), metrics.get(name)
        rows.append([name, f"{recorded!r}", f"{again!r}", "DIFFERS" if name in differ else "equal"])
    return render_table(rows, width=1000)


def main(paths: Sequence[Path]) -> int:
    """Evaluate each record's run again; exit status 1 if any metric differs."""
    differs = 0
    for path in paths:
        record, metrics = reevaluate(path)
        differs += len(differing(record, metrics))
        print(f"{path} (MLflow run {record['provenance']['mlflow_run_id']}):")
        print("\n".join(f"  {line}" for line in comparison_lines(record, metrics)))
    return 1 if differs else 0
