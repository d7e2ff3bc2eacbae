"""reports/README.md: the verdict table and the leaderboard across papers."""

from __future__ import annotations

import json

import pytest

from common.report.build import build_index, leaderboard_rows


def _record(
    label: str, seed: int, r1: float, map_r: float, images: int = 32_000, loss: str = "contrastive"
) -> dict:
    config = {
        "model": {"name": "conv4", "embedding_dim": 64},
        "sampler": {"name": "m_per_class", "classes_per_batch": 16, "samples_per_class": 4},
        "epochs": 5,
        "batches_per_epoch": 50,
        "loss": {"name": loss},
        "eval": {"max_items": None},
    }
    metrics = {"recall_at_1": r1, "map_at_r": map_r}
    return {"label": label, "seed": seed, "config": config, "metrics": metrics, "budget": {"images": images}}


def _summary(slug: str, groups: dict, datasets: list[str], methods: list[str], **kwargs) -> dict:
    return {
        "slug": slug,
        "title": slug.title(),
        "profile": kwargs.pop("profile", "cpu"),
        "seeds": [0, 1],
        "claims": [],
        "results": leaderboard_rows(groups, datasets, methods, **kwargs),
    }


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: cpu\n")
    return path


def _tables(text: str, board: str) -> dict[str, list[list[str]]]:
    """The leaderboard's tables: heading -> rows of cells."""
    part = text.split(f"## Leaderboard: {board}")[1].split("\n## ")[0]
    tables, heading = {}, None
    for line in part.splitlines():
        if line.startswith("### "):
            heading = line.removeprefix("### ")
            tables[heading] = []
        elif line.startswith("| ") and line[2].isdigit():
            tables[heading].append([c.strip() for c in line.strip().strip("|").split("|")])
    return tables


def test_the_leaderboard_ranks_comparable_methods_by_map_at_r(tmp_path, params):
    first = {
        ("omniglot", "a"): [_record("Method A", 0, 0.5, 0.20), _record("Method A", 1, 0.7, 0.30)],
        ("omniglot", "b"): [_record("Method B", 0, 0.6, 0.40), _record("Method B", 1, 0.6, 0.40)],
    }
    second = {("omniglot", "c"): [_record("Method C", 0, 0.9, 0.35), _record("Method C", 1, 0.9, 0.35)]}
    for slug, groups, methods in (("first", first, ["a", "b"]), ("second", second, ["c"])):
        (tmp_path / f"{slug}.json").write_text(json.dumps(_summary(slug, groups, ["omniglot"], methods)))

    tables = _tables(build_index(tmp_path, params).read_text(), "retrieval")

    assert list(tables) == ["omniglot: the whole test split, 32,000 training images seen, untuned"]
    (rows,) = tables.values()
    assert [row[1] for row in rows] == ["Method B", "Method C", "Method A"]
    # mean of (0.5, 0.7) with the Student-t half-width for 2 seeds: 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert rows[2][-2:] == ["25.0 ± 63.5", "60.0 ± 127.1"]  # MAP@R, R@1
    assert rows[0][2] == "[first](first.md)" and rows[1][2] == "[second](second.md)"
    assert rows[0][3] == "conv4(embedding_dim=64)"
    assert rows[0][4] == "5 x 50 batches, m_per_class(classes_per_batch=16, samples_per_class=4)"


