"""Report figures: Recall@K curves with intervals, similarity histograms, training curves, the forest plot of
the claim checks."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common.records import write_atomically  # noqa: E402
from common.report.stats import mean_ci  # noqa: E402

# Fixed metadata so the PNG bytes depend only on the data (stable DVC outputs).
_PNG_METADATA = {"Software": None}


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG whose bytes depend only on the data, whole or not at all, and close it."""
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata=_PNG_METADATA)
    plt.close(fig)
    write_atomically(path, png.getvalue(), "the figure")


def recall_at_k_curves(groups: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for (ds, _method), records in sorted(groups.items()):
            if ds != dataset:
                continue
            ks = sorted(
                int(k.removeprefix("recall_at_")) for k in records[0]["metrics"] if k.startswith("recall_at_")
            )
            intervals = [mean_ci([r["metrics"][f"recall_at_{k}"] for r in records]) for k in ks]
            means = [100 * i.mean for i in intervals]
            errors = [0 if i.n < 2 else 100 * i.half_width for i in intervals]
            ax.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=records[0]["label"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def similarity_histograms(groups: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> None:
    methods = sorted({m for _, m in groups})
    fig, axes = plt.subplots(
        len(datasets),
        len(methods),
        figsize=(3.2 * len(methods), 2.6 * len(datasets)),
        squeeze=False,
        sharex=True,
    )
    for row, dataset in enumerate(datasets):
        for col, method in enumerate(methods):
            ax = axes[row][col]
            records = groups.get((dataset, method), [])
            if not records:
                ax.set_axis_off()
                continue
            edges = records[0]["similarity_histograms"]["edges"]
            centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
            width = edges[1] - edges[0]
            for kind, color in (("negative", "tab:red"), ("positive", "tab:blue")):
                density = [
                    sum(v) / len(records)
                    for v in zip(*(r["similarity_histograms"][kind] for r in records), strict=True)
                ]
                ax.bar(centers, density, width=width, alpha=0.55, color=color, label=f"{kind} pairs")
            ax.set_title(f"{records[0]['label']} / {dataset}", fontsize=9)
            ax.set_xlabel("cosine similarity")
            if col == 0:
                ax.set_ylabel("density")
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    save_figure(fig, path)


def training_curves(groups: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for (ds, _), records in sorted(groups.items()):
            if ds != dataset:
                continue
            by_epoch: dict[int, list[float]] = defaultdict(list)
            for record in records:
                first = record["history"][0]["train_loss"] or 1.0
                for entry in record["history"]:
                    by_epoch[int(entry["epoch"])].append(entry["train_loss"] / first)
            epochs = sorted(by_epoch)
            ax.plot(
                epochs,
                [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
                marker=".",
                label=records[0]["label"],
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss / first-epoch loss")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def few_shot_curves(groups: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> None:
    """Few-shot accuracy against shots, a panel per dataset and ways, mean and 95% interval over seeds."""
    panels = []
    for dataset in datasets:
        keys = {k for (ds, _), records in groups.items() if ds == dataset for k in records[0]["metrics"]}
        ways = sorted({int(k.split("_")[1].removesuffix("way")) for k in keys if _is_few_shot(k)})
        panels += [(dataset, n_way) for n_way in ways]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, n_way) in zip(axes[0], panels, strict=True):
        for (ds, _method), records in sorted(groups.items()):
            if ds != dataset:
                continue
            prefix = f"fewshot_{n_way}way_"
            shots = sorted(
                int(k.removeprefix(prefix).removesuffix("shot"))
                for k in records[0]["metrics"]
                if k.startswith(prefix) and _is_few_shot(k)
            )
            intervals = [mean_ci([r["metrics"][f"{prefix}{k}shot"] for r in records]) for k in shots]
            means = [100 * i.mean for i in intervals]
            errors = [0 if i.n < 2 else 100 * i.half_width for i in intervals]
            ax.errorbar(shots, means, yerr=errors, marker="o", capsize=3, label=records[0]["label"])
        ax.set_xlabel("shots (support images per class)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{dataset}: {n_way}-way")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def _is_few_shot(key: str) -> bool:
    return key.startswith("fewshot_") and not key.endswith("_ci95")


def reliability_diagrams(groups: dict[tuple[str, str], list[dict]], datasets: list[str], path: Path) -> None:
    """Reliability diagrams (Guo et al. 2017): per method, the accuracy of each confidence bin against its mean
    confidence, pooled over seeds (bins weighted by their counts); the diagonal is perfect calibration."""
    methods = list(dict.fromkeys(m for _, m in groups))
    fig, axes = plt.subplots(
        len(datasets), len(methods), figsize=(3.0 * len(methods), 3.0 * len(datasets)), squeeze=False
    )
    for row, dataset in enumerate(datasets):
        for col, method in enumerate(methods):
            ax = axes[row][col]
            records = groups.get((dataset, method), [])
            if not records or "reliability" not in records[0]:
                ax.set_visible(False)
                continue
            edges = records[0]["reliability"]["edges"]
            width = edges[1] - edges[0]
            counts = [sum(r["reliability"]["count"][b] for r in records) for b in range(len(edges) - 1)]
            pooled = []
            for b, total in enumerate(counts):
                hits = sum(
                    (r["reliability"]["accuracy"][b] or 0.0) * r["reliability"]["count"][b] for r in records
                )
                pooled.append(hits / total if total else 0.0)
            ax.bar(edges[:-1], pooled, width=width, align="edge", edgecolor="black", linewidth=0.5)
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{records[0]['label']}\n{dataset}", fontsize=9)
    save_figure(fig, path)


VERDICT_COLOURS = {
    "reproduced": "#1b7837",
    "reversed": "#b2182b",
    "no effect": "#4d4d4d",
    "inconclusive": "#e08214",
}


def forest_plot(rows: list[dict], path: Path) -> None:
    """One row per claim check, top to bottom: its mean paired difference in units of its margin with the 95%
    (thin) and 90% (thick) intervals, the band of ± the margin, coloured by verdict; open markers for our own
    checks. ``rows`` as ``common.report.build.forest_rows`` makes them. The axis is linear within ± 2 margins
    and logarithmic beyond, so that a large effect does not squeeze the band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    height = 1.6 + 0.28 * max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(9.5, height))
    ax.axvspan(-1, 1, color="0.88", zorder=0)
    ax.axvline(0, color="0.3", linewidth=0.8, zorder=1)
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        colour = VERDICT_COLOURS[row["verdict"]]
        ax.plot([row["low95"], row["high95"]], [y, y], color=colour, linewidth=1.0, zorder=2)
        ax.plot([row["low90"], row["high90"]], [y, y], color=colour, linewidth=3.0, zorder=2)
        face = "white" if row["ours"] else colour
        ax.plot(row["mean"], y, marker="o", markersize=6, color=colour, markerfacecolor=face, zorder=3)
    ax.set_yticks(range(len(rows)), [row["label"] for row in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.set_xscale("symlog", linthresh=2, linscale=2)
    reach = max([2.0, *(abs(v) for row in rows for v in (row["low95"], row["high95"]))])
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= 1.2 * reach]
    ax.set_xticks(
        [-t for t in reversed(ticks)] + [0] + ticks,
        [f"{-t:g}" for t in reversed(ticks)] + ["0"] + [f"{t:g}" for t in ticks],
    )
    ax.set_xlabel("paired difference in units of the claim's margin (positive: the claimed direction)")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color="0.88", label="± margin")]
    handles += [Line2D([], [], color=c, marker="o", linewidth=2, label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [
        Line2D([], [], color="0.4", marker="o", linestyle="none", label="the paper's claim"),
        Line2D([], [], color="0.4", marker="o", markerfacecolor="white", linestyle="none", label="our check"),
    ]
    ax.legend(
        handles=handles, fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False
    )
    save_figure(fig, path)
