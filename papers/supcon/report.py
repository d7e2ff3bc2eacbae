"""The SupCon report's own section: the spread of top-1 over a grid of learning rates and view strengths, or
why it was not run."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from common.report.stats import spread_ratio, spread_verdict

if TYPE_CHECKING:
    from common.report.build import ReportContext

METRIC = "probe_top1_accuracy"  # every method read the same way
# each loss at the 2 x 2 grid of (learning rate, view strength): the base method and its three variants
GRID_SUFFIXES = ("", "_lr_low", "_weak_views", "_lr_low_weak_views")
FAMILIES = {"supcon_out": "SupCon (outside)", "cross_entropy": "Cross-entropy"}


def _grid_means(context: ReportContext, dataset: str, family: str) -> list[tuple[str, float]]:
    """(label, mean top-1 over seeds) of each grid point of ``family`` that has runs."""
    points = []
    for suffix in GRID_SUFFIXES:
        members = context.groups.get((dataset, family + suffix), [])
        if members:
            points.append((members[0]["label"], statistics.fmean(r["metrics"][METRIC] for r in members)))
    return points


CLAIM = (
    "The paper's claim: SupCon is more stable than the cross-entropy across hyper-parameters (optimizers, "
    "augmentations)."
)


def sections(context: ReportContext) -> list[str]:
    header = ["", "## Stability across hyper-parameters", ""]
    rows, verdicts = [], []
    for dataset in context.datasets:
        spreads = {}
        for family, name in FAMILIES.items():
            points = _grid_means(context, dataset, family)
            if len(points) < 2:
                continue
            values = [v for _, v in points]
            spreads[family] = values
            shown = "; ".join(f"{label}: {100 * v:.1f}" for label, v in points)
            rows.append(
                f"| {dataset} | {name} | {shown} | {100 * (max(values) - min(values)):.1f} "
                f"| {100 * statistics.stdev(values):.2f} |"
            )
        if len(spreads) == len(FAMILIES):
            ratio = spread_ratio(spreads["supcon_out"], spreads["cross_entropy"])
            verdicts.append(
                f"- {dataset}: sd(SupCon) / sd(cross-entropy) = {ratio.format()}: **{spread_verdict(ratio)}**"
            )
    if not rows:
        return [
            *header,
            f"{CLAIM} Not tested in these runs. Its test, a 2 x 2 grid of learning rate and view strength per "
            "loss (this section reads methods named "
            f"{', '.join(f'`<loss>{s}`' for s in GRID_SUFFIXES[1:])} when params.yaml has them), needs six "
            "more runs a seed, more than this profile's time affords beside runs long enough for the "
            "cross-entropy to converge; and with four grid points per loss, the 95% interval of the spread "
            "ratio (F, 3 and 3 degrees of freedom) lies below 1 only if SupCon's spread is under a quarter of "
            "the cross-entropy's.",
        ]
    return [
        *header,
        f"{CLAIM} Each loss trains at a 2 x 2 grid of learning rate (0.05, 0.01) and view strength (1.0, 0.5); "
        "per grid point, top-1 (by the linear probe) is the mean over seeds. The spread is the standard "
        "deviation of the four grid points, and the ratio SupCon / cross-entropy has a 95% interval from the F "
        "distribution of the variance ratio (3 and 3 degrees of freedom, so wide): reproduced if the interval "
        "lies below 1, reversed if above, else inconclusive.",
        "",
        "| dataset | loss | top-1 per grid point (%) | worst to best (points) | sd (points) |",
        "|---|---|---|---|---|",
        *rows,
        *(["", *verdicts] if verdicts else []),
    ]