def test_rows_that_differ_in_more_than_the_method_are_never_in_one_table(tmp_path, params):
    groups = {
        ("omniglot", "a"): [_record("A", 0, 0.5, 0.2), _record("A", 1, 0.6, 0.3)],
        ("omniglot", "longer"): [_record("Longer", s, 0.5, 0.2, images=64_000) for s in (0, 1)],
        ("omniglot", "tuned"): [_record("Tuned", s, 0.5, 0.2) for s in (0, 1)],
        ("omniglot", "variant"): [_record("Grid variant", s, 0.9, 0.9) for s in (0, 1)],
    }
    groups[("omniglot", "tuned")][0]["tuning"] = {"chosen": "x"}
    methods = ["a", "longer", "tuned", "variant"]
    summary = _summary("p", groups, ["omniglot"], methods, shown=["a", "longer", "tuned"])
    (tmp_path / "p.json").write_text(json.dumps(summary))
    other = _summary("smoky", {("omniglot", "s"): [_record("Smoke", 0, 0.9, 0.9)]}, ["omniglot"], ["s"])
    other["profile"] = "smoke"
    (tmp_path / "smoky.json").write_text(json.dumps(other))

    text = build_index(tmp_path, params).read_text()
    tables = _tables(text, "retrieval")

    assert {heading: [row[1] for row in rows] for heading, rows in tables.items()} == {
        "omniglot: the whole test split, 32,000 training images seen, untuned": ["A"],
        "omniglot: the whole test split, 32,000 training images seen, tuned on held-out data": ["Tuned"],
        "omniglot: the whole test split, 64,000 training images seen, untuned": ["Longer"],
    }
    assert "Grid variant" not in text and "Smoke" not in text.split("## Leaderboard")[1]


def test_classifiers_get_their_own_leaderboard_by_readout(tmp_path, params):
    def classified(label, seed, top1, loss):
        record = _record(label, seed, 0.5, 0.2, loss=loss)
        record["metrics"] |= {"top1_accuracy": top1, "balanced_accuracy": top1}
        record["config"]["eval"]["probe"] = {"train_items": 100}
        return record

    groups = {
        ("fashion_mnist", "ce"): [classified("CE", s, 0.80, "cross_entropy") for s in (0, 1)],
        ("fashion_mnist", "focal"): [classified("Focal", s, 0.82, "focal") for s in (0, 1)],
        ("fashion_mnist", "supcon"): [classified("SupCon", s, 0.85, "supcon") for s in (0, 1)],
    }
    summary = _summary("c", groups, ["fashion_mnist"], ["ce", "focal", "supcon"])
    (tmp_path / "c.json").write_text(json.dumps(summary))

    tables = _tables(build_index(tmp_path, params).read_text(), "classification")

    base = "fashion_mnist: the whole test split, 32,000 training images seen, untuned, top-1 by "
    assert {heading: [row[1] for row in rows] for heading, rows in tables.items()} == {
        base + "own classifier": ["Focal", "CE"],
        base + "linear probe": ["SupCon"],
    }


def test_a_method_without_retrieval_metrics_is_left_off_the_leaderboard(tmp_path, params):
    groups = {("omniglot", "a"): [_record("Method A", 0, 0.5, 0.2)]}
    del groups[("omniglot", "a")][0]["metrics"]["map_at_r"]
    (tmp_path / "only.json").write_text(json.dumps(_summary("only", groups, ["omniglot"], ["a"])))
    assert "## Leaderboard" not in build_index(tmp_path, params).read_text()


def _check(claim: str, source: str, verdict: str, mean: float, half: float, margin: float = 0.01) -> dict:
    return {
        "claim": claim,
        "source": source,
        "dataset": "d",
        "verdict": verdict,
        "difference": {"mean": mean, "half_width": half, "n": 5},
        "difference_90": [mean - 0.8 * half, mean + 0.8 * half],
        "margin": margin,
    }


