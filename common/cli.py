"""``repro``: the commands the DVC stages run, and that a researcher runs by hand.

    repro papers                     list the papers and their claim verdicts
    repro prepare DATASET            raw source -> data/prepared/DATASET (python -m common.data.prepare)
    repro run PAPER [--dataset D]    train and evaluate a paper's runs (python -m common.runner)
    repro report PAPER               records -> reports/PAPER.md (python -m common.report.build)
    repro index                      reports/README.md (python -m common.report.build --index)
    repro dvc-yaml [--check]         write dvc.yaml: every stage with exactly the code it imports
    repro audit REPORT               trace a report's numbers to runs, commits, stages; flag drift
    repro check-reports              fail if a committed report is stale (CI runs it)
    repro mirror [PAPER ...]         fill the MLflow store from the committed run records (a fresh clone)

The DVC stages run the stage modules directly, so that each stage depends on its own code only (see
common/pipeline.py). Errors that the user can fix (bad params, missing data, a NaN loss) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import run_command
from common.params import ConfigError

# Each stage's command lives in its own module (its closure is the stage's code deps); `repro NAME ...` runs it.
STAGE_MODULES = {"prepare": "common.data.prepare", "run": "common.runner", "report": "common.report.build"}


def _dvc_yaml(args: argparse.Namespace) -> None:
    from common.pipeline import render_dvc_yaml

    text = render_dvc_yaml(Path(args.params))
    current = Path("dvc.yaml").read_text() if Path("dvc.yaml").is_file() else ""
    if args.check:
        if text != current:
            raise ConfigError("dvc.yaml is out of date with the code and params; run `repro dvc-yaml`")
        print("dvc.yaml is current")
        return
    Path("dvc.yaml").write_text(text)
    print("dvc.yaml written" if text != current else "dvc.yaml unchanged")


def _papers(args: argparse.Namespace) -> None:
    from common.paper import all_papers, load_paper

    for slug in all_papers():
        meta = load_paper(slug)
        summary = Path("reports") / f"{slug}.json"
        status = "no report yet"
        if summary.is_file():
            claims = json.loads(summary.read_text())["claims"]
            verdicts = [c["verdict"] for c in claims]
            status = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts)))
        print(f"{slug:24s} {meta.venue:12s} {status}   {meta.title}")


def _check_reports(args: argparse.Namespace) -> None:
    from common.staleness import stale_stages

    stale = stale_stages(dvc=str(Path(sys.executable).parent / "dvc"))
    if stale:
        lines = [f"  {stage}: {'; '.join(reasons)}" for stage, reasons in sorted(stale.items())]
        raise ConfigError(
            "the committed reports are stale against the committed code/params:\n"
            + "\n".join(lines)
            + "\nrerun `dvc repro` and commit records/, reports/ and dvc.lock"
        )
    print("reports are current: no stage has changed code, params or outputs since dvc.lock")


def _audit(args: argparse.Namespace) -> None:
    from common.audit import audit_report

    result = audit_report(
        Path(args.report), params_path=Path(args.params), dvc=str(Path(sys.executable).parent / "dvc")
    )
    print("\n".join(result.lines))
    if not result.ok():
        print(f"\n{len(result.problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in result.problems), file=sys.stderr)
        raise SystemExit(1)
    print(f"\n{args.report}: every number traces to a finished run of the current code, params and data")


def _mirror(args: argparse.Namespace) -> None:
    from common.tracking.mirror import mirror_records

    print(mirror_records(Path("."), papers=args.papers).text())


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    sub = top.add_subparsers(dest="command", required=True)

    for name, what in (
        ("prepare", "raw source -> data/prepared/<dataset>"),
        ("run", "train and evaluate every (dataset, method, seed) run of a paper"),
        ("report", "records -> reports/<paper>.md"),
    ):  # parsed by their own modules (see main); listed here for --help
        sub.add_parser(name, help=f"{what} (python -m {STAGE_MODULES[name]}; see `repro {name} --help`)")

    sub.add_parser("index", help="write reports/README.md (python -m common.report.build --index)")

    p = sub.add_parser("dvc-yaml", help="write dvc.yaml: the stages with the exact code each one imports")
    p.add_argument("--check", action="store_true", help="only check that dvc.yaml is current")
    p.set_defaults(func=_dvc_yaml)

    p = sub.add_parser("audit", help="trace every number of a report to its runs and check for drift")
    p.add_argument("report", help="e.g. reports/multi_similarity.md")
    p.set_defaults(func=_audit)

    p = sub.add_parser("check-reports", help="fail if a committed report is stale against the code or params")
    p.set_defaults(func=_check_reports)

    p = sub.add_parser(
        "mirror",
        help="fill the MLflow store (MLFLOW_TRACKING_URI, else mlflow.db) from the committed run records",
    )
    p.add_argument("papers", nargs="*", metavar="PAPER", help="only these papers (default: every one)")
    p.set_defaults(func=_mirror)

    p = sub.add_parser("papers", help="list the papers and their claim verdicts")
    p.set_defaults(func=_papers)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "index":
        argv = ["report", "--index", *argv[1:]]
    if argv and argv[0] in STAGE_MODULES:
        import importlib

        return importlib.import_module(STAGE_MODULES[argv[0]]).main(argv[1:])
    args = parser().parse_args(argv)
    return run_command(f"repro {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
