"""The report pieces of the classification papers: the spread ratio and its verdict, raw (non-%) metric
formatting, the reliability diagrams, and the SAM, PolyLoss and squentropy sections on synthetic records."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest

from common.paper import load_paper
from common.report.build import ReportContext
from common.report.plots import reliability_diagrams
from common.report.stats import (
    INCONCLUSIVE,
    NO_EFFECT,
    REPRODUCED,
    REVERSED,
    Interval,
    format_interval,
    spread_ratio,
    spread_verdict,
)


def test_spread_ratio_is_the_ratio_of_standard_deviations():
    a, b = [0.0, 2.0, 4.0], [0.0, 1.0, 2.0]
    ratio = spread_ratio(a, b)
    assert ratio.ratio == pytest.approx(statistics.stdev(a) / statistics.stdev(b))
    assert ratio.low < ratio.ratio < ratio.high
    assert math.isnan(spread_ratio([1.0], b).ratio) and spread_verdict(spread_ratio([1.0], b)) == INCONCLUSIVE


def test_the_spread_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    rng = random.Random(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        a = [rng.gauss(0, 0.5) for _ in range(8)]
        b = [rng.gauss(0, 1.0) for _ in range(8)]
        ratio = spread_ratio(a, b)
        covered += ratio.low <= 0.5 <= ratio.high
    assert 0.93 < covered / trials < 0.97


def test_spread_verdicts():
    tight, wide = [0.50, 0.51, 0.49, 0.50, 0.51, 0.49, 0.50, 0.50], [0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.1, 0.9]
    assert spread_verdict(spread_ratio(tight, wide)) == REPRODUCED
    assert spread_verdict(spread_ratio(wide, tight)) == REVERSED
    assert spread_verdict(spread_ratio(wide, list(reversed(wide)))) == INCONCLUSIVE


def test_raw_metrics_are_not_shown_in_percent():
    interval = Interval(0.4567, 0.0123, 3)
    assert format_interval("top1_accuracy", interval) == "45.7 ± 1.2"
    assert format_interval("nll", interval) == "0.457 ± 0.012"
    assert format_interval("hessian_top_eigenvalue", vars(interval)) == "0.457 ± 0.012"


def _record(method: str, seed: int, dataset: str = "d", **metrics: float) -> dict:
    return {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "label": method.upper(),
        "metrics": {"top1_accuracy": 0.8, **metrics},
        "history": [{"epoch": 1, "epoch_seconds": 1.0, "train_loss": 1.0}],
        "reliability": {
            "edges": [0.0, 0.5, 1.0],
            "confidence": [0.4, 0.9],
            "accuracy": [0.5, None],
            "count": [10, 0],
        },
    }


def _context(
    groups: dict, methods: list[str], datasets: list[str], slug: str, tmp_path: Path
) -> ReportContext:
    return ReportContext(load_paper(slug), groups, datasets, methods, tmp_path)


def test_reliability_diagrams_draw_a_png_even_with_empty_bins(tmp_path):
    groups = {("d", m): [_record(m, s) for s in range(2)] for m in ("a", "b")}
    path = tmp_path / "reliability.png"
    reliability_diagrams(groups, ["d"], path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_sam_cost_section_divides_sam_time_by_sgd_time_per_seed(tmp_path):
    from papers.sam.report import sections

    sgd = [_record("sgd", s) for s in range(3)]
    sam = [_record("sam", s) for s in range(3)]
    for record, seconds in zip(sam, (2.0, 2.2, 1.8), strict=True):
        record["history"][0]["epoch_seconds"] = seconds
    lines = sections(_context({("d", "sgd"): sgd, ("d", "sam"): sam}, ["sgd", "sam"], ["d"], "sam", tmp_path))
    row = next(line for line in lines if line.startswith("| d |"))
    assert row.split(" | ")[3].startswith("2.00 ± ")


def _tuned(
    method: str, seed: int, dataset: str, scores: dict[float, float], chosen: float, top1: float
) -> dict:
    record = _record(method, seed, dataset, top1_accuracy=top1)
    record["tuning"] = {
        "trials": [{"point": {"loss.epsilon": e}, "mean": v, "values": [v]} for e, v in scores.items()],
        "chosen": {"loss.epsilon": chosen},
    }
    return record


@pytest.mark.parametrize(
    ("second_scores", "second_chosen", "expected"),
    [
        ({-1.0: 0.70, 2.0: 0.80}, 2.0, REPRODUCED),  # different choices, each clearly better on its data
        (
            {-1.0: 0.80, 2.0: 0.70},
            -1.0,
            NO_EFFECT,
        ),  # the same choice: the best epsilon does not depend on the task
        ({-1.0: 0.799, 2.0: 0.80}, 2.0, INCONCLUSIVE),  # different, but by less than the seed noise
    ],
)
def test_polyloss_sweep_verdict(second_scores, second_chosen, expected, tmp_path):
    from papers.polyloss.report import sections

    first = [
        _tuned("poly1", s, "a", {-1.0: 0.80, 2.0: 0.70}, -1.0, t) for s, t in enumerate((0.80, 0.81, 0.79))
    ]
    second = [
        _tuned("poly1", s, "b", second_scores, second_chosen, t) for s, t in enumerate((0.80, 0.81, 0.79))
    ]
    groups = {("a", "poly1"): first, ("b", "poly1"): second}
    lines = sections(_context(groups, ["poly1"], ["a", "b"], "polyloss", tmp_path))
    assert f"Best epsilon depends on the task: **{expected}**" in lines[-1]


def test_squentropy_spread_section_compares_each_loss_with_squentropy(tmp_path):
    from papers.squentropy.report import sections

    tight = [0.80, 0.801, 0.799, 0.80, 0.801, 0.799, 0.80, 0.80]
    wide = [0.70, 0.90, 0.65, 0.95, 0.75, 0.85, 0.60, 1.0]
    groups = {
        ("d", "squentropy"): [_record("squentropy", s, top1_accuracy=v) for s, v in enumerate(tight)],
        ("d", "cross_entropy"): [_record("cross_entropy", s, top1_accuracy=v) for s, v in enumerate(wide)],
    }
    lines = sections(_context(groups, ["squentropy", "cross_entropy"], ["d"], "squentropy", tmp_path))
    row = next(line for line in lines if "CROSS_ENTROPY" in line)
    assert f"**{REPRODUCED}**" in row


def test_supcon_stability_section_takes_the_spread_of_the_grid_means(tmp_path):
    from papers.supcon.report import FAMILIES, GRID_SUFFIXES, sections

    # grid means: SupCon 0.80 0.81 0.79 0.80 (tight), cross-entropy 0.80 0.60 0.75 0.50 (wide); 2 seeds each
    # whose mean is the grid value, so the seed spread must not enter
    tight, wide = [0.80, 0.81, 0.79, 0.80], [0.80, 0.60, 0.75, 0.50]
    groups, methods = {}, []
    for family, means in (("supcon_out", tight), ("cross_entropy", wide)):
        for suffix, mean in zip(GRID_SUFFIXES, means, strict=True):
            method = family + suffix
            methods.append(method)
            groups[("d", method)] = [
                _record(method, 0, probe_top1_accuracy=mean - 0.05),
                _record(method, 1, probe_top1_accuracy=mean + 0.05),
            ]
    lines = sections(_context(groups, methods, ["d"], "supcon", tmp_path))
    ce_row = next(line for line in lines if line.startswith("| d | Cross-entropy |"))
    assert "30.0" in ce_row and f"{100 * statistics.stdev(wide):.2f}" in ce_row
    supcon_row = next(line for line in lines if line.startswith("| d | SupCon (outside) |"))
    assert f"{100 * statistics.stdev(tight):.2f}" in supcon_row and "| 2.0 |" in supcon_row
    verdict = lines[-1]
    assert verdict.startswith("- d: sd(SupCon) / sd(cross-entropy) = ")
    assert f"**{REPRODUCED}**" in verdict
    # one family missing: rows but no verdict
    only = {k: v for k, v in groups.items() if k[1].startswith("supcon")}
    assert not any(
        line.startswith("- d:") for line in sections(_context(only, methods[:4], ["d"], "supcon", tmp_path))
    )
    # no grid at all (the base methods only): the section says the claim was not tested, and why
    base = {k: v for k, v in groups.items() if k[1] in FAMILIES}
    untested = sections(_context(base, list(FAMILIES), ["d"], "supcon", tmp_path))
    assert not any(line.startswith("|") for line in untested)
    assert "Not tested in these runs" in untested[-1] and "`<loss>_lr_low`" in untested[-1]


def test_align_uniform_section_ranks_the_encoders_and_draws_the_plane(tmp_path):
    from papers.align_uniform.report import sections, spearman_interval

    # 8 methods x 2 seeds, 16 encoders: accuracy falls exactly as alignment rises (rho = -1); uniformity
    # rises with accuracy (+1)
    groups, methods = {}, []
    for i in range(8):
        method = f"{'ntxent' if i % 2 else 'au'}_{i}"
        methods.append(method)
        records = []
        for seed in range(2):
            record = _record(method, seed, top1_accuracy=0.9 - 0.05 * i, knn_accuracy=0.85 - 0.04 * i)
            record["metrics"] |= {"alignment": 0.1 + 0.1 * i, "uniformity": -1.0 - 0.2 * i}
            record["config"] = {"loss": {"name": "ntxent" if i % 2 else "align_uniform"}}
            records.append(record)
        groups[("d", method)] = records
    context = _context(groups, methods, ["d"], "align_uniform", tmp_path)
    lines = sections(context)
    alignment_rows = [line for line in lines if line.startswith("| d | alignment |")]
    assert len(alignment_rows) == 2 and all(
        "| 16 | -1.00" in row and f"**{REPRODUCED}**" in row for row in alignment_rows
    )  # one point per run, not per method
    uniformity_rows = [line for line in lines if line.startswith("| d | uniformity |")]
    assert all("1.00" in row and f"**{REVERSED}**" in row for row in uniformity_rows)
    assert (tmp_path / "alignment_uniformity.png").read_bytes()[:4] == b"\x89PNG"
    best = next(line for line in lines if line.startswith("Best encoder"))
    assert "AU_0 90.0" in best and "NTXENT_1 85.0" in best
    rho, low, high = spearman_interval([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0])
    assert rho == pytest.approx(0.8) and low <= rho <= high


def _budgets(runs, images=lambda run: 11_520):
    """Fake groups holding each run's record budget (what the trainer writes)."""
    return {(r.dataset, r.method): [{"budget": {"images": images(r), "steps": 90}}] for r in runs}


