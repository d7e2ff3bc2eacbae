"""One paper's run stage: every (dataset, method, seed) run of the active profile.

    python -m common.runner PAPER [--dataset D] [--profile smoke|cpu|gpu] [--workers N] [--threads T]
    accelerate launch --multi_gpu --num_processes N -m common.runner PAPER ...

Before any compute, every run's config is resolved and validated and the prepared data is found.
Then, for each run: a record with the same config hash means the run is done and is skipped; else
the run trains (resuming from its checkpoint if an earlier attempt died), logs to MLflow and writes
its record. Records of runs no longer in the plan are removed, so the records match params.yaml.

Independent runs go side by side in worker processes (``common.engine.parallel``: by default one torch
thread per run and as many workers as usable CPUs; one at a time under a multi-process launch or on a GPU).
A run computes with the same number of threads whatever the number of workers, so its record does not
depend on it; the thread count is in the record's provenance (``threads``).

A paper with a ``tune`` section first runs its tuning trials (each trains on the training split minus a
held-out part and is scored on that part; records under ``records/<paper>/<dataset>/_tuning/``, MLflow runs
named ``tune/...``), picks each method's best point, and runs the reported runs with it; their records
say which points were tried and what each scored.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from common import losses, samplers
from common.config import (
    CorruptionSpec,
    RunConfig,
    TuneSpec,
    apply_point,
    logged_params,
    point_label,
    resolve_runs,
    resolve_trials,
    tune_of,
)
from common.data.loading import data_fingerprint, load_prepared, load_split
from common.data.transforms import fixed_subset, holdout_indices, long_tailed_indices, noisy_labels
from common.engine import parallel
from common.engine.evaluation import CORRUPTIONS, CorruptedTests, OneShotRuns, SplitTensors
from common.engine.trainer import fit_and_evaluate, latest_checkpoint, to_model_input
from common.errors import UserError, check_writable_dir, run_command
from common.params import ConfigError
from common.pipeline import run_code_hash, run_stage
from common.records import certificate_chain, read_certificates, read_record, record_path, write_record
from common.registry import BuildError
from common.tracking import RunTracker, mark_abandoned
from common.tracking.mlflow_tracking import check_tracking_store, run_name
from common.tracking.provenance import git_commit, git_dirty, hardware, versions

PREPARED_ROOT = Path("data/prepared")
CHECKPOINT_ARTIFACT = "checkpoint"  # a run's final checkpoint among its MLflow artifacts
CHECKPOINTS_ROOT = Path("checkpoints")
ATTEMPTS_FILE = "mlflow_attempts.json"


@cache
def _load_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_prepared(path, split)


@cache
def _pixel_stats(path: Path, train_limit: int | None) -> tuple[float, float]:
    """Mean and std of the training pixels (of the run's training subset): the standardization of every input."""
    images, labels = _load_split(path, "train")
    pixels = images[fixed_subset(len(labels), train_limit)].float().div(255.0)
    return float(pixels.mean()), float(pixels.std())


@cache
def _model_inputs(
    path: Path, image_size: int, train_limit: int | None, eval_limit: int | None
) -> tuple[SplitTensors, SplitTensors]:
    """Train and test tensors, standardized with the training pixels' mean and std; shared by all runs alike."""
    train_images, train_labels = _load_split(path, "train")
    test_images, test_labels = _load_split(path, "test")
    keep = fixed_subset(len(train_labels), train_limit)
    train_images, train_labels = train_images[keep], train_labels[keep]
    keep = fixed_subset(len(test_labels), eval_limit)
    test_images, test_labels = test_images[keep], test_labels[keep]
    mean, std = _pixel_stats(path, train_limit)
    return (
        SplitTensors(to_model_input(train_images, image_size, mean, std), train_labels),
        SplitTensors(to_model_input(test_images, image_size, mean, std), test_labels),
    )


def load_run_data(run: RunConfig, prepared_root: Path) -> tuple[SplitTensors, SplitTensors]:
    """The run's training and evaluation tensors: the test split, or for a tuning trial (``holdout``) the
    held-out part of the training split, after the long-tailed subset and label noise, with the kept classes
    renumbered 0..C-1."""
    train, test = _model_inputs(prepared_root / run.data, run.image_size, run.train_limit, run.eval.max_items)
    if run.long_tail is not None:
        tail = run.long_tail
        kept = long_tailed_indices(train.labels, tail.imbalance_ratio, tail.profile, seed=tail.seed).indices
        train = SplitTensors(train.images[kept], train.labels[kept])
    if run.label_noise is not None:
        noise = run.label_noise
        noisy = noisy_labels(train.labels, noise.rate, noise.kind, seed=noise.seed).labels
        train = SplitTensors(train.images, noisy, clean_labels=train.labels)
    if run.holdout is not None:
        by = "classes" if _class_disjoint(prepared_root / run.data) else "samples"
        try:
            kept, held = holdout_indices(train.labels, run.holdout.share, by, seed=run.holdout.seed)
        except ValueError as err:
            raise ConfigError(f"{run.paper}.tune.holdout (dataset {run.dataset}): {err}") from err
        labels = train.labels[kept]
        renumbered = torch.searchsorted(torch.unique(labels), labels)
        train, test = (
            SplitTensors(train.images[kept], renumbered),
            SplitTensors(train.images[held], train.labels[held]),
        )
    return train, test


@cache
def _class_disjoint(path: Path) -> bool:
    """True if the test split's classes are unseen in training (then tuning holds out whole classes)."""
    names = [getattr(load_split(path, split).features["label"], "names", None) for split in ("train", "test")]
    if not all(names):  # each split numbers its own classes 0..C-1: only the names tell them apart
        raise ConfigError(f"{path}: the label column is not a ClassLabel with class names; prepare it again")
    return not set(names[0]) & set(names[1])


@cache
def _corrupted_tests(
    path: Path, image_size: int, train_limit: int | None, eval_limit: int | None, spec: CorruptionSpec
) -> CorruptedTests:
    """A fixed subset of the run's test images under each corruption and severity, standardized like its
    training images."""
    corruptions = importlib.import_module(CORRUPTIONS)
    images, labels = _load_split(path, "test")
    keep = fixed_subset(len(labels), eval_limit)
    images, labels = images[keep], labels[keep]
    keep = fixed_subset(len(labels), spec.max_items)
    images, labels = images[keep], labels[keep]
    mean, std = _pixel_stats(path, train_limit)
    corrupted = {
        f"{kind}_s{severity}": to_model_input(
            corruptions.corrupt(images, kind, severity, spec.seed), image_size, mean, std
        )
        for kind in spec.kinds
        for severity in spec.severities
    }
    return CorruptedTests(corrupted, labels)


def load_corrupted_tests(run: RunConfig, prepared_root: Path) -> CorruptedTests | None:
    """The run's corrupted test sets (``eval.corruptions``); none for a tuning trial, scored on training data."""
    spec = run.eval.corruptions
    if spec is None or run.holdout is not None:
        return None
    return _corrupted_tests(
        prepared_root / run.data, run.image_size, run.train_limit, run.eval.max_items, spec
    )


@cache
def load_one_shot_runs(path: Path, image_size: int, train_limit: int | None) -> OneShotRuns:
    """Omniglot's 20 one-shot runs (split ``one_shot_runs``), standardized like the run's training images."""
    images, targets = _load_split(path, "one_shot_runs")
    columns = load_split(path, "one_shot_runs").select_columns(["run", "role", "item"])[:]
    return OneShotRuns(
        images=to_model_input(images, image_size, *_pixel_stats(path, train_limit)),
        runs=torch.tensor(columns["run"]),
        is_test=torch.tensor([role == "test" for role in columns["role"]]),
        items=torch.tensor(columns["item"]),
        targets=targets,
    )


def _checkpoint_prefix(run: RunConfig, point: dict[str, Any] | None) -> str:
    """What a run's checkpoint folder starts with, unique among the runs of a stage: ``seed<k>-`` (a tuning
    trial: ``<point>-seed<k>-``); the rest names the config and code."""
    return f"{point_label(point)}-seed{run.seed}-" if point is not None else f"seed{run.seed}-"


def _checkpoint_dir(
    root: Path,
    run: RunConfig,
    code_hash: str,
    data: str,
    accelerator: Accelerator,
    point: dict[str, Any] | None = None,
) -> Path:
    """The checkpoints of exactly this run: its config, code, data (fingerprint) and what computes it (the
    device, the number of processes, the torch threads of each) name the folder, so a run resumes only what
    it would itself have computed, and its record's provenance is what trained it."""
    method = Path("_tuning", run.method) if run.holdout is not None else Path(run.method)
    machine = f"{accelerator.device.type}-w{accelerator.num_processes}-t{torch.get_num_threads()}"
    name = f"{_checkpoint_prefix(run, point)}{run.config_hash()}-{code_hash}-{data}-{machine}"
    return root / run.paper / run.dataset / method / name


def _is_done(
    path: Path,
    run: RunConfig,
    code_hash: str,
    data: str,
    extra: dict[str, Any],
    certificates: list[dict[str, Any]],
) -> bool:
    """Done: a record of the same config and data (fingerprint) made by the same code, or by code that the
    stage's certificates show makes the same records (any other code change reruns everything), with the
    same ``extra`` keys (a tuned run whose trials now choose differently, or by another metric, reruns)."""
    if not path.is_file():
        return False
    try:
        record = read_record(path)
        same_extra = all(record.get(key) == json.loads(json.dumps(value)) for key, value in extra.items())
        if "tuning" in record and "tuning" not in extra:  # the paper is no longer tuned
            return False
        return (
            record["config_hash"] == run.config_hash()
            and record["provenance"]["data_fingerprint"] == data
            and certificate_chain(record["provenance"]["code_hash"], code_hash, certificates) is not None
            and same_extra
        )
    except (ValueError, KeyError):
        return False


def trial_record_path(root: Path, run: RunConfig, point: dict[str, Any]) -> Path:
    return (
        root / run.paper / run.dataset / "_tuning" / run.method / f"{point_label(point)}-seed{run.seed}.json"
    )


def choose_points(
    tune: TuneSpec, trials: dict[Path, tuple[RunConfig, dict[str, Any]]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (dataset, method): every point's held-out metric (per seed, and the mean over seeds) and the
    chosen point, the best mean (the first in grid order on a tie). Reads the trials' records."""
    table: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for path, (run, point) in trials.items():
        metrics = read_record(path)["metrics"]
        if tune.metric not in metrics:
            raise ConfigError(
                f"{run.paper}.tune.metric: {tune.metric!r} is not a metric of the runs; they have "
                f"{', '.join(sorted(metrics))}"
            )
        entry = table.setdefault((run.dataset, run.method), {}).setdefault(
            point_label(point), {"point": point, "values": []}
        )
        entry["values"].append(metrics[tune.metric])
    choices = {}
    sign = -1.0 if tune.lower_is_better else 1.0
    for key, entries in table.items():
        rows = [{**entry, "mean": sum(entry["values"]) / len(entry["values"])} for entry in entries.values()]
        best = max(rows, key=lambda row: sign * row["mean"])  # max keeps the first of equal values
        choices[key] = {
            "metric": tune.metric,
            "lower_is_better": tune.lower_is_better,
            "holdout": tune.holdout.model_dump(),
            "trials": rows,
            "chosen": best["point"],
        }
    return choices


def run_paper(
    paper: str,
    dataset: str | None = None,
    params_path: Path = Path("params.yaml"),
    profile: str | None = None,
    records_root: Path = Path("records"),
    prepared_root: Path = PREPARED_ROOT,
    checkpoints_root: Path = CHECKPOINTS_ROOT,
    workers: int | None = None,
    threads: int | None = None,
) -> list[Path]:
    """Run the paper's (tuning trials and) runs not yet done, ``workers`` at a time on ``threads`` torch
    threads each (defaults: ``common.engine.parallel.choose``); returns the planned record paths.

    The whole stage computes on ``threads`` threads, its checks too: they standardize the images that the runs
    of one worker reuse, and a mean over many pixels depends on the threads that sum it."""
    accelerator = process_accelerator()
    one_at_a_time = accelerator.num_processes > 1 or accelerator.device.type != "cpu"
    workers, threads = parallel.choose(workers, threads, one_at_a_time)
    with parallel.torch_threads(threads):
        return _run_stage(
            paper,
            dataset,
            params_path,
            profile,
            records_root,
            prepared_root,
            checkpoints_root,
            workers,
            threads,
        )


def _run_stage(
    paper: str,
    dataset: str | None,
    params_path: Path,
    profile: str | None,
    records_root: Path,
    prepared_root: Path,
    checkpoints_root: Path,
    workers: int,
    threads: int,
) -> list[Path]:
    runs = resolve_runs(paper, params_path, profile)
    tune = tune_of(paper, params_path, profile)
    trials = resolve_trials(paper, params_path, profile)
    if dataset is not None:
        datasets = sorted({r.dataset for r in runs})
        if dataset not in datasets:
            raise ConfigError(f"{params_path}: {paper}.datasets has no {dataset!r}; it has {datasets}")
        runs = [r for r in runs if r.dataset == dataset]
        trials = [(r, point) for r, point in trials if r.dataset == dataset]
    for name in sorted({r.data for r in runs}):
        data_fingerprint(prepared_root / name)  # fails now, with how to prepare it, if missing
    for run in runs:  # a classifier is scored on the classes it was trained on
        if losses.reads_logits(run.loss.name) and _class_disjoint(prepared_root / run.data):
            raise ConfigError(
                f"{params_path}: {paper} (dataset {run.dataset}, method {run.method}): loss {run.loss.name!r} "
                f"trains a classifier, but the test classes of {run.data} are unseen in training; use a "
                "dataset whose test split has the training classes, or an embedding loss"
            )
    for run in [*runs, *(r for r, _ in trials)]:  # a batch the sampler cannot fill fails now
        try:
            labels = load_run_data(run, prepared_root)[0].labels  # the images are cached for the runs
            samplers.build(run.sampler.name, labels=labels, **run.sampler.kwargs)
        except (samplers.SamplerError, BuildError) as err:
            trial = " (tuning trial)" if run.holdout else ""
            raise ConfigError(
                f"{params_path}: {paper} (dataset {run.dataset}, method {run.method}){trial}: sampler: {err}"
            ) from err
    check_tracking_store()  # an unreachable or unwritable store fails now, not after training
    check_writable_dir(records_root / paper, "the run records")
    check_writable_dir(checkpoints_root / paper, "the checkpoints")

    accelerator = process_accelerator()
    main = accelerator.is_main_process
    planned = {record_path(records_root, paper, r.dataset, r.method, r.seed) for r in runs}
    planned |= {trial_record_path(records_root, r, point) for r, point in trials}
    if main:
        for pattern in ("*/seed*.json", "_tuning/*/*.json"):
            for stale in (records_root / paper).glob(f"{dataset or '*'}/{pattern}"):
                if stale not in planned:
                    stale.unlink()

    commit, dirty = git_commit(), git_dirty()
    code_hashes = {name: run_code_hash(paper, name, params_path) for name in {r.dataset for r in runs}}
    certificates = {name: read_certificates(records_root / paper / name) for name in code_hashes}
    fingerprints = {name: data_fingerprint(prepared_root / name) for name in {r.data for r in runs}}
    context = _RunContext(paper, commit, dirty, code_hashes, fingerprints, prepared_root, checkpoints_root)
    execute = partial(_execute, context)

    trial_paths = {trial_record_path(records_root, r, point): (r, point) for r, point in trials}
    todo = [
        (p, r, {"tuning_point": point})
        for p, (r, point) in trial_paths.items()
        if not _is_done(
            p,
            r,
            code_hashes[r.dataset],
            fingerprints[r.data],
            {"tuning_point": point},
            certificates[r.dataset],
        )
    ]
    if trials and main:
        print(f"{paper}{'/' + dataset if dataset else ''}: tuning: {len(trials)} trials, {len(todo)} to run")
    with parallel.Workers(workers, threads) as pool:
        labels = [run_name(r.method, r.dataset, r.seed, point_label(e["tuning_point"])) for _, r, e in todo]
        pool.run(execute, todo, labels, f"{paper} tuning trials", progress=main)
        accelerator.wait_for_everyone()
        choices = choose_points(tune, trial_paths) if trials else {}
        runs = [apply_point(r, choices[(r.dataset, r.method)]["chosen"]) if trials else r for r in runs]
        todo = []
        for r in runs:
            path = record_path(records_root, paper, r.dataset, r.method, r.seed)
            extra = {"tuning": choices[(r.dataset, r.method)]} if trials else {}
            if not _is_done(
                path, r, code_hashes[r.dataset], fingerprints[r.data], extra, certificates[r.dataset]
            ):
                todo.append((path, r, extra))
        if main:
            print(
                f"{paper}{'/' + dataset if dataset else ''}: {len(runs)} runs planned, {len(runs) - len(todo)} "
                f"already done, {len(todo)} to run; {workers} worker(s), {threads} thread(s) each"
            )
        labels = [run_name(r.method, r.dataset, r.seed) for _, r, _ in todo]
        pool.run(execute, todo, labels, f"{paper} runs", progress=main)
    accelerator.end_training()  # waits for every rank, then closes the process group before exit
    changed = sorted(n for n, h in code_hashes.items() if run_code_hash(paper, n, params_path) != h)
    if changed:  # DVC would lock the stage with the new code, which none of these runs ran
        raise CodeChangedError(
            f"{paper}: the code of {', '.join(run_stage(paper, n) for n in changed)} changed while the stage ran; "
            "its records hold the code they ran (their code_hash), so run the stage again to train with the "
            "code as it is now"
        )
    return sorted(planned)


class CodeChangedError(UserError, RuntimeError):
    """The stage's code changed on disk while its runs trained."""


@cache
def process_accelerator() -> Accelerator:
    """This process's accelerator: the stage's, or a worker's own (made once, kept for its runs)."""
    return Accelerator()


@dataclass(frozen=True)
class _RunContext:
    """What every run of the stage shares (it goes to the workers, so it pickles)."""

    paper: str
    commit: str | None
    dirty: bool | None
    code_hashes: dict[str, str]  # by dataset name
    fingerprints: dict[str, str]  # by prepared dataset
    prepared_root: Path
    checkpoints_root: Path


def _execute(context: _RunContext, task: tuple[Path, RunConfig, dict[str, Any]]) -> None:
    """One task of a ``parallel.Workers`` pool: a run, its record path and the record's extra keys."""
    path, run, extra = task
    _train_and_record(context, process_accelerator(), run, path, extra)


def _train_and_record(
    context: _RunContext, accelerator: Accelerator, run: RunConfig, path: Path, extra: dict[str, Any]
) -> None:
    """Train and evaluate one run (resuming its checkpoint), log it to MLflow, write its record at ``path``."""
    paper = context.paper
    main = accelerator.is_main_process
    code_hash = context.code_hashes[run.dataset]
    point = extra.get("tuning_point")
    fingerprint = context.fingerprints[run.data]
    checkpoint_dir = _checkpoint_dir(
        context.checkpoints_root, run, code_hash, fingerprint, accelerator, point
    )
    attempts_file = checkpoint_dir / ATTEMPTS_FILE
    earlier = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
    if main:
        for run_id in earlier:
            mark_abandoned(run_id)
    train, test = load_run_data(run, context.prepared_root)
    one_shot = None
    if run.eval.one_shot_runs:
        one_shot = load_one_shot_runs(context.prepared_root / run.data, run.image_size, run.train_limit)
    tags = {
        "paper": paper,
        "method": run.method,
        "dataset": run.dataset,
        "seed": run.seed,
        "git_commit": context.commit,
        "git_dirty": context.dirty,
        "dvc_stage": run_stage(paper, run.dataset),
        "params_hash": run.config_hash(),
        "code_hash": code_hash,
        "data_fingerprint": fingerprint,
        "profile": run.profile,
        "device": str(accelerator.device),
        "world_size": accelerator.num_processes,
        "threads": torch.get_num_threads(),
        "hardware": hardware(),
        **{f"version.{k}": v for k, v in versions().items()},
    }
    if "tuning_point" in extra:
        tags["evaluated_on"] = "held-out training data (tuning trial)"
        tags["tuning_point"] = point_label(extra["tuning_point"])
    if earlier:
        tags["resumed_from"] = earlier[-1]
    started = time.perf_counter()
    name = run_name(run.method, run.dataset, run.seed, tags.get("tuning_point"))
    with RunTracker(paper, name, logged_params(run.model_dump(mode="json")), tags, enabled=main) as tracker:
        if main:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            attempts_file.write_text(json.dumps([*earlier, tracker.run_id]))
        result = fit_and_evaluate(
            run,
            train,
            test,
            checkpoint_dir,
            accelerator,
            on_epoch=lambda m, e: tracker.log_metrics(m, step=e),
            one_shot=one_shot,
            corrupted=load_corrupted_tests(run, context.prepared_root),
        )
        if main:
            tracker.log_metrics(result.metrics, step=run.epochs)
            record = {
                "paper": paper,
                "dataset": run.dataset,
                "method": run.method,
                "label": run.label,
                "seed": run.seed,
                "config": run.model_dump(mode="json"),
                "config_hash": run.config_hash(),
                "metrics": result.metrics,
                "history": result.history,
                "budget": result.budget,
                "similarity_histograms": result.similarity_histograms,
                **({"reliability": result.reliability} if result.reliability else {}),
                **extra,
                "provenance": {
                    **{k: v for k, v in tags.items() if not k.startswith("version.")},
                    "mlflow_run_id": tracker.run_id,
                    "mlflow_experiment": paper,
                    "earlier_attempts": earlier,
                    "resumed_from_epoch": result.resumed_from_epoch,
                    "versions": versions(),
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "duration_s": round(time.perf_counter() - started, 2),
                },
            }
            write_record(path, record)
            tracker.log_artifact(str(path), "record")
            # the trained weights (and optimizer state), which `repro evaluate` loads back
            final, _ = latest_checkpoint(checkpoint_dir)
            if final is not None:
                for file in sorted(final.iterdir()):
                    tracker.log_artifact(str(file), CHECKPOINT_ARTIFACT)
    if main:  # the record holds the result; keep only this config's final checkpoint
        prefix = _checkpoint_prefix(run, point)  # no other run of the stage, which may be training now
        for other in checkpoint_dir.parent.iterdir():
            if other.name.startswith(prefix) and other != checkpoint_dir:
                shutil.rmtree(other)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.runner",
        description="Train and evaluate every (dataset, method, seed) run of a paper; skip those already done.",
    )
    parser.add_argument("paper")
    parser.add_argument("--dataset", help="only this dataset of the paper")
    parser.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help="override params.yaml's profile")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument(
        "--workers",
        type=int,
        help=f"runs side by side, in worker processes (default: ${parallel.WORKERS_ENV}, else usable CPUs // "
        "threads; 1 under a multi-process launch or on a GPU)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help=f"torch threads of each run (default: ${parallel.THREADS_ENV}, else 1 on CPU); a run's numbers "
        "depend on it, not on --workers",
    )
    args = parser.parse_args(argv)
    return run_command(
        "run",
        lambda: run_paper(
            args.paper,
            dataset=args.dataset,
            params_path=Path(args.params),
            profile=args.profile,
            workers=args.workers,
            threads=args.threads,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