def test_the_index_counts_the_papers_claims_and_our_checks_apart_and_draws_every_check(tmp_path, params):
    from PIL import Image

    claims = [
        _check("a", "paper", "reproduced", 0.05, 0.01),
        _check("b", "paper", "inconclusive", 0.0, 0.05),
        _check("c", "ours", "reversed", -0.05, 0.01),
        _check("d", "paper", "no effect", 0.0, 0.002),
    ]
    summary = _summary("first", {}, [], [])
    summary["claims"] = claims
    (tmp_path / "first.json").write_text(json.dumps(summary))
    second = _summary("second", {}, [], [])
    second["claims"] = [_check("e", "paper", "reproduced", 2.0, 0.5, margin=0.5)]
    (tmp_path / "second.json").write_text(json.dumps(second))

    text = build_index(tmp_path, params).read_text()

    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
    rows = {row[0]: row for row in cells if len(row) > 4}
    # reproduced / reversed / no effect / inconclusive, the paper's claims then ours
    assert rows["[First](first.md)"][3:5] == ["1 / 0 / 1 / 1", "0 / 1 / 0 / 0"]
    assert rows["[Second](second.md)"][3:5] == ["1 / 0 / 0 / 0", "0 / 0 / 0 / 0"]
    assert rows["**all papers**"][3:5] == ["2 / 0 / 1 / 1", "0 / 1 / 0 / 0"]
    assert "![Forest plot of every claim check](figures/forest.png)" in text
    with Image.open(tmp_path / "figures" / "forest.png") as image:
        assert image.height > 5 * 0.28 * 110  # a row per check


def test_forest_rows_are_in_units_of_the_margin():
    from common.report.build import forest_rows

    (row,) = forest_rows([_check("a", "ours", "reproduced", 0.03, 0.01)], prefix="p: ")
    assert row["label"] == "p: a (d)" and row["ours"]
    assert (row["mean"], row["low95"], row["high95"]) == pytest.approx((3.0, 2.0, 4.0))
    assert (row["low90"], row["high90"]) == pytest.approx((2.2, 3.8))


def test_a_budget_checks_doubled_run_is_never_on_the_leaderboard(tmp_path):
    """It trains twice the budget by design: a convergence check, not a method of the paper."""
    from pathlib import Path

    from common.paper import load_paper
    from common.report.build import build_report

    repo = Path(__file__).resolve().parents[2]
    build_report("multi_similarity", repo / "records", tmp_path, repo / "params.yaml")
    rows = json.loads((tmp_path / "multi_similarity.json").read_text())["results"]
    doubled = {check.doubled for check in load_paper("multi_similarity").report.budget_checks}
    assert doubled and {r["method"] for r in rows} >= doubled
    assert {r["method"]: r["shown"] for r in rows} == {r["method"]: r["method"] not in doubled for r in rows}
    # nor is it one of the methods the summary says share the budget: it is named as the check it is
    summary = (tmp_path / "multi_similarity.md").read_text().split("## Summary")[1].split("## ")[0]
    assert (
        "We trained 5 methods (MS, MS without mining, Contrastive, Triplet (semi-hard), MS (the paper"
        in summary
    )
    assert "; and, as a budget check, Contrastive, twice the epochs, on the same seeds." in summary


def test_two_papers_identical_runs_make_one_row_and_differing_ones_stay_apart(tmp_path, params):
    same = [
        _record("Normalized softmax", 0, 0.6, 0.3, loss="normface"),
        _record("Normalized softmax", 1, 0.7, 0.4, loss="normface"),
    ]
    other = [_record("Triplet", 0, 0.5, 0.2, loss="triplet"), _record("Triplet", 1, 0.5, 0.2, loss="triplet")]
    for slug in ("first", "second"):
        groups = {("omniglot", "softmax"): same, ("omniglot", "triplet"): other}
        (tmp_path / f"{slug}.json").write_text(
            json.dumps(_summary(slug, groups, ["omniglot"], ["softmax", "triplet"]))
        )
    lr = [dict(r, config={**r["config"], "optimizer": {"name": "adam", "lr": 0.01}}) for r in other]
    third = {("omniglot", "triplet"): lr}  # same metrics, another learning rate: another setup
    (tmp_path / "third.json").write_text(json.dumps(_summary("third", third, ["omniglot"], ["triplet"])))

    (rows,) = _tables(build_index(tmp_path, params).read_text(), "retrieval").values()

    assert [(row[1], row[2]) for row in rows] == [
        ("Normalized softmax", "[first](first.md), [second](second.md)"),
        ("Triplet", "[first](first.md), [second](second.md)"),
        ("Triplet", "[third](third.md)"),
    ]
