"""``report-<paper>``: run records -> ``reports/<paper>.md`` (+ figures and a JSON summary).

Numbers are aggregated over seeds as mean ± half-width of the Student-t 95% interval. Each claim
"A > B" is judged on the per-seed paired difference against the claim's margin (``common.report.stats``: four
verdicts, the power at the margin and the seeds that would decide an inconclusive check); the paper's claims and
our own checks are counted apart, and a forest plot shows every check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig, expected_config, point_label, resolve_runs, tune_of
from common.errors import run_command
from common.paper import PaperMeta, check_claims, load_paper
from common.params import ConfigError, load_params
from common.records import read_paper_records, write_atomically
from common.report import plots
from common.report.stats import (
    CONVERGED,
    INCONCLUSIVE,
    MAX_SEEDS,
    RAW_METRICS,
    VERDICTS,
    Interval,
    convergence_verdict,
    format_interval,
    format_margin,
    judge_claim,
    mean_ci,
    paired_correlation,
)

METRIC_NAMES = {
    "precision_at_1": "P@1",
    "recall_at_1": "R@1",
    "recall_at_2": "R@2",
    "recall_at_4": "R@4",
    "recall_at_8": "R@8",
    "r_precision": "R-Prec",
    "map_at_r": "MAP@R",
    "nmi": "NMI",
    "tar_at_far_0.01": "TAR@FAR=1e-2",
    "tar_at_far_0.001": "TAR@FAR=1e-3",
    "one_shot_error": "one-shot runs: error",
    "dominant_share_clean": "clean in dominant",
    "dominant_share_noisy": "noisy in dominant",
    "top1_accuracy": "top-1",
    "train_top1_accuracy": "train top-1",
    "balanced_accuracy": "balanced acc.",
    "accuracy_many": "many-shot",
    "accuracy_medium": "medium-shot",
    "accuracy_few": "few-shot",
    "ece": "ECE",
    "nll": "NLL (nats)",
    "sharpness_rho": "rho-sharpness (loss)",
    "hessian_top_eigenvalue": "Hessian λ_max",
    "knn_accuracy": "k-NN",
    "corruption_accuracy": "corrupted top-1",
    "probe_top1_accuracy": "top-1 (probe)",
    "probe_corruption_accuracy": "corrupted top-1 (probe)",
}
DATASET_NOTES = {
    "omniglot": "class-disjoint: trained on 5 background alphabets (136 characters), retrieval among the "
    "2120 images of 106 unseen characters (3 other alphabets)",
    "fashion_mnist": "trained on the training set, retrieval among the 10,000 test images (the same 10 classes)",
}


FIGURES = {
    "recall_at_k": (plots.recall_at_k_curves, "Recall@K", "Recall@K, mean and 95% interval over seeds."),
    "similarities": (
        plots.similarity_histograms,
        "Similarity histograms",
        "Cosine similarities of positive and negative test pairs (a fixed subset of the test embeddings, "
        "densities averaged over seeds).",
    ),
    "few_shot": (
        plots.few_shot_curves,
        "Few-shot accuracy against shots",
        "N-way accuracy on episodes of the test classes against the support images per class, mean and 95% "
        "interval over seeds (every method is scored on the same episodes).",
    ),
    "reliability": (
        plots.reliability_diagrams,
        "Reliability diagrams",
        "Accuracy of each confidence bin (15 equal-width bins of the largest softmax probability) against "
        "confidence, test predictions pooled over seeds; bars below the diagonal are over-confident.",
    ),
    "training_loss": (
        plots.training_curves,
        "Training loss",
        "Training loss per epoch, relative to the first epoch, mean over seeds.",
    ),
}


@dataclass
class ReportContext:
    """What a paper's own report sections (``papers/<slug>/report.py``) get to work with."""

    meta: PaperMeta
    groups: dict[tuple[str, str], list[dict]]  # (dataset, method) -> records, by seed
    datasets: list[str]
    methods: list[str]
    figures: Path  # where its figures go; the markdown refers to them as figures/<slug>/<name>.png


def paper_sections(slug: str, context: ReportContext) -> list[str]:
    """Markdown lines from ``papers.<slug>.report.sections(context)``, if the paper has that module."""
    try:
        module = importlib.import_module(f"papers.{slug}.report")
    except ModuleNotFoundError as err:
        if err.name not in (f"papers.{slug}.report", f"papers.{slug}"):
            raise
        return []
    return list(module.sections(context))