def _compared(paper: str) -> list:
    """The cpu runs of ``paper`` without its budget checks' doubled runs, as the report's summary reads them."""
    from common.config import resolve_runs

    doubled = {check.doubled for check in load_paper(paper).report.budget_checks}
    return [r for r in resolve_runs(paper, "params.yaml", "cpu") if r.method not in doubled]


def test_the_summary_names_what_the_methods_share_and_what_they_also_vary():
    from common.config import resolve_runs
    from common.report.build import _shared_setup

    polyloss = resolve_runs("polyloss", "params.yaml", "cpu")
    assert _shared_setup(polyloss, _budgets(polyloss)) == (
        ", sampler, optimizer and augmentation",
        "; the methods also differ in budget (see their labels)",
    )  # the budget check's cross_entropy_doubled trains twice the epochs
    polyloss = _compared("polyloss")
    assert _shared_setup(polyloss, _budgets(polyloss)) == (
        ", sampler, optimizer, augmentation and budget (11,520 training images: 20 epochs x 16 batches)",
        "",
    )
    sam = _compared("sam")
    assert _shared_setup(sam, _budgets(sam)) == (
        ", sampler, augmentation and budget (11,520 training images: 60 epochs x 8 batches)",
        "; the methods also differ in optimizer (see their labels)",
    )
    align_uniform = resolve_runs("align_uniform", "params.yaml", "cpu")
    assert _shared_setup(align_uniform, _budgets(align_uniform)) == (
        ", sampler, optimizer and augmentation",
        "; the methods also differ in budget (see their labels)",
    )  # the budget check's ntxent_t0_5_doubled trains twice the epochs


def test_a_sampler_set_per_dataset_is_shared_and_unequal_images_are_a_budget_difference():
    from common.config import resolve_runs
    from common.report.build import _shared_setup

    # MS: one sampler per dataset (16 or 10 classes a batch), the same for every method
    ms = [
        r for r in resolve_runs("multi_similarity", "params.yaml", "cpu") if r.method != "contrastive_doubled"
    ]
    shared, varied = _shared_setup(ms, _budgets(ms, lambda r: 16_000 if r.dataset == "omniglot" else 10_000))
    assert shared == ", sampler, optimizer, augmentation and budget (set per dataset)" and varied == ""
    # ProtoNets: equal episodes, but 60-way episodes hold 12 times the images of 5-way ones
    protonets = resolve_runs("protonets", "params.yaml", "cpu")
    shared, varied = _shared_setup(protonets, _budgets(protonets, lambda r: 100 * r.sampler.kwargs["n_way"]))
    assert varied == "; the methods also differ in sampler and budget (see their labels)"
