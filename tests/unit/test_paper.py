"""Paper metadata and claims: validated, and claims must name methods the paper runs."""

import pytest

from common.config import resolve_runs
from common.paper import all_papers, check_claims, load_paper
from common.params import ConfigError
from common.report.build import evaluate_claims
from common.report.stats import NOT_REPRODUCED, REPRODUCED
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
        check_claims(meta, {"multi_similarity", "triplet", "ms_no_mining", "ms_official_code"}, {"omniglot"})


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
    assert rows["fashion_mnist"]["verdict"] == NOT_REPRODUCED