def tuning_section(
    datasets: list[str], methods: list[str], groups: dict[tuple[str, str], list[dict]]
) -> list[str]:
    """The trials behind each method's hyper-parameters (records of a paper with ``tune``), else nothing."""
    tuned = [
        (d, m, groups[(d, m)][0]["tuning"])
        for d in datasets
        for m in methods
        if "tuning" in groups[(d, m)][0]
    ]
    if not tuned:
        return []
    first = tuned[0][2]
    holdout = first["holdout"]
    lines = [
        "",
        "## Hyper-parameters picked on held-out training data",
        "",
        f"Before the runs above, every method had the same number of trials, each training on the training split "
        f"minus a held-out {holdout['share']:.0%} (whole classes where the test classes are unseen, else a share "
        f"of each class's samples; split seed {holdout['seed']}) and scored on that part by "
        f"{_metric_name(first['metric'])} ({'lower' if first['lower_is_better'] else 'higher'} is better, mean "
        "over the tuning seeds, in %). The chosen point (bold) is what the runs above used; the test split "
        "played no part in the choice.",
        "",
        "| dataset | method | trials: point -> held-out score | chosen |",
        "|---|---|---|---|",
    ]
    for dataset, method, tuning in tuned:
        chosen = point_label(tuning["chosen"])
        cells = []
        for trial in tuning["trials"]:
            label = point_label(trial["point"])
            cell = f"{label} -> {100 * trial['mean']:.1f}"
            cells.append(f"**{cell}**" if label == chosen else cell)
        lines.append(
            f"| {dataset} | {groups[(dataset, method)][0]['label']} | {'; '.join(cells)} | `{chosen}` |"
        )
    return lines


def _shared_setup(runs: list[RunConfig], groups: dict[tuple[str, str], list[dict]]) -> tuple[str, str]:
    """What the summary says the methods share (", sampler, ... and budget (11,520 training images: 3 epochs x
    30 batches)") and what they also differ in ("; the methods also differ in ..."), from the configs and, for
    the budget, the training images each run's record says it saw. A part is shared when, on every dataset,
    every method has the same (a sampler set per dataset is still shared)."""
    parts = {
        "sampler": lambda r: r.sampler,
        "optimizer": lambda r: r.optimizer,
        "augmentation": lambda r: (r.augment, r.views),
        "budget": lambda r: (r.epochs, r.batches_per_epoch, groups[(r.dataset, r.method)][0]["budget"]),
    }
    by_dataset: dict[str, list[RunConfig]] = defaultdict(list)
    for run in runs:
        by_dataset[run.dataset].append(run)
    same = [
        name
        for name, part in parts.items()
        if all(len({str(part(r)) for r in members}) == 1 for members in by_dataset.values())
    ]
    differ = [name for name in parts if name not in same]
    if "budget" in same:
        budgets = {str(parts["budget"](r)) for r in runs}
        first = runs[0]
        images = groups[(first.dataset, first.method)][0]["budget"]["images"]
        same[-1] = (
            f"budget ({images:,} training images: {first.epochs} epochs x {first.batches_per_epoch} batches)"
            if len(budgets) == 1
            else "budget (set per dataset)"
        )
    shared = f", {_listed(same)}" if same else ""
    varied = f"; the methods also differ in {_listed(differ)} (see their labels)" if differ else ""
    return shared, varied


def _listed(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)


def _metric_name(key: str) -> str:
    if key.startswith("fewshot_"):  # fewshot_5way_1shot -> 5-way 1-shot
        ways, shots = key.removeprefix("fewshot_").split("_")[:2]
        return f"{ways.removesuffix('way')}-way {shots.removesuffix('shot')}-shot"
    return METRIC_NAMES.get(key, key)


def _group(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["dataset"], record["method"])].append(record)
    for members in groups.values():
        members.sort(key=lambda r: r["seed"])
    return groups


def _paired_values(better: list[dict], worse: list[dict], metric: str) -> tuple[list[float], list[float]]:
    """The two methods' values of ``metric`` on the seeds both have, in seed order."""
    worse_by_seed = {r["seed"]: r["metrics"][metric] for r in worse}
    pairs = [(r["metrics"][metric], worse_by_seed[r["seed"]]) for r in better if r["seed"] in worse_by_seed]
    return [b for b, _ in pairs], [w for _, w in pairs]


