"""Paper metadata and claims: validated, and claims must name methods the paper runs."""

import pytest

from common.config import resolve_runs
from common.paper import BudgetCheck, check_claims, load_paper
from common.params import ConfigError, all_papers
from common.report.build import budget_section, evaluate_budget_checks, evaluate_claims
from common.report.stats import CONVERGED, NO_EFFECT, REPRODUCED, REVERSED, STILL_CHANGING
from tests.conftest import REPO


def test_every_paper_loads_and_its_claims_name_its_methods():
    assert "multi_similarity" in all_papers()
    for slug in all_papers():
        meta = load_paper(slug)
        runs = resolve_runs(slug, REPO / "params.yaml")
        check_claims(meta, {r.method for r in runs}, {r.dataset for r in runs})
        assert meta.claims, f"{slug} lists no claim"


def test_a_claim_on_a_missing_method_is_an_error():
    meta = load_paper("multi_similarity")
    with pytest.raises(ConfigError, match="worse method 'contrastive' is not in params.yaml"):
        check_claims(meta, {"multi_similarity", "triplet", "ms_no_mining", "ms_paper_text"}, {"omniglot"})


def test_a_leaderboard_method_must_be_one_of_the_papers():
    meta = load_paper("supcon")
    meta.report.leaderboard = ["supcon_out", "supcon_outside"]
    runs = resolve_runs("supcon", REPO / "params.yaml")
    with pytest.raises(
        ConfigError, match="report.leaderboard: method 'supcon_outside' is not in params.yaml"
    ):
        check_claims(meta, {r.method for r in runs}, {r.dataset for r in runs})


def test_unknown_paper():
    with pytest.raises(ConfigError, match="no such paper"):
        load_paper("nope")


def _records(method, values):
    return [{"seed": s, "metrics": {"recall_at_1": v}} for s, v in enumerate(values)]


def test_claim_verdicts_use_the_paired_per_seed_difference():
    meta = load_paper("multi_similarity")
    meta.claims = [c for c in meta.claims if c.id == "ms_over_contrastive"]
    # Seeds move both methods together; MS is better by 0.01 on every seed: intervals of the means overlap,
    # the paired difference does not.
    groups = {
        ("omniglot", "multi_similarity"): _records("ms", [0.51, 0.61, 0.71]),
        ("omniglot", "contrastive"): _records("c", [0.50, 0.60, 0.70]),
        ("fashion_mnist", "multi_similarity"): _records("ms", [0.40, 0.50, 0.60]),
        ("fashion_mnist", "contrastive"): _records("c", [0.45, 0.56, 0.64]),
    }
    rows = {r["dataset"]: r for r in evaluate_claims(meta, groups, ["omniglot", "fashion_mnist"])}
    assert rows["omniglot"]["verdict"] == REPRODUCED
    assert rows["fashion_mnist"]["verdict"] == REVERSED
    assert rows["omniglot"]["correlation"] == pytest.approx(1.0)  # the seeds move both methods alike
    assert rows["omniglot"]["margin"] == meta.claims[0].margin and rows["omniglot"]["source"] == "paper"


def _error_records(values):
    return [{"seed": s, "metrics": {"one_shot_error": v}} for s, v in enumerate(values)]


@pytest.mark.parametrize(
    ("better", "worse", "expected"),
    [
        (
            [0.30, 0.40, 0.35, 0.32],
            [0.40, 0.50, 0.44, 0.43],
            REPRODUCED,
        ),  # lower error: the claimed direction
        ([0.40, 0.50, 0.44, 0.43], [0.30, 0.40, 0.35, 0.32], REVERSED),
        ([0.300, 0.401, 0.350, 0.3205], [0.301, 0.400, 0.3505, 0.320], NO_EFFECT),
    ],
)
def test_a_lower_is_better_claim_is_judged_in_its_own_direction(better, worse, expected):
    meta = load_paper("protonets")
    meta.claims = [c for c in meta.claims if c.id == "more_ways_one_shot_runs"]
    claim = meta.claims[0]
    assert claim.lower_is_better
    groups = {
        ("omniglot", claim.better): _error_records(better),
        ("omniglot", claim.worse): _error_records(worse),
    }
    (row,) = evaluate_claims(meta, groups, ["omniglot"])
    assert row["verdict"] == expected
    assert row["source"] == "ours"
    # the difference is worse - better: positive when the better method's error is lower
    assert row["difference"]["mean"] == pytest.approx(sum(worse) / 4 - sum(better) / 4)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.pop("margin"), r"claims\.0\.margin"),
        (lambda c: c.update(margin=0), r"claims\.0\.margin"),
        (lambda c: c.pop("margin_reason"), r"claims\.0\.margin_reason"),
        (lambda c: c.update(kind="equivalence"), r"claims\.0\.kind"),
    ],
)
def test_a_claim_without_a_valid_margin_is_refused_naming_the_key(edit, match, tmp_path):
    import yaml

    meta = yaml.safe_load((REPO / "papers" / "sam" / "paper.yaml").read_text())
    edit(meta["claims"][0])
    (tmp_path / "sam").mkdir()
    (tmp_path / "sam" / "paper.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match=match):
        load_paper("sam", root=tmp_path)


def _budget_records(values, images):
    return [
        {"seed": s, "label": "CE", "metrics": {"top1_accuracy": v}, "budget": {"images": images, "steps": 1}}
        for s, v in enumerate(values)
    ]


@pytest.mark.parametrize(
    ("doubled", "expected"),
    [
        ([0.801, 0.812, 0.798, 0.806, 0.803], CONVERGED),  # +0.1 to +0.3 points, margin 1 point
        ([0.83, 0.84, 0.825, 0.835, 0.832], STILL_CHANGING),  # +3 points
        ([0.77, 0.78, 0.772, 0.776, 0.774], STILL_CHANGING),  # longer training hurts by 3 points
    ],
)
def test_a_budget_check_reads_the_paired_difference_against_its_margin(doubled, expected):
    meta = load_paper("squentropy")
    meta.report.budget_checks = [
        BudgetCheck(
            baseline="cross_entropy",
            doubled="ce_doubled",
            metric="top1_accuracy",
            margin=0.01,
            margin_reason="r",
        )
    ]
    groups = {
        ("d", "cross_entropy"): _budget_records([0.80, 0.81, 0.795, 0.804, 0.80], 1000),
        ("d", "ce_doubled"): _budget_records(doubled, 2000),
    }
    (row,) = evaluate_budget_checks(meta, groups, ["d"])
    assert row["verdict"] == expected
    assert row["difference"]["mean"] == pytest.approx(
        sum(doubled) / 5 - (0.80 + 0.81 + 0.795 + 0.804 + 0.80) / 5
    )
    lines = budget_section([row])
    assert "| d | CE | 1,000 vs 2,000 | top-1 |" in "\n".join(lines) and expected in lines[-1]


def test_a_budget_check_on_a_missing_method_is_an_error():
    meta = load_paper("squentropy")
    meta.report.budget_checks = [
        BudgetCheck(
            baseline="cross_entropy", doubled="ce_2x", metric="top1_accuracy", margin=0.01, margin_reason="r"
        )
    ]
    with pytest.raises(
        ConfigError, match="report.budget_checks: doubled method 'ce_2x' is not in params.yaml"
    ):
        check_claims(meta, {"cross_entropy", "squentropy", "square"}, {"fashion_mnist"})
