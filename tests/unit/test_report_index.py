"""reports/README.md: the verdict table and the leaderboard across papers."""

from __future__ import annotations

import json

import pytest

from common.report.build import build_index, leaderboard_rows


def _record(label: str, seed: int, r1: float, map_r: float) -> dict:
    config = {
        "model": {"name": "conv4", "embedding_dim": 64},
        "sampler": {"name": "m_per_class", "classes_per_batch": 16, "samples_per_class": 4},
        "epochs": 5,
        "batches_per_epoch": 50,
    }
    return {"label": label, "seed": seed, "config": config, "metrics": {"recall_at_1": r1, "map_at_r": map_r}}


def _summary(slug: str, groups: dict, datasets: list[str], methods: list[str]) -> dict:
    return {
        "slug": slug,
        "title": slug.title(),
        "profile": "cpu",
        "seeds": [0, 1],
        "claims": [],
        "results": leaderboard_rows(groups, datasets, methods),
    }


def test_the_leaderboard_ranks_every_method_of_every_paper_by_map_at_r(tmp_path):
    first = {
        ("omniglot", "a"): [_record("Method A", 0, 0.5, 0.20), _record("Method A", 1, 0.7, 0.30)],
        ("omniglot", "b"): [_record("Method B", 0, 0.6, 0.40), _record("Method B", 1, 0.6, 0.40)],
    }
    second = {("omniglot", "c"): [_record("Method C", 0, 0.9, 0.35), _record("Method C", 1, 0.9, 0.35)]}
    second[("omniglot", "c")][1]["tuning"] = {"chosen": "x"}
    for slug, groups, methods in (("first", first, ["a", "b"]), ("second", second, ["c"])):
        (tmp_path / f"{slug}.json").write_text(json.dumps(_summary(slug, groups, ["omniglot"], methods)))

    text = build_index(tmp_path).read_text()

    board = text[text.index("## Leaderboard") :]
    rows = [line for line in board.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == ["Method B", "Method C", "Method A"]
    method_a = rows[2].split(" | ")
    # mean of (0.5, 0.7) with the Student-t half-width for 2 seeds: 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert method_a[-2:] == ["60.0 ± 127.1", "25.0 ± 63.5 |"]
    assert "[first](first.md)" in rows[0] and "[second](second.md)" in rows[1]
    assert "conv4(embedding_dim=64)" in rows[0]
    assert "5 x 50 batches, m_per_class(classes_per_batch=16, samples_per_class=4)" in rows[0]
    assert rows[1].split(" | ")[5] == "yes" and rows[0].split(" | ")[5] == "no"


def test_a_method_without_retrieval_metrics_is_left_off_the_leaderboard(tmp_path):
    groups = {("omniglot", "a"): [_record("Method A", 0, 0.5, 0.2)]}
    del groups[("omniglot", "a")][0]["metrics"]["map_at_r"]
    (tmp_path / "only.json").write_text(json.dumps(_summary("only", groups, ["omniglot"], ["a"])))
    assert "## Leaderboard" not in build_index(tmp_path).read_text()


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


def test_the_index_counts_the_papers_claims_and_our_checks_apart_and_draws_every_check(tmp_path):
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

    text = build_index(tmp_path).read_text()

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