def evaluate_claims(meta: PaperMeta, groups: dict, datasets: list[str]) -> list[dict[str, Any]]:
    """One row per claim check (claim x dataset): the paired per-seed difference (better - worse, or worse -
    better for a metric where lower is better, so positive is the claimed direction) judged against the
    claim's margin."""
    rows = []
    for claim in meta.claims:
        for dataset in claim.datasets or datasets:
            better, worse = groups.get((dataset, claim.better), []), groups.get((dataset, claim.worse), [])
            base = {"claim": claim.id, "source": claim.source, "dataset": dataset}
            if not better or not worse:
                rows.append({**base, "verdict": INCONCLUSIVE, "why": "no runs"})
                continue
            b, w = _paired_values(better, worse, claim.metric)
            sign = -1.0 if claim.lower_is_better else 1.0
            test = judge_claim(
                [sign * (x - y) for x, y in zip(b, w, strict=True)],
                claim.margin,
                non_inferiority=claim.kind == "non_inferiority",
            )
            rows.append(
                {
                    **base,
                    "text": claim.text,
                    "metric": claim.metric,
                    "kind": claim.kind,
                    "lower_is_better": claim.lower_is_better,
                    "better": mean_ci([r["metrics"][claim.metric] for r in better]).__dict__,
                    "worse": mean_ci([r["metrics"][claim.metric] for r in worse]).__dict__,
                    "difference": test.difference.__dict__,
                    "difference_90": [test.low90, test.high90],
                    "margin": claim.margin,
                    "margin_reason": claim.margin_reason,
                    "power": test.power,
                    "seeds_needed": test.seeds_needed,
                    "correlation": paired_correlation(b, w),
                    "verdict": test.verdict,
                    "paper_evidence": claim.paper_evidence,
                }
            )
    return rows


def evaluate_budget_checks(meta: PaperMeta, groups: dict, datasets: list[str]) -> list[dict[str, Any]]:
    """One row per budget check and dataset: the baseline's metric at its budget and at the doubled one (images
    seen, from the records), the paired difference and the convergence verdict."""
    rows = []
    for check in meta.report.budget_checks:
        for dataset in check.datasets or datasets:
            base, doubled = (
                groups.get((dataset, check.baseline), []),
                groups.get((dataset, check.doubled), []),
            )
            if not base or not doubled:
                continue
            d, b = _paired_values(doubled, base, check.metric)
            verdict, diff, diff90 = convergence_verdict(
                [x - y for x, y in zip(d, b, strict=True)], check.margin
            )
            rows.append(
                {
                    "dataset": dataset,
                    "metric": check.metric,
                    "label": base[0]["label"],
                    "images": base[0]["budget"]["images"],
                    "doubled_images": doubled[0]["budget"]["images"],
                    "baseline": mean_ci(b).__dict__,
                    "doubled": mean_ci(d).__dict__,
                    "difference": diff.__dict__,
                    "difference_90": diff90.__dict__,
                    "margin": check.margin,
                    "margin_reason": check.margin_reason,
                    "verdict": verdict,
                }
            )
    return rows


