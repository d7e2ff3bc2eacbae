"""``repro``: the commands the DVC stages run, and that a researcher runs by hand.

    repro papers                     list the papers and their claim verdicts
    repro prepare DATASET            raw source -> data/prepared/DATASET (a DVC stage)
    repro run PAPER [--dataset D]    train and evaluate a paper's runs (a DVC stage)
    repro report PAPER               records -> reports/PAPER.md (a DVC stage)
    repro index                      reports/README.md (a DVC stage)
    repro audit REPORT               trace a report's numbers to runs, commits, stages; flag drift
    repro check-reports              fail if a committed report is stale (CI runs it)

Errors that the user can fix (bad params, missing data, a NaN loss) are printed without a traceback
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _prepare(args: argparse.Namespace) -> None:
    from common.config import load_params
    from common.data.prepare import prepare

    params, _ = load_params(args.params)
    source_dir = (params.data.get(args.dataset) or {}).get("source_dir")
    summary = prepare(args.dataset, Path(args.out or f"data/prepared/{args.dataset}"), source_dir=source_dir)
    print(f"{args.dataset}: {summary}")


def _run(args: argparse.Namespace) -> None:
    from common.runner import run_paper

    run_paper(args.paper, dataset=args.dataset, params_path=Path(args.params), profile=args.profile)


def _report(args: argparse.Namespace) -> None:
    from common.report.build import build_report

    print(build_report(args.paper, params_path=Path(args.params)))


def _index(args: argparse.Namespace) -> None:
    from common.report.build import build_index

    print(build_index())


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
    from common.config import ConfigError
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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="turn a raw dataset into data/prepared/<dataset>")
    p.add_argument("dataset", help="fashion_mnist or omniglot")
    p.add_argument("--out", help="output directory (default: data/prepared/<dataset>)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("run", help="train and evaluate every (dataset, method, seed) run of a paper")
    p.add_argument("paper")
    p.add_argument("--dataset", help="only this dataset of the paper")
    p.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help="override params.yaml's profile")
    p.set_defaults(func=_run)

    p = sub.add_parser("report", help="write reports/<paper>.md from the run records")
    p.add_argument("paper")
    p.set_defaults(func=_report)

    p = sub.add_parser("index", help="write reports/README.md from the paper reports")
    p.set_defaults(func=_index)

    p = sub.add_parser("audit", help="trace every number of a report to its runs and check for drift")
    p.add_argument("report", help="e.g. reports/multi_similarity.md")
    p.set_defaults(func=_audit)

    p = sub.add_parser("check-reports", help="fail if a committed report is stale against the code or params")
    p.set_defaults(func=_check_reports)

    p = sub.add_parser("papers", help="list the papers and their claim verdicts")
    p.set_defaults(func=_papers)
    return top


def main(argv: list[str] | None = None) -> int:
    from common.config import ConfigError
    from common.data.sources import DataSourceError
    from common.engine.trainer import NonFiniteLossError
    from common.records import RecordError
    from common.registry import BuildError
    from common.samplers import SamplerError

    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DataSourceError, NonFiniteLossError, RecordError, BuildError, SamplerError) as err:
        print(f"repro {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"repro {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
