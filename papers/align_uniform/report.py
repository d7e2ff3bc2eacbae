"""The alignment-and-uniformity report's own sections: do the two metrics rank the encoders as downstream
accuracy does (Spearman's rho across every trained encoder, one per run, with a bootstrap interval), the
(alignment, uniformity) plane coloured by accuracy, and the best direct-loss encoder against the best
contrastive one."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from scipy import stats

from common.report.stats import below_verdict

if TYPE_CHECKING:
    from common.report.build import ReportContext

ACCURACIES = {"top1_accuracy": "linear probe", "knn_accuracy": "k-NN"}
GEOMETRY = ("alignment", "uniformity")
METRICS = (*ACCURACIES, *GEOMETRY)
BOOTSTRAP_SAMPLES = 2000
FIGURE = "alignment_uniformity.png"
LOSS_NAMES = {"ntxent": "NT-Xent", "align_uniform": "alignment + uniformity"}
LOSS_MARKERS = {"ntxent": "o", "align_uniform": "s"}


def _measured(context: ReportContext, dataset: str) -> list[list[dict]]:
    """The records of each method that has every accuracy and geometry metric."""
    groups = [context.groups.get((dataset, method), []) for method in context.methods]
    return [records for records in groups if records and all(k in records[0]["metrics"] for k in METRICS)]


def encoder_runs(context: ReportContext, dataset: str) -> list[dict]:
    """One point per trained encoder (a method at one seed): its metrics."""
    return [{k: r["metrics"][k] for k in METRICS} for records in _measured(context, dataset) for r in records]


def encoder_means(context: ReportContext, dataset: str) -> list[dict]:
    """One point per method: its label, loss name and the mean over seeds of each metric it has."""
    points = []
    for records in _measured(context, dataset):
        means = {k: statistics.fmean(r["metrics"][k] for r in records) for k in METRICS}
        points.append(
            {
                "method": records[0]["method"],
                "label": records[0]["label"],
                "loss": records[0]["config"]["loss"]["name"],
                **means,
            }
        )
    return points


def spearman_interval(x: list[float], y: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho of ``x`` and ``y`` and its 95% percentile-bootstrap interval (points resampled with
    replacement; resamples with a constant side are skipped)."""
    rho = float(stats.spearmanr(x, y).statistic)
    generator = torch.Generator().manual_seed(seed)
    n, draws = len(x), []
    for _ in range(BOOTSTRAP_SAMPLES):
        idx = torch.randint(0, n, (n,), generator=generator).tolist()
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            draws.append(float(stats.spearmanr(xs, ys).statistic))
    if len(draws) < BOOTSTRAP_SAMPLES // 2:
        return rho, math.nan, math.nan
    low, high = torch.quantile(
        torch.tensor(draws, dtype=torch.float64), torch.tensor([0.025, 0.975], dtype=torch.float64)
    ).tolist()
    return rho, low, high


def scatter(points: list[dict], path: Path) -> None:
    """Encoders in the (alignment, uniformity) plane, coloured by probe top-1, one marker per loss; labels
    of the right half point left, so that none runs off the axes."""
    from common.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    accuracy = [100 * p["top1_accuracy"] for p in points]
    colour = {"vmin": min(accuracy), "vmax": max(accuracy), "cmap": "viridis"}
    for loss in dict.fromkeys(p["loss"] for p in points):
        members = [i for i, p in enumerate(points) if p["loss"] == loss]
        shown = ax.scatter(
            [points[i]["alignment"] for i in members],
            [points[i]["uniformity"] for i in members],
            c=[accuracy[i] for i in members],
            marker=LOSS_MARKERS.get(loss, "^"),
            s=60,
            edgecolors="black",
            linewidths=0.5,
            label=LOSS_NAMES.get(loss, loss),
            **colour,
        )
    middle = sum(ax.get_xlim()) / 2
    for p in points:
        left = p["alignment"] > middle
        ax.annotate(
            p["label"],
            (p["alignment"], p["uniformity"]),
            fontsize=6,
            xytext=(-4 if left else 4, 3),
            textcoords="offset points",
            ha="right" if left else "left",
        )
    fig.colorbar(shown, ax=ax, label="linear probe top-1 (%)")
    for handle in ax.legend(fontsize=7, loc="best").legend_handles:
        handle.set_facecolor("lightgray")
    ax.set_xlabel("alignment (lower is better)")
    ax.set_ylabel("uniformity (lower is better)")
    save_figure(fig, path)


def sections(context: ReportContext) -> list[str]:
    lines = [
        "",
        "## Do alignment and uniformity agree with downstream accuracy?",
        "",
        "Each trained encoder (a method at one seed) is one point, as each network is in the paper's figures. "
        "Spearman's rho between each metric and each accuracy across the encoders, with a 95% "
        f"percentile-bootstrap interval (encoders resampled {BOOTSTRAP_SAMPLES} times; the encoders of one "
        "seed share initial weights and data order, so the interval is somewhat too narrow). Both metrics are "
        "better when lower, so agreement is a negative rho: reproduced if the interval lies below 0, reversed "
        "if above, else inconclusive.",
        "",
        "| dataset | metric | accuracy | encoders | Spearman rho [95% interval] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    figures = []
    for dataset in context.datasets:
        points, encoders = encoder_means(context, dataset), encoder_runs(context, dataset)
        if len(points) < 3:
            continue
        for metric in GEOMETRY:
            for accuracy, name in ACCURACIES.items():
                rho, low, high = spearman_interval(
                    [e[metric] for e in encoders], [e[accuracy] for e in encoders]
                )
                lines.append(
                    f"| {dataset} | {metric} | {name} | {len(encoders)} | {rho:.2f} [{low:.2f}, {high:.2f}] "
                    f"| **{below_verdict(low, high, 0.0)}** |"
                )
        name = FIGURE if len(context.datasets) == 1 else f"alignment_uniformity_{dataset}.png"
        scatter(points, context.figures / name)
        figures.append(f"![Alignment and uniformity, {dataset}](figures/{context.meta.slug}/{name})")
        best = {}
        for loss in LOSS_NAMES:
            family = [p for p in points if p["loss"] == loss]
            if family:
                best[loss] = max(family, key=lambda p: p["top1_accuracy"])
        if len(best) == 2:
            lines += [
                "",
                f"Best encoder of each loss on {dataset} (linear probe top-1, mean over seeds; chosen on the test "
                "set, so both are optimistic alike): "
                f"{best['align_uniform']['label']} {100 * best['align_uniform']['top1_accuracy']:.1f}, "
                f"{best['ntxent']['label']} {100 * best['ntxent']['top1_accuracy']:.1f}.",
            ]
    if figures:
        lines += [
            "",
            "### The encoders in the (alignment, uniformity) plane",
            "",
            *figures,
            "",
            "One point per method, the mean over its seeds; colour: linear-probe top-1. The paper's figure has "
            "the best encoders in the lower left.",
        ]
    return lines
