"""The squentropy report's own section: the spread of accuracy over random initializations."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from common.report.stats import spread_ratio, spread_verdict

if TYPE_CHECKING:
    from common.report.build import ReportContext

METRIC = "top1_accuracy"


def sections(context: ReportContext) -> list[str]:
    lines = [
        "",
        "## Spread over random initializations",
        "",
        "The paper's claim: squentropy's accuracy varies less across random initializations than the other "
        "losses'. Standard deviation of top-1 over the seeds (each seed is a different initialization and batch "
        "order), and the ratio of squentropy's to each other loss's with its 95% interval (F distribution of "
        "the variance ratio): reproduced if the interval lies below 1, reversed if above, else "
        "inconclusive.",
        "",
        "| dataset | loss | sd of top-1 (points) | sd(squentropy) / sd(loss) | verdict |",
        "|---|---|---|---|---|",
    ]
    for dataset in context.datasets:
        ours = [r["metrics"][METRIC] for r in context.groups.get((dataset, "squentropy"), [])]
        doubled = {check.doubled for check in context.meta.report.budget_checks}  # the budget check's
        for method in (m for m in context.methods if m not in doubled):
            members = context.groups.get((dataset, method), [])
            values = [r["metrics"][METRIC] for r in members]
            if len(values) < 2:
                continue
            sd = f"{100 * statistics.stdev(values):.2f}"
            if method == "squentropy":
                lines.append(f"| {dataset} | {members[0]['label']} | {sd} | | |")
                continue
            ratio = spread_ratio(ours, values)
            lines.append(
                f"| {dataset} | {members[0]['label']} | {sd} | {ratio.format()} | **{spread_verdict(ratio)}** |"
            )
    return lines
