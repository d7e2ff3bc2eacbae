"""One paper's run stage: every (dataset, method, seed) run of the active profile.

    python -m common.runner PAPER [--dataset D] [--profile smoke|cpu|gpu]   (the stage's command)
    accelerate launch --multi_gpu --num_processes N -m common.runner PAPER ...

Before any compute, every run's config is resolved and validated and the prepared data is found.
Then, for each run: a record with the same config hash means the run is done and is skipped; else
the run trains (resuming from its checkpoint if an earlier attempt died), logs to MLflow and writes
its record. Records of runs no longer in the plan are removed, so the records match params.yaml.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from common import samplers
from common.config import RunConfig, resolve_runs
from common.data.loading import data_fingerprint, load_prepared, load_split
from common.data.transforms import noisy_labels
from common.engine.evaluation import OneShotRuns, SplitTensors
from common.engine.trainer import fit_and_evaluate, to_model_input
from common.errors import check_writable_dir, run_command
from common.paper import check_claims, load_paper
from common.params import ConfigError
from common.pipeline import run_code_hash, run_stage
from common.records import read_record, record_path, write_record
from common.registry import BuildError
from common.tracking import RunTracker, mark_abandoned
from common.tracking.mlflow_tracking import check_tracking_store
from common.tracking.provenance import git_commit, git_dirty, hardware, versions

PREPARED_ROOT = Path("data/prepared")
CHECKPOINTS_ROOT = Path("checkpoints")
ATTEMPTS_FILE = "mlflow_attempts.json"


def _subset(n: int, limit: int | None) -> torch.Tensor:
    """A fixed random subset (the same for every method and seed), or everything."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values


@cache
def _load_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_prepared(path, split)


@cache
def _pixel_stats(path: Path, train_limit: int | None) -> tuple[float, float]:
    """Mean and std of the training pixels (of the run's training subset): the standardization of every input."""
    images, labels = _load_split(path, "train")
    pixels = images[_subset(len(labels), train_limit)].float().div(255.0)
    return float(pixels.mean()), float(pixels.std())


@cache
def _model_inputs(
    path: Path, image_size: int, train_limit: int | None, eval_limit: int | None
) -> tuple[SplitTensors, SplitTensors]:
    """Train and test tensors, standardized with the training pixels' mean and std; shared by all runs alike."""
    train_images, train_labels = _load_split(path, "train")
    test_images, test_labels = _load_split(path, "test")
    keep = _subset(len(train_labels), train_limit)
    train_images, train_labels = train_images[keep], train_labels[keep]
    keep = _subset(len(test_labels), eval_limit)
    test_images, test_labels = test_images[keep], test_labels[keep]
    mean, std = _pixel_stats(path, train_limit)
    return (
        SplitTensors(to_model_input(train_images, image_size, mean, std), train_labels),
        SplitTensors(to_model_input(test_images, image_size, mean, std), test_labels),
    )


def load_run_data(run: RunConfig, prepared_root: Path) -> tuple[SplitTensors, SplitTensors]:
    train, test = _model_inputs(prepared_root / run.data, run.image_size, run.train_limit, run.eval.max_items)
    if run.label_noise is not None:
        noise = run.label_noise
        noisy = noisy_labels(train.labels, noise.rate, noise.kind, seed=noise.seed).labels
        train = SplitTensors(train.images, noisy, clean_labels=train.labels)
    return train, test


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


def _checkpoint_dir(root: Path, run: RunConfig, code_hash: str) -> Path:
    return root / run.paper / run.dataset / run.method / f"seed{run.seed}-{run.config_hash()}-{code_hash}"


def _is_done(path: Path, run: RunConfig, code_hash: str) -> bool:
    """Done: a record of the same config made by the same code (a code change reruns everything)."""
    if not path.is_file():
        return False
    try:
        record = read_record(path)
        return record["config_hash"] == run.config_hash() and record["provenance"]["code_hash"] == code_hash
    except (ValueError, KeyError):
        return False


