"""A paper's report (markdown and figures) attached as artifacts to the MLflow runs behind it.

The report stage calls this after writing the report, so that a user browsing a run in ``mlflow ui`` sees
the paper's figures beside the run's own record and per-epoch metrics. Kept out of ``mlflow_tracking`` so
that the run stages, which import that module, do not depend on this one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mlflow.exceptions import MlflowException

from common.tracking.mlflow_tracking import (
    TrackingStoreError,
    _client,
    _first_line,
    _retry,
    absent_sqlite_store,
    check_tracking_store,
    tracking_uri,
)


def report_files(reports_root: Path, slug: str) -> list[tuple[Path, str]]:
    """A paper's report and figures, each with the artifact folder it goes to, laid out as under ``reports/``:
    ``report/<slug>.md`` and ``report/figures/<slug>/*.png`` (the report stage and ``repro mirror`` alike)."""
    report = reports_root / f"{slug}.md"
    figures = sorted((reports_root / "figures" / slug).glob("*.png"))
    files = [(report, "report")] if report.is_file() else []
    return files + [(figure, f"report/figures/{slug}") for figure in figures]


def log_report_artifacts(
    run_ids: Iterable[str], files: Iterable[tuple[Path, str]], uri: str | None = None
) -> str:
    """Attach ``files`` (local path, artifact folder) to every run of ``run_ids`` that the store holds; one
    line back.

    The store mirrors the records, it is not their source: a SQLite store that does not exist (a clean clone)
    is not created, runs it does not hold are counted, and a store that cannot be reached is a warning in the
    returned line rather than an error, so the report itself never fails on MLflow.
    """
    uri = uri or tracking_uri()
    run_ids, files = sorted(set(run_ids)), [(Path(f), folder) for f, folder in files]
    if absent_sqlite_store(uri) is not None:
        return f"MLflow: no store at {uri}; the report is not attached to its runs"
    logged, absent = 0, 0
    try:
        check_tracking_store(uri)
        client = _client(uri)
        for run_id in run_ids:
            try:
                _retry(lambda run_id=run_id: client.get_run(run_id), uri=uri)
            except TrackingStoreError:
                raise
            except MlflowException as err:
                if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                absent += 1
                continue
            for path, folder in files:
                _retry(
                    lambda run_id=run_id, path=path, folder=folder: client.log_artifact(
                        run_id, str(path), folder
                    )
                )
            logged += 1
    except (MlflowException, OSError) as err:
        return f"warning: the report was not attached to its MLflow runs in {uri}: {_first_line(err)}"
    folders = sorted({folder.split("/")[0] for _, folder in files})
    line = f"MLflow: {len(files)} report file(s) attached to {logged} run(s) under {', '.join(folders)}/"
    if absent:
        line += f"; {absent} run(s) of the records are not in {uri}"
    return line
