"""The ArcFace report's own section: where clean and noisy training samples sit among the sub-centers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.report.stats import below_verdict, interval_verdict, mean_ci

if TYPE_CHECKING:
    from common.report.build import ReportContext


def sections(context: ReportContext) -> list[str]:
    lines = [
        "",
        "## Sub-centers: clean samples in the dominant one",
        "",
        "Each training sample is assigned to the nearest sub-center of its (possibly noisy) training label; "
        "a class's dominant sub-center is the one that gets most of its samples. The paper's claim has two "
        "parts: the dominant sub-center holds the majority of clean samples, and the non-dominant ones hold the "
        "noisy samples. The first verdict reads the 95% interval of the per-seed difference (clean share - noisy "
        "share) against 0; the second, whether the 95% interval of the noisy samples' share in the dominant "
        "sub-center lies below one half (reversed if it lies above: most noisy samples sit in the dominant one).",
        "",
        "| dataset | method | clean in dominant | noisy in dominant | clean - noisy | verdict: clean > noisy "
        "| verdict: noisy mostly outside the dominant |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset in context.datasets:
        for method in context.methods:
            members = context.groups.get((dataset, method), [])
            if not members or "dominant_share_clean" not in members[0]["metrics"]:
                continue
            clean = mean_ci([r["metrics"]["dominant_share_clean"] for r in members])
            if "dominant_share_noisy" not in members[0]["metrics"]:
                lines.append(f"| {dataset} | {members[0]['label']} | {clean.format()} | (no noise) | | | |")
                continue
            noisy = mean_ci([r["metrics"]["dominant_share_noisy"] for r in members])
            diff = mean_ci(
                [r["metrics"]["dominant_share_clean"] - r["metrics"]["dominant_share_noisy"] for r in members]
            )
            lines.append(
                f"| {dataset} | {members[0]['label']} | {clean.format()} | {noisy.format()} | {diff.format()} "
                f"| **{interval_verdict(diff)}** | **{below_verdict(noisy.low, noisy.high, 0.5)}** |"
            )
    return lines
