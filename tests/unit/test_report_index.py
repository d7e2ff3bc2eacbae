"""reports/README.md: the verdict table and the leaderboard across papers."""

from __future__ import annotations

import json

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