def budget_section(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: is each checked baseline trained long enough for its claims?"""
    if not rows:
        return []
    lines = [
        "",
        "## Is the baseline trained long enough?",
        "",
        "The baseline trained again with twice the budget, on the same seeds: converged where the 90% interval "
        "of the paired difference (doubled - budget) lies inside ± the margin, still changing where the 95% "
        "interval lies wholly outside it, else undecided. The training-loss curves are under Figures.",
        "",
        "| dataset | method | images seen | metric | at the budget | at twice the budget | difference, 95% | "
        "difference, 90% | margin | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["doubled_images"] / r["images"]
        seen = f"{r['images']:,} vs {r['doubled_images']:,}" + ("" if ratio == 2 else f" (x{ratio:.2f})")
        verdict = f"**{r['verdict']}**" if r["verdict"] == CONVERGED else r["verdict"]
        metric = r["metric"]
        lines.append(
            f"| {r['dataset']} | {r['label']} | {seen} | {_metric_name(metric)} | "
            f"{format_interval(metric, r['baseline'])} | {format_interval(metric, r['doubled'])} | "
            f"{format_interval(metric, r['difference'])} | "
            f"{format_interval(metric, r['difference_90'])} | "
            f"± {format_margin(metric, r['margin'])} | {verdict} |"
        )
    return lines


def verdict_counts(claims: list[dict[str, Any]], source: str) -> dict[str, int]:
    """How many of the checks of ``source`` ("paper" or "ours") got each verdict."""
    return {v: sum(c["verdict"] == v and c["source"] == source for c in claims) for v in VERDICTS}


def _counts_text(claims: list[dict[str, Any]]) -> str:
    """ "Of the paper's 4 claim checks, 1 reproduced, ...; of our 2 own checks, ..." """
    parts = []
    for source, what in (("paper", "the paper's {} claim checks"), ("ours", "our {} own checks")):
        counts = verdict_counts(claims, source)
        total = sum(counts.values())
        if total:
            listed = _listed([f"{n} {v}" for v, n in counts.items() if n])
            parts.append(f"of {what.format(total)}, {listed}")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def _verdict_cell(c: dict[str, Any]) -> str:
    if c["verdict"] != INCONCLUSIVE:
        return f"**{c['verdict']}**"
    needed = c.get("seeds_needed")
    if c["difference"]["n"] < 2:
        return f"**{INCONCLUSIVE}** (one seed decides nothing)"
    if needed is None:
        return f"**{INCONCLUSIVE}** (more than {MAX_SEEDS} seeds for 80% power)"
    return f"**{INCONCLUSIVE}** ({needed} seeds for 80% power)"


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def claims_section(claims: list[dict[str, Any]], figure: str) -> list[str]:
    """The claims table (both kinds of check), the margins and their reasons, and the forest plot."""
    correlations = sorted(
        c["correlation"] for c in claims if "correlation" in c and c["correlation"] == c["correlation"]
    )
    median_r = correlations[len(correlations) // 2] if correlations else float("nan")
    lines = [
        "",
        "## Claims",
        "",
        "Each check is judged on the paired per-seed difference (better - worse; worse - better where lower is "
        "better, so positive is always the claimed direction) against the claim's margin, its smallest effect of "
        "interest declared before the runs: **reproduced** if the 95% interval lies above 0, **reversed** if it "
        "lies below 0, **no effect** if the 90% interval lies inside ± the margin, else **inconclusive**, with the "
        'seeds that would give 80% power at the margin. A non-inferiority check ("comparable or better") is '
        "reproduced if the 95% interval lies above -margin, reversed if below it. n: seeds paired; r: the "
        "correlation of the two methods' per-seed values (what the pairing removes; median "
        f"{_number(median_r)}); power: the chance these n seeds decide an effect the size of the margin, with "
        "the observed spread of the differences. Differences and margins in points (raw metrics as they are).",
        "",
        "| check | of | dataset | metric | better | worse | difference | margin | n | r | power | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        of = "paper" if c["source"] == "paper" else "ours"
        if "difference" not in c:
            lines.append(
                f"| {c['claim']} | {of} | {c['dataset']} | | | | | | | | | {c['verdict']} ({c['why']}) |"
            )
            continue
        kind = " (non-inferiority)" if c["kind"] == "non_inferiority" else ""
        lines.append(
            f"| {c['text']}{kind} | {of} | {c['dataset']} | {_metric_name(c['metric'])} "
            f"| {format_interval(c['metric'], c['better'])} | {format_interval(c['metric'], c['worse'])} "
            f"| {format_interval(c['metric'], c['difference'])} | {format_margin(c['metric'], c['margin'])} "
            f"| {c['difference']['n']} "
            f"| {_number(c['correlation'])} | {_number(c['power'])} | {_verdict_cell(c)} |"
        )
    lines += ["", "Margins and what the paper reports:", ""]
    seen = set()
    for c in claims:
        if "margin" not in c or c["claim"] in seen:
            continue
        seen.add(c["claim"])
        evidence = f" The paper: {c['paper_evidence']}." if c["paper_evidence"] else ""
        lines.append(
            f"- `{c['claim']}`: margin {format_margin(c['metric'], c['margin'])} ({c['margin_reason']}).{evidence}"
        )
    lines += [
        "",
        f"![Forest plot of the claim checks]({figure})",
        "",
        "Each check's paired difference in units of its margin (the grey band is ± the margin), with its 95% "
        "(thin) and 90% (thick) intervals, coloured by verdict; filled markers are the paper's claims, open ones "
        "our own checks.",
    ]
    return lines


def forest_rows(claims: list[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """The checks with a difference, as the forest plot draws them: everything in units of the margin."""
    rows = []
    for c in claims:
        if "difference" not in c or c["difference"]["n"] < 1:
            continue
        d, m = c["difference"], c["margin"]
        half = d["half_width"] if d["half_width"] == d["half_width"] else 0.0
        low90, high90 = (x if x == x else d["mean"] for x in c["difference_90"])
        rows.append(
            {
                "label": f"{prefix}{c['claim']} ({c['dataset']})",
                "mean": d["mean"] / m,
                "low95": (d["mean"] - half) / m,
                "high95": (d["mean"] + half) / m,
                "low90": low90 / m,
                "high90": high90 / m,
                "verdict": c["verdict"],
                "ours": c["source"] == "ours",
            }
        )
    return rows


def build_report(
    slug: str,
    records_root: Path = Path("records"),
    reports_root: Path = Path("reports"),
    params_path: Path = Path("params.yaml"),
) -> Path:
    meta = load_paper(slug)
    runs = resolve_runs(slug, params_path, check=False)  # the run stage built and checked them
    datasets = list(dict.fromkeys(r.dataset for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    check_claims(meta, set(methods), set(datasets))
    records = read_paper_records(records_root, slug)
    tune = tune_of(slug, params_path)
    by_key = {(r["dataset"], r["method"], r["seed"]): r for r in records}
    planned = set()
    for run in runs:
        record = by_key.get((run.dataset, run.method, run.seed))
        expected = expected_config(run, record, tune) if record is not None else run
        planned.add(
            (run.dataset, run.method, run.seed, expected.config_hash() if expected else "stale tuning")
        )
    found = {(r["dataset"], r["method"], r["seed"], r["config_hash"]) for r in records}
    if planned != found:
        missing = sorted(planned - found)[:5]
        raise ConfigError(
            f"records/{slug} does not match params.yaml (missing or stale runs, e.g. {missing}); "
            f"run `dvc repro report-{slug}` (it runs the run stages first)"
        )
    groups = _group(records)
    claims = evaluate_claims(meta, groups, datasets)
    profile = runs[0].profile
    figures = reports_root / "figures" / slug
    figure_lines = []
    for name in meta.report.figures:
        draw, title, caption = FIGURES[name]
        draw(groups, datasets, figures / f"{name}.png")
        figure_lines += [f"![{title}](figures/{slug}/{name}.png)", "", caption, ""]
    extra = paper_sections(slug, ReportContext(meta, groups, datasets, methods, figures))

    commits = sorted({r["provenance"]["git_commit"] for r in records})
    dirty = any(str(r["provenance"]["git_dirty"]) == "True" for r in records)
    hardware = sorted({r["provenance"]["hardware"] for r in records})
    world_sizes = sorted({int(r["provenance"]["world_size"]) for r in records})
    plots.forest_plot(forest_rows(claims), figures / "forest.png")
    seeds = sorted({r["seed"] for r in records})
    first = runs[0]
    doubled = {check.doubled for check in meta.report.budget_checks}  # a longer budget by design
    shared, varied = _shared_setup([r for r in runs if r.method not in doubled], groups)
    tuned = (
        "; each method's hyper-parameters picked on held-out training data (see below)"
        if any("tuning" in r for r in records)
        else ""
    )

    raw = [_metric_name(m) for m in meta.report.table if m in RAW_METRICS]
    compared, checks = [m for m in methods if m not in doubled], [m for m in methods if m in doubled]

    def label(method: str) -> str:
        return groups[(datasets[0], method)][0]["label"]

    units = "in %" + (f" ({', '.join(raw)} as they are)" if raw else "")
    lines = [
        f"# {meta.title}",
        "",
        f"{meta.authors}, {meta.venue}. [{meta.arxiv}]({meta.arxiv})"
        + (f" · official code: [{meta.code}]({meta.code})" if meta.code else ""),
        "",
        "## Summary",
        "",
        f"{meta.summary} We trained {len(compared)} methods ({', '.join(label(m) for m in compared)}) "
        f"with the same backbone ({first.model.name}, {', '.join(f'{k}={v}' for k, v in first.model.kwargs.items())})"
        f"{shared} on {', '.join(datasets)}, {len(seeds)} seeds each, profile `{profile}`{tuned}{varied}"
        + (
            f"; and, as a budget check, {', '.join(label(m) for m in checks)}, on the same seeds"
            if checks
            else ""
        )
        + ". "
        f"{_counts_text(claims)} {meta.scale_note}",
        "",
        "## Results",
        "",
        f"Mean ± 95% confidence interval (Student t) over seeds {seeds}, {units}. " + meta.report.table_note,
    ]
    for dataset in datasets:
        note = meta.report.dataset_notes.get(dataset, DATASET_NOTES.get(dataset, ""))
        lines += ["", f"### {dataset}", "", note, ""]
        table = meta.report.table
        lines.append("| method | " + " | ".join(_metric_name(m) for m in table) + " | MLflow runs |")
        lines.append("|---|" + "---|" * (len(table) + 1))
        for method in methods:
            members = groups[(dataset, method)]
            cells = [
                format_interval(m, mean_ci([r["metrics"][m] for r in members]))
                if m in members[0]["metrics"]
                else "n/a"
                for m in table
            ]
            run_ids = ", ".join(f"`{r['provenance']['mlflow_run_id'][:8]}`" for r in members)
            lines.append(f"| {members[0]['label']} | " + " | ".join(cells) + f" | {run_ids} |")

    budget_checks = evaluate_budget_checks(meta, groups, datasets)
    lines += tuning_section(datasets, methods, groups)
    lines += claims_section(claims, f"figures/{slug}/forest.png")
    lines += budget_section(budget_checks)

    if meta.headline:
        lines += ["", "## The paper's headline numbers beside ours", ""]
        lines.append(
            "| paper: dataset | paper: metric | paper | previous best | paper's setup | ours (dataset, method) | ours |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for h in meta.headline:
            members = groups[(h.ours_dataset, h.ours_method)]
            ours = format_interval(h.ours_metric, mean_ci([r["metrics"][h.ours_metric] for r in members]))
            lines.append(
                f"| {h.dataset} | {h.metric} | {h.value:.1f} | {h.previous_best if h.previous_best is not None else ''} "
                f"| {h.setup} | {h.ours_dataset}, {members[0]['label']} ({_metric_name(h.ours_metric)}) | {ours} |"
            )
        lines += ["", f"Not comparable as numbers: {meta.scale_note}"]

    lines += [
        *extra,
        "",
        "## Figures",
        "",
        *figure_lines,
        "## Provenance",
        "",
        f"- regenerate: `dvc repro report-{slug}` (runs the paper's `run-{slug}-<dataset>` stages first if their code, params or data changed)",
        f"- profile `{profile}`; hardware: {'; '.join(hardware)}; world size {', '.join(map(str, world_sizes))}",
        f"- git commit(s) of the runs: {', '.join(f'`{c[:10]}`' for c in commits)}"
        + (" (**uncommitted changes in the code at run time**)" if dirty else " (clean)"),
        f"- run records: `records/{slug}/<dataset>/<method>/seed<k>.json` (metrics, history, provenance); "
        f"MLflow experiment `{slug}`; audit a number with `repro audit reports/{slug}.md`",
        "",
    ]
    reports_root.mkdir(parents=True, exist_ok=True)
    report_path = reports_root / f"{slug}.md"
    write_atomically(report_path, "\n".join(lines), "the report")
    summary = {
        "slug": slug,
        "title": meta.title,
        "profile": profile,
        "seeds": seeds,
        "claims": claims,
        "budget_checks": budget_checks,
        "commits": commits,
        "dirty": dirty,
        "results": leaderboard_rows(
            groups, datasets, methods, [m for m in meta.report.leaderboard or methods if m not in doubled]
        ),
    }
    write_atomically(
        reports_root / f"{slug}.json",
        json.dumps(summary, indent=1, sort_keys=True) + "\n",
        "the report summary",
    )
    return report_path


INDEX_FOREST = "figures/forest.png"  # the index's forest plot, under reports/
# The two leaderboards: their metric columns (the first ranks), and which rows they take.
BOARDS = {
    "retrieval": ("map_at_r", "recall_at_1"),
    "classification": ("top1_accuracy", "balanced_accuracy"),
}


def _component_text(component: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in component.items() if k != "name")
    return f"{component['name']}({kwargs})"


def _readout(config: dict[str, Any]) -> str:
    """How a run's top-1 is read: by the classifier it trained, or by a linear probe on its embedding."""
    from common import losses

    if losses.reads_logits(config["loss"]["name"]):
        return "own classifier"
    return "linear probe" if config["eval"].get("probe") else "none"


def leaderboard_rows(
    groups: dict, datasets: list[str], methods: list[str], shown: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each (dataset, method) of a paper with what makes two rows comparable (test protocol, test items,
    training images seen, tuning) and the leaderboard metrics over seeds; ``shown``: the methods the paper
    puts on the leaderboard (its ``report.leaderboard``; None: all)."""
    rows = []
    for dataset in datasets:
        for method in methods:
            members = groups[(dataset, method)]
            config = members[0]["config"]
            metrics = {m for board in BOARDS.values() for m in board}
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "label": members[0]["label"],
                    "backbone": _component_text(config["model"]),
                    "training": f"{config['epochs']} x {config['batches_per_epoch']} batches, "
                    + _component_text(config["sampler"]),
                    "images_seen": members[0]["budget"]["images"],
                    "test_items": config["eval"]["max_items"],
                    "readout": _readout(config),
                    "tuned": any("tuning" in r for r in members),
                    # what trains the method, so that two papers' identical runs make one row
                    "setup": json.dumps(
                        {
                            k: v
                            for k, v in config.items()
                            if k not in ("paper", "method", "label", "seed", "eval")
                        },
                        sort_keys=True,
                    ),
                    "shown": shown is None or method in shown,
                    "metrics": {
                        m: vars(mean_ci([r["metrics"][m] for r in members]))
                        for m in sorted(metrics)
                        if all(m in r["metrics"] for r in members)
                    },
                }
            )
    return rows


def _leaderboard(summaries: list[dict], profile: str) -> list[str]:
    """The retrieval and the classification leaderboards: one table per (dataset, test items, training images
    seen, tuned or not, and for classification the readout), so that a table's rows differ in the method
    alone; best first. Only the runs of ``profile`` (the reports' profile), and only the methods each paper
    puts on the leaderboard (a grid's variants stay in their paper's report)."""
    lines = []
    for board, metrics in BOARDS.items():
        tables: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
        for s in summaries:
            if s["profile"] != profile:
                continue
            for row in s.get("results", []):
                if not row["shown"] or not all(m in row["metrics"] for m in metrics):
                    continue
                readout = row["readout"] if board == "classification" else ""
                if board == "classification" and readout == "none":
                    continue
                key = (row["dataset"], row["test_items"] or 0, row["images_seen"], row["tuned"], readout)
                tables[key].append((s, row))
        if not tables:
            continue
        names = [_metric_name(m) for m in metrics]
        lines += [
            "",
            f"## Leaderboard: {board}",
            "",
            f"Methods of every paper, profile `{profile}`, one table per dataset, test items, training images "
            "seen and tuning (and, for classification, how top-1 is read), so that the rows of a table differ in "
            f"the method and its paper's setup (backbone, sampler) only; best {names[0]} first; mean ± 95% "
            'interval over seeds, in %. As in Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020): '
            "compare rows as numbers only within a table, and where backbone and sampler match. A paper's "
            "variants of one method (a grid over learning rates, temperatures, views) stay in its report; the "
            "variant it declares stands for the method here. Two papers' runs of one setup (everything that trains "
            "them equal, and so their numbers) make one row.",
        ]
        for key in sorted(tables, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
            dataset, items, images, tuned, readout = key
            test = f"{items:,} test items" if items else "the whole test split"
            what = [
                test,
                f"{images:,} training images seen",
                "tuned on held-out data" if tuned else "untuned",
            ]
            if readout:
                what.append(f"top-1 by {readout}")
            note = DATASET_NOTES.get(dataset, "")
            lines += ["", f"### {dataset}: {', '.join(what)}", "", *([note, ""] if note else [])]
            lines.append("| # | method | paper | backbone | training | " + " | ".join(names) + " |")
            lines.append("|---|---|---|---|---|" + "---|" * len(names))
            merged: dict[tuple[str, str], tuple[dict, list[str]]] = {}  # one row for two papers' same runs
            for s, row in tables[key]:
                same = (row["setup"], json.dumps(row["metrics"], sort_keys=True))
                merged.setdefault(same, (row, []))[1].append(f"[{s['slug']}]({s['slug']}.md)")
            ranked = sorted(merged.values(), key=lambda rp: -rp[0]["metrics"][metrics[0]]["mean"])
            for rank, (row, papers) in enumerate(ranked, 1):
                cells = [Interval(**row["metrics"][m]).format() for m in metrics]
                lines.append(
                    f"| {rank} | {row['label']} | {', '.join(papers)} | {row['backbone']} "
                    f"| {row['training']} | " + " | ".join(cells) + " |"
                )
    return lines


def build_index(reports_root: Path = Path("reports"), params_path: Path = Path("params.yaml")) -> Path:
    """``reports/README.md``: every paper with its verdicts (the paper's claims and our checks apart), a forest
    plot of every check, then the leaderboards across papers (the runs of params.yaml's profile only)."""
    short = {"reproduced": "repr.", "reversed": "rev.", "no effect": "none", "inconclusive": "inc."}
    counts_header = " / ".join(short[v] for v in VERDICTS)
    lines = [
        "# Reports",
        "",
        "Generated by `dvc repro`; one report per replicated paper. Each claim check (claim x dataset) is judged "
        "on the paired per-seed difference against the claim's margin: reproduced (95% interval above 0), "
        "reversed (below 0), no effect (90% interval inside ± the margin) or inconclusive. The paper's claims "
        f"and our own checks are counted apart, as {counts_header} "
        "(reproduced / reversed / no effect / inconclusive).",
        "",
        f"| paper | profile | seeds | paper's claims: {counts_header} | our checks: {counts_header} | checks |",
        "|---|---|---|---|---|---|",
    ]
    summaries = [json.loads(path.read_text()) for path in sorted(reports_root.glob("*.json"))]
    totals = {"paper": dict.fromkeys(VERDICTS, 0), "ours": dict.fromkeys(VERDICTS, 0)}
    rows = []
    for s in summaries:
        cells = []
        for source in ("paper", "ours"):
            counts = verdict_counts(s["claims"], source)
            for v, n in counts.items():
                totals[source][v] += n
            cells.append(" / ".join(str(counts[v]) for v in VERDICTS))
        details = "; ".join(f"{c['claim']} ({c['dataset']}): {c['verdict']}" for c in s["claims"])
        lines.append(
            f"| [{s['title']}]({s['slug']}.md) | {s['profile']} | {len(s['seeds'])} | {cells[0]} | {cells[1]} "
            f"| {details} |"
        )
        rows += forest_rows(s["claims"], prefix=f"{s['slug']}: ")
    lines.append(
        "| **all papers** | | | "
        + " | ".join(" / ".join(str(totals[source][v]) for v in VERDICTS) for source in ("paper", "ours"))
        + " | |"
    )
    plots.forest_plot(rows, reports_root / INDEX_FOREST)
    lines += [
        "",
        f"![Forest plot of every claim check]({INDEX_FOREST})",
        "",
        "Every check of every paper: the paired difference in units of its margin (grey band: ± the margin), "
        "95% (thin) and 90% (thick) intervals, coloured by verdict; filled markers are the papers' claims, open "
        "ones our own checks.",
    ]
    lines += _leaderboard(summaries, load_params(params_path)[0].profile)
    path = reports_root / "README.md"
    write_atomically(path, "\n".join(lines) + "\n", "the index")
    return path


def attach_to_runs(slug: str, report_path: Path, records_root: Path = Path("records")) -> str:
    """Log the report and its figures as artifacts of the paper's MLflow runs (those the store holds), laid out
    as in ``reports/`` (and as ``repro mirror`` lays them out): ``report/<slug>.md``, ``report/figures/<slug>/``."""
    from common.tracking.report_artifacts import log_report_artifacts, report_files

    run_ids = [r["provenance"]["mlflow_run_id"] for r in read_paper_records(records_root, slug)]
    return log_report_artifacts(run_ids, report_files(report_path.parent, slug))


def _report(slug: str, params_path: Path) -> None:
    path = build_report(slug, params_path=params_path)
    print(path)
    print(attach_to_runs(slug, path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.report.build",
        description="Write reports/PAPER.md (+ .json, figures) from the run records, or reports/README.md.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("paper", nargs="?", help="the paper whose report to write")
    target.add_argument("--index", action="store_true", help="write reports/README.md instead")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    if args.index:
        return run_command("index", lambda: print(build_index(params_path=Path(args.params))))
    return run_command("report", lambda: _report(args.paper, Path(args.params)))


if __name__ == "__main__":
    sys.exit(main())
