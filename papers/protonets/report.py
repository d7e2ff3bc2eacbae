"""The Prototypical Networks report's own section: Omniglot's 20 official one-shot runs beside the
published errors that come with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.report.stats import mean_ci

if TYPE_CHECKING:
    from common.report.build import ReportContext

# Lake, Salakhutdinov, Tenenbaum, "Human-level concept learning through probabilistic program induction",
# Science 2015, as listed with the runs (brendenlake/omniglot, python/one-shot-classification): error, %.
PUBLISHED_ONE_SHOT_ERRORS = {
    "people": 4.5,
    "Bayesian Program Learning": 3.3,
    "deep Siamese convnet": 8.0,
    "Hierarchical Deep": 34.8,
}


def sections(context: ReportContext) -> list[str]:
    lines = [
        "",
        "## Omniglot's 20 official one-shot runs",
        "",
        "Each run is a 20-way one-shot task on characters of the evaluation alphabets: 20 training images (one "
        "a class) and 20 test images, each matched to the nearest training image in the embedding. Error over "
        "the 400 test images, mean ± 95% interval over seeds, beside the errors published with the runs "
        "(Lake et al. 2015, trained on the full background set).",
        "",
        "| method | error (%) |",
        "|---|---|",
    ]
    for dataset in context.datasets:
        for method in context.methods:
            members = context.groups.get((dataset, method), [])
            if members and "one_shot_error" in members[0]["metrics"]:
                error = mean_ci([r["metrics"]["one_shot_error"] for r in members])
                lines.append(f"| ours: {members[0]['label']} | {error.format()} |")
    for name, error in PUBLISHED_ONE_SHOT_ERRORS.items():
        lines.append(f"| published: {name} | {error:.1f} |")
    return lines
