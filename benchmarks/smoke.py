"""How long each paper takes on the `smoke` profile, through DVC, once its data are prepared.

    python benchmarks/smoke.py [--papers P ...] [--workers N] [--keep DIR]

The committed state of this checkout (``git clone``: uncommitted changes are not measured) goes to a
temporary folder, its params.yaml is switched to ``profile: smoke`` (the Omniglot source as this
checkout's params.yaml resolves it), both datasets are prepared once (timed apart), and then each paper's
``dvc repro report-<paper>`` is timed on its own: its run stages, its report and everything they start
(interpreters, worker processes, the MLflow store), which is what ``repro reproduce PAPER --profile smoke``
costs once the data are prepared. The budget (the README's and issue 20's) is a minute a paper; the last
column is each paper's share of it. Run it on a quiet machine; it takes about as long as the e2e smoke
pipeline (a few minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUDGET_S = 60.0


def dvc(repo: Path, *args: str, workers: int | None = None) -> float:
    """Seconds that ``dvc ARGS`` takes in ``repo``; its output is shown only if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    if workers is not None:
        env["REPRO_WORKERS"] = str(workers)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    started = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return seconds


def smoke_copy(target: Path) -> None:
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["profile"] = "smoke"
    source = params["data"]["omniglot"]["source_dir"]
    if source is not None:
        params["data"]["omniglot"]["source_dir"] = str((REPO / source).resolve())
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    from common.config import resolve_runs, resolve_trials
    from common.params import all_papers
    from common.tracking.provenance import hardware

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--papers", nargs="+", default=None, help="default: every paper")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    parser.add_argument(
        "--workers", type=int, default=None, help="REPRO_WORKERS for the run stages (default: the machine's)"
    )
    args = parser.parse_args(argv)
    papers = args.papers or all_papers()

    work = args.keep or Path(tempfile.mkdtemp(prefix="smoke-bench-"))
    repo = work / "repo"
    try:
        smoke_copy(repo)
        prepare = dvc(repo, "repro", "prepare-fashion_mnist", "prepare-omniglot")
        workers = args.workers or "the default"
        print(f"# {hardware()}; smoke profile, `dvc repro` a paper, {workers} workers")
        print(f"{'data (both datasets, once)':<28} {prepare:7.1f} s")
        print(f"{'paper':<28} {'runs':>5} {'trials':>6} {'seconds':>8} {'of 60 s':>8}")
        total = 0.0
        for paper in papers:
            runs = len(resolve_runs(paper, repo / "params.yaml"))
            trials = len(resolve_trials(paper, repo / "params.yaml"))
            seconds = dvc(repo, "repro", f"report-{paper}", workers=args.workers)
            total += seconds
            print(f"{paper:<28} {runs:>5} {trials:>6} {seconds:>8.1f} {seconds / BUDGET_S:>8.2f}")
        print(f"{'all papers':<28} {'':>5} {'':>6} {total:>8.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
