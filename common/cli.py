"""``repro``: the commands the DVC stages run, and that a researcher runs by hand.

    repro papers                     list the papers, their claim verdicts and whether each report is current
    repro reproduce PAPER            rebuild one paper: `dvc repro report-PAPER` (its runs first if needed)
    repro show PAPER                 print the paper's results tables and claim verdicts in the terminal
    repro ui [--port N]              start `mlflow ui` on the runs' store and print its address
    repro compare PAPER              the methods across seeds (mean ± sd, n), from the MLflow store
    repro evaluate RECORD ...        load runs' weights back from MLflow, evaluate again beside the records
    repro prepare DATASET            raw source -> data/prepared/DATASET (python -m common.data.prepare)
    repro run PAPER [--dataset D]    train and evaluate a paper's runs (python -m common.runner)
    repro report PAPER               records -> reports/PAPER.md (python -m common.report.build)
    repro index                      reports/README.md (python -m common.report.build --index)
    repro dvc-yaml [--check]         write dvc.yaml: every stage with exactly the code it imports
    repro readme [--check]           write the README's table of the papers from papers/*/paper.yaml
    repro audit REPORT               trace a report's numbers to runs, commits, stages; flag drift
    repro check-reports              fail if a committed report is stale or differs from its records (CI)
    repro certify [STAGE ...]        show a code change leaves run stages' numbers as they are; re-lock them
    repro mirror [PAPER ...]         fill the MLflow store from the committed run records (a fresh clone)

The DVC stages run the stage modules directly, so that each stage depends on its own code only (see
common/pipeline.py). Errors that the user can fix (bad params, missing data, a NaN loss) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from common.config import PROFILES
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


def _readme(args: argparse.Namespace) -> None:
    from common.commands import readme_papers_table, render_readme

    readme = Path("README.md")
    if not readme.is_file():
        raise ConfigError("README.md: no such file here; run `repro readme` from the repository's root")
    current = readme.read_text()
    text = render_readme(current, readme_papers_table(Path(args.params)))
    if args.check:
        if text != current:
            raise ConfigError(
                "README.md: the papers table differs from papers/*/paper.yaml and params.yaml; run `repro readme`"
            )
        print("README.md's papers table is current")
        return
    readme.write_text(text)
    print("README.md's papers table written" if text != current else "README.md unchanged")


def _papers(args: argparse.Namespace) -> None:
    from common.commands import paper_status, papers_table
    from common.params import all_papers

    slugs = all_papers()
    status = None if args.no_status else paper_status(slugs)
    width = args.width or min(shutil.get_terminal_size((100, 24)).columns, 100)
    print("\n".join(papers_table(slugs, status, width)))


def _default_profile() -> str:
    """params.yaml's profile: the one the committed reports are made on."""
    from common.params import load_params

    return load_params(Path("params.yaml"))[0].profile


def _reproduce(args: argparse.Namespace) -> None:
    from common.commands import reproduce, reproduce_command, run_try

    default = _default_profile()
    profile = args.profile or default
    if profile != default or args.set:
        reproduce_command(args.paper, args.dataset)  # checks the paper and dataset
        run_try(args.paper, args.dataset, profile, args.set, dry=args.dry)
        return
    reproduce(reproduce_command(args.paper, args.dataset, force=args.force, dry=args.dry))


def _show(args: argparse.Namespace) -> None:
    from common.commands import show_report, try_workspace

    reports = try_workspace(args.try_name) / "reports" if args.try_name else Path("reports")
    print(show_report(args.paper, reports, width=args.width, runs=args.runs, claims=not args.no_claims))


def _compare(args: argparse.Namespace) -> None:
    from common.commands import compare_runs, try_store, try_workspace

    uri = try_store(try_workspace(args.try_name)) if args.try_name else None
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    lines = compare_runs(
        args.paper, args.profile or _default_profile(), args.metric, args.dataset, uri, width
    )
    print("\n".join(lines))


def _evaluate(args: argparse.Namespace) -> None:
    from common.evaluate import main

    if main([Path(p) for p in args.records]):
        raise SystemExit(1)


def _ui(args: argparse.Namespace) -> None:
    from common.commands import serve_ui

    serve_ui(args.host, args.port, open_browser=args.open, try_name=args.try_name)


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
    from common.audit import rebuilt_differences

    differences = rebuilt_differences(index=True)
    if differences:
        raise ConfigError(
            "the committed reports differ from the reports the committed records give:\n"
            + "\n".join(f"  {d}" for d in differences)
            + "\nwas a record edited or deleted? rerun the stages with `dvc repro` (delete the paper's records "
            "and checkpoints to train from scratch), or rebuild the reports if the records are right"
        )
    print(
        "reports are current: no stage has changed code, params or outputs since dvc.lock, and every report "
        "rebuilds from the records line for line"
    )


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


