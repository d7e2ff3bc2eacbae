"""The SAM report's own section: the cost of SAM's second forward-backward pass, in time per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.report.stats import mean_ci

if TYPE_CHECKING:
    from common.report.build import ReportContext


def _seconds_per_epoch(record: dict) -> float:
    """The run's fastest epoch: other work on the machine only ever slows an epoch down."""
    return min(entry["epoch_seconds"] for entry in record["history"])


def sections(context: ReportContext) -> list[str]:
    lines = [
        "",
        "## Cost: time per epoch",
        "",
        "Training time per epoch (each run's fastest epoch, evaluation excluded), and SAM's over SGD's per "
        "seed, mean and 95% interval over seeds. SAM takes two forward-backward passes per batch, so about 2x "
        "is expected (two gradients per update, the paper's Algorithm 1). Timings come from the machine that "
        "ran the pipeline, with whatever else it was running: the fastest epoch is the least disturbed one, and "
        "a wide interval marks a dataset whose runs were slowed throughout.",
        "",
        "| dataset | SGD s/epoch | SAM s/epoch | SAM / SGD |",
        "|---|---|---|---|",
    ]
    for dataset in context.datasets:
        sgd = {r["seed"]: _seconds_per_epoch(r) for r in context.groups.get((dataset, "sgd"), [])}
        sam = {r["seed"]: _seconds_per_epoch(r) for r in context.groups.get((dataset, "sam"), [])}
        seeds = sorted(set(sgd) & set(sam))
        if not seeds:
            continue
        ratio = mean_ci([sam[s] / sgd[s] for s in seeds])
        lines.append(
            f"| {dataset} | {mean_ci([sgd[s] for s in seeds]).format(scale=1, digits=2)} "
            f"| {mean_ci([sam[s] for s in seeds]).format(scale=1, digits=2)} | {ratio.format(scale=1, digits=2)} |"
        )
    return lines
