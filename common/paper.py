"""A paper's metadata and claims: ``papers/<slug>/paper.yaml``, validated.

The claims are the paper's own statements (and our own checks, marked ``source: ours``), each checked against
our runs by the report: an ordering ``better > worse`` on one metric, per dataset, judged on the paired per-seed
difference against the claim's margin, its smallest effect of interest, declared here before the runs
(``common.report.stats`` has the four verdicts). Headline numbers are the paper's figures on its own
benchmarks, shown beside ours with the difference in scale stated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.params import PAPERS_ROOT, ConfigError, format_validation_error


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    text: str
    metric: str
    better: str
    worse: str
    datasets: list[str] | None = None  # None: every dataset of the paper
    paper_evidence: str = ""  # what the paper reports for it
    source: Literal["paper", "ours"] = "paper"  # "ours": a check we added, not a claim of the paper
    lower_is_better: bool = False  # e.g. an error rate: "better" then means a lower value
    # The smallest effect of interest, in the metric's units as the records hold it (0.01 = 1 point of a
    # metric in [0, 1]): at most half the gain the paper reports for the claim, else 1 point for accuracy and
    # recall metrics; the reason says which rule and which number.
    margin: float = Field(gt=0)
    margin_reason: str = Field(min_length=1)
    # "superiority": better > worse; "non_inferiority": better is not worse than worse by more than the margin
    # ("comparable or better").
    kind: Literal["superiority", "non_inferiority"] = "superiority"


class BudgetCheck(BaseModel):
    """Is the baseline trained long enough? ``doubled`` is ``baseline`` with twice the training budget (the
    same seeds, so the difference is paired); the report calls it converged where the 90% interval of the
    difference lies inside plus or minus ``margin`` (the claims' margin on that metric)."""

    model_config = ConfigDict(extra="forbid")
    baseline: str
    doubled: str
    metric: str
    margin: float = Field(gt=0)
    margin_reason: str = Field(min_length=1)
    datasets: list[str] | None = None  # None: every dataset of the paper


class Headline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    metric: str
    value: float
    previous_best: float | None = None
    setup: str
    ours_dataset: str  # which of our datasets stands beside it
    ours_metric: str
    ours_method: str


RETRIEVAL_TABLE = [
    "recall_at_1",
    "recall_at_2",
    "recall_at_4",
    "recall_at_8",
    "map_at_r",
    "r_precision",
    "nmi",
]
FIGURES = ("recall_at_k", "similarities", "training_loss")


class ReportSpec(BaseModel):
    """What the paper's report shows: the table's metric columns (what the run records hold), a line that
    explains them, the standard figures, and notes on the datasets (variants included)."""

    model_config = ConfigDict(extra="forbid")
    table: list[str] = RETRIEVAL_TABLE
    table_note: str = (
        "R@K: share of queries with a same-class item among the K nearest (R@1 = P@1); MAP@R and R-Prec as in "
        "Musgrave et al. (2020); NMI of k-means on the test embeddings."
    )
    figures: list[Literal["recall_at_k", "similarities", "few_shot", "reliability", "training_loss"]] = list(
        FIGURES
    )
    dataset_notes: dict[str, str] = {}
    # The methods that stand for the paper on the cross-paper leaderboards (None: all but the budget checks'
    # doubled runs, which are never on them). A grid's variants (of a learning rate, a temperature, the views)
    # stay in the paper's report; the variant named here stands for its method, chosen before the runs, never
    # by its test score.
    leaderboard: list[str] | None = None
    # Baselines trained again with twice the budget: converged at their data size, or not.
    budget_checks: list[BudgetCheck] = []


class PaperMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str
    title: str
    authors: str
    venue: str
    arxiv: str
    code: str | None = None
    summary: str
    scale_note: str
    headline: list[Headline] = []
    claims: list[Claim]
    report: ReportSpec = ReportSpec()


def load_paper(slug: str, root: Path = PAPERS_ROOT) -> PaperMeta:
    path = root / slug / "paper.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.parent.name for p in root.glob("*/paper.yaml")))
        raise ConfigError(f"{path}: no such paper; papers with a paper.yaml: {known or 'none'}")
    try:
        meta = PaperMeta.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        raise ConfigError(format_validation_error(str(path), err)) from err
    if meta.slug != slug:
        raise ConfigError(f"{path}: slug {meta.slug!r} differs from its folder name {slug!r}")
    return meta


def check_claims(meta: PaperMeta, methods: set[str], datasets: set[str]) -> None:
    """Every claim and headline names methods and datasets that the paper's params section has."""
    where = f"papers/{meta.slug}/paper.yaml"
    named = [(f"claim {c.id!r}", c, ("better", "worse")) for c in meta.claims]
    named += [("report.budget_checks", c, ("baseline", "doubled")) for c in meta.report.budget_checks]
    for what, item, roles in named:
        for role in roles:
            name = getattr(item, role)
            if name not in methods:
                raise ConfigError(
                    f"{where}: {what}: {role} method {name!r} is not in params.yaml "
                    f"{meta.slug}.methods ({', '.join(sorted(methods))})"
                )
        for dataset in item.datasets or []:
            if dataset not in datasets:
                raise ConfigError(f"{where}: {what}: dataset {dataset!r} not in {sorted(datasets)}")
    for name in meta.report.leaderboard or []:
        if name not in methods:
            raise ConfigError(
                f"{where}: report.leaderboard: method {name!r} is not in params.yaml {meta.slug}.methods "
                f"({', '.join(sorted(methods))})"
            )
    for row in meta.headline:
        if row.ours_method not in methods or row.ours_dataset not in datasets:
            raise ConfigError(
                f"{where}: headline {row.dataset}: ours_method {row.ours_method!r} / ours_dataset "
                f"{row.ours_dataset!r} must be among {sorted(methods)} / {sorted(datasets)}"
            )