def _certify(args: argparse.Namespace) -> None:
    from common.certify import certify

    dvc = str(Path(sys.executable).parent / "dvc")
    if certify(args.stages or None, args.sample, Path(args.params), dvc=dvc) != 0:
        raise SystemExit(1)


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

    p = sub.add_parser(
        "readme",
        help="write the README's table of the papers from papers/*/paper.yaml",
        description="Rewrite the table between the lines <!-- papers:begin ... --> and <!-- papers:end --> of "
        "README.md: one row per paper (its authors, title and venue from papers/PAPER/paper.yaml, and a link "
        "to reports/PAPER.md), in the order of the papers' sections in params.yaml.",
    )
    p.add_argument(
        "--check", action="store_true", help="only check that the table is current (exit status 2 if not)"
    )
    p.set_defaults(func=_readme)

    p = sub.add_parser("audit", help="trace every number of a report to its runs and check for drift")
    p.add_argument("report", help="e.g. reports/multi_similarity.md")
    p.set_defaults(func=_audit)

    p = sub.add_parser(
        "check-reports",
        help="fail if a committed report is stale against the code or params, or differs from its records",
    )
    p.set_defaults(func=_check_reports)

    p = sub.add_parser(
        "certify",
        help="rerun a fixed sample of each run stage stale by its code alone; if every record is identical, "
        "certify the change and re-lock the stage (dvc commit), else name what moved",
    )
    p.add_argument(
        "stages", nargs="*", help="run stages (default: every run stage that only its code made stale)"
    )
    p.add_argument("--sample", type=int, default=2, help="runs rerun per stage (default: 2)")
    p.set_defaults(func=_certify)

    p = sub.add_parser(
        "mirror",
        help="fill the MLflow store (MLFLOW_TRACKING_URI, else mlflow.db) from the committed run records",
    )
    p.add_argument("papers", nargs="*", metavar="PAPER", help="only these papers (default: every one)")
    p.set_defaults(func=_mirror)

    p = sub.add_parser(
        "papers",
        help="list the papers, their claim verdicts and whether each report is current",
        description="List every paper (papers/*/paper.yaml) with its claim verdicts and, from `dvc status`, "
        "whether its report is current or which of its stages are stale.",
    )
    p.add_argument(
        "--no-status",
        action="store_true",
        help="skip the `dvc status` check (seconds the first time; reused while nothing it reads changed)",
    )
    p.add_argument(
        "--width", type=int, help="the table's width in columns (default: the terminal's, at most 100)"
    )
    p.set_defaults(func=_papers)

    p = sub.add_parser(
        "reproduce",
        help="rebuild one paper's report through DVC (`dvc repro report-PAPER`)",
        description="Run one paper's stages through DVC: `dvc repro report-PAPER` runs its run stages (train "
        "and evaluate every method x seed whose record is missing or stale) and then its report, preparing "
        "the data first if needed. Another profile or a changed parameter (-S KEY=VALUE) is a try: the same "
        "stages' commands run in a workspace of its own, tries/PROFILE[_KEY=VALUE...], with its own records, "
        "report and MLflow store; the repository's records, reports, params.yaml and dvc.lock stay as they "
        "are. Progress bars show the runs and the batches of each epoch.",
    )
    p.add_argument("paper", help="e.g. multi_similarity (`repro papers` lists them)")
    p.add_argument("--dataset", help="only this dataset's runs (`dvc repro run-PAPER-DATASET`), no report")
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help="run on this profile (another than params.yaml's is a try, in tries/)",
    )
    p.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a parameter, as a try in tries/ (repeatable; VALUE is read as YAML)",
    )
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="rerun the stages even if DVC sees no change (runs whose record matches the config, code and data "
        "are still skipped; a run whose record is deleted resumes its own final checkpoint, if kept: delete "
        "records/PAPER and checkpoints/PAPER to train again from scratch)",
    )
    p.add_argument("--dry", action="store_true", help="only print the stages DVC would run")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser(
        "show",
        help="print a paper's results tables and claim verdicts in the terminal",
        description="Print the results tables (mean ± 95%% interval over seeds, in %%) and the claim verdicts "
        "of reports/PAPER.md, aligned to the terminal's width.",
    )
    p.add_argument("paper", help="e.g. multi_similarity")
    p.add_argument("--runs", action="store_true", help="add the MLflow run ids of each row")
    p.add_argument("--no-claims", action="store_true", help="only the results tables")
    p.add_argument("--width", type=int, help="wrap tables at this width (default: the terminal's)")
    p.add_argument(
        "--try", dest="try_name", metavar="NAME", help="the report of the try tries/NAME (e.g. smoke)"
    )
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "compare",
        help="the methods side by side across seeds, from the MLflow store (mean ± sd, n)",
        description="Group the paper's finished runs in the MLflow store by dataset and method (the latest run "
        "of each seed, tuning trials left out) and print each metric's mean, standard deviation and n.",
    )
    p.add_argument("paper", help="e.g. multi_similarity")
    p.add_argument(
        "--metric", action="append", default=[], help="a metric (repeatable; default: the claims')"
    )
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--profile", choices=PROFILES, help="runs of this profile (default: params.yaml's)")
    p.add_argument("--try", dest="try_name", metavar="NAME", help="the runs of the try tries/NAME")
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "evaluate",
        help="load runs' trained weights back from MLflow and evaluate them again beside their records",
        description="For each record, download its run's final checkpoint (the MLflow artifact checkpoint/), "
        "evaluate it on the prepared data with the record's config and threads, and print each metric beside "
        "the record's; exit status 1 if any differs.",
    )
    p.add_argument("records", nargs="+", help="records/PAPER/DATASET/METHOD/seedN.json")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "ui",
        help="start `mlflow ui` on the runs' store and print its address",
        description="Start `mlflow ui` on the store the runs are logged to (MLFLOW_TRACKING_URI, else "
        "mlflow.db at the repository root), wait until it answers, print its address and one link per "
        "paper's experiment, and serve until Ctrl-C.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.add_argument(
        "--try", dest="try_name", metavar="NAME", help="the runs of the try tries/NAME (e.g. smoke)"
    )
    p.add_argument("--open", action="store_true", help="also open it in the default web browser")
    p.set_defaults(func=_ui)
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