def run_paper(
    paper: str,
    dataset: str | None = None,
    params_path: Path = Path("params.yaml"),
    profile: str | None = None,
    records_root: Path = Path("records"),
    prepared_root: Path = PREPARED_ROOT,
    checkpoints_root: Path = CHECKPOINTS_ROOT,
) -> list[Path]:
    runs = resolve_runs(paper, params_path, profile)
    check_claims(load_paper(paper), {r.method for r in runs}, {r.dataset for r in runs})
    if dataset is not None:
        datasets = sorted({r.dataset for r in runs})
        if dataset not in datasets:
            raise ConfigError(f"{params_path}: {paper}.datasets has no {dataset!r}; it has {datasets}")
        runs = [r for r in runs if r.dataset == dataset]
    for name in sorted({r.data for r in runs}):
        data_fingerprint(prepared_root / name)  # fails now, with how to prepare it, if missing
    for run in runs:  # a batch the sampler cannot fill fails now, not after the first runs trained
        labels = _load_split(prepared_root / run.data, "train")[1]
        try:
            samplers.build(
                run.sampler.name, labels=labels[_subset(len(labels), run.train_limit)], **run.sampler.kwargs
            )
        except (samplers.SamplerError, BuildError) as err:
            raise ConfigError(
                f"{params_path}: {paper} (dataset {run.dataset}, method {run.method}): sampler: {err}"
            ) from err
    check_tracking_store()  # an unreachable or unwritable store fails now, not after training
    check_writable_dir(records_root / paper, "the run records")
    check_writable_dir(checkpoints_root / paper, "the checkpoints")

    accelerator = Accelerator()
    main = accelerator.is_main_process
    planned = {record_path(records_root, paper, r.dataset, r.method, r.seed) for r in runs}
    if main:
        for stale in (records_root / paper).glob(f"{dataset or '*'}/*/seed*.json"):
            if stale not in planned:
                stale.unlink()

    commit, dirty = git_commit(), git_dirty()
    code_hashes = {name: run_code_hash(paper, name, params_path) for name in {r.dataset for r in runs}}
    todo = [
        r
        for r in runs
        if not _is_done(
            record_path(records_root, paper, r.dataset, r.method, r.seed), r, code_hashes[r.dataset]
        )
    ]
    if main:
        print(
            f"{paper}{'/' + dataset if dataset else ''}: {len(runs)} runs planned, {len(runs) - len(todo)} already done, {len(todo)} to run"
        )
    for run in tqdm(todo, desc=f"{paper} runs", disable=not main):
        path = record_path(records_root, paper, run.dataset, run.method, run.seed)
        code_hash = code_hashes[run.dataset]
        checkpoint_dir = _checkpoint_dir(checkpoints_root, run, code_hash)
        attempts_file = checkpoint_dir / ATTEMPTS_FILE
        earlier = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
        if main:
            for run_id in earlier:
                mark_abandoned(run_id)
        train, test = load_run_data(run, prepared_root)
        fingerprint = data_fingerprint(prepared_root / run.data)
        one_shot = None
        if run.eval.one_shot_runs:
            one_shot = load_one_shot_runs(prepared_root / run.data, run.image_size, run.train_limit)
        tags = {
            "paper": paper,
            "method": run.method,
            "dataset": run.dataset,
            "seed": run.seed,
            "git_commit": commit,
            "git_dirty": dirty,
            "dvc_stage": run_stage(paper, run.dataset),
            "params_hash": run.config_hash(),
            "code_hash": code_hash,
            "data_fingerprint": fingerprint,
            "profile": run.profile,
            "device": str(accelerator.device),
            "world_size": accelerator.num_processes,
            "hardware": hardware(),
            **{f"version.{k}": v for k, v in versions().items()},
        }
        if earlier:
            tags["resumed_from"] = earlier[-1]
        started = time.perf_counter()
        run_name = f"{run.method}/{run.dataset}/seed{run.seed}"
        with RunTracker(paper, run_name, run.model_dump(mode="json"), tags, enabled=main) as tracker:
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
                    "similarity_histograms": result.similarity_histograms,
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
        if main:  # the record holds the result; keep only this config's final checkpoint
            for other in checkpoint_dir.parent.glob(f"seed{run.seed}-*"):
                if other != checkpoint_dir:
                    shutil.rmtree(other)
    accelerator.end_training()  # waits for every rank, then closes the process group before exit
    return sorted(planned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.runner",
        description="Train and evaluate every (dataset, method, seed) run of a paper; skip those already done.",
    )
    parser.add_argument("paper")
    parser.add_argument("--dataset", help="only this dataset of the paper")
    parser.add_argument("--profile", choices=["smoke", "cpu", "gpu"], help="override params.yaml's profile")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    return run_command(
        "run",
        lambda: run_paper(
            args.paper, dataset=args.dataset, params_path=Path(args.params), profile=args.profile
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
