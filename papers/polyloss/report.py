"""The PolyLoss report's own section: the epsilon sweep, and whether the best epsilon depends on the task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.report.stats import INCONCLUSIVE, NO_EFFECT, REPRODUCED, mean_ci

if TYPE_CHECKING:
    from common.report.build import ReportContext

METHOD, KEY = "poly1", "loss.epsilon"


def _sweep(context: ReportContext, dataset: str) -> tuple[dict[float, float], float] | None:
    """Poly-1's held-out score per epsilon (the tuning trials) and the chosen epsilon on ``dataset``."""
    members = context.groups.get((dataset, METHOD), [])
    if not members or "tuning" not in members[0]:
        return None
    tuning = members[0]["tuning"]
    return {trial["point"][KEY]: trial["mean"] for trial in tuning["trials"]}, tuning["chosen"][KEY]


def sections(context: ReportContext) -> list[str]:
    sweeps = {d: s for d in context.datasets if (s := _sweep(context, d)) is not None}
    if not sweeps:
        return []
    epsilons = sorted({e for scores, _ in sweeps.values() for e in scores})
    lines = [
        "",
        "## The epsilon sweep: does the best epsilon depend on the task?",
        "",
        "Poly-1's held-out balanced accuracy (%) for each epsilon tried (the tuning trials: one seed, 20% of the "
        "training images held out), per dataset; bold: the chosen epsilon, which the runs above used. The claim holds "
        "if the two datasets choose different epsilons and, on each dataset, its own choice beats the other's "
        "by more than the seed-to-seed half-width of Poly-1's test top-1 there (a one-seed difference smaller "
        "than that is noise).",
        "",
        "| dataset | " + " | ".join(f"ε = {e:g}" for e in epsilons) + " | chosen |",
        "|---|" + "---|" * (len(epsilons) + 1),
    ]
    for dataset, (scores, chosen) in sweeps.items():
        cells = [
            ""
            if e not in scores
            else (f"**{100 * scores[e]:.1f}**" if e == chosen else f"{100 * scores[e]:.1f}")
            for e in epsilons
        ]
        lines.append(f"| {dataset} | " + " | ".join(cells) + f" | ε = {chosen:g} |")
    if len(sweeps) == 2:
        (first, (scores_a, chosen_a)), (second, (scores_b, chosen_b)) = sweeps.items()
        if chosen_a == chosen_b:
            outcome, why = NO_EFFECT, f"both datasets choose ε = {chosen_a:g}"
        else:
            margins = []
            for dataset, scores, own, other in (
                (first, scores_a, chosen_a, chosen_b),
                (second, scores_b, chosen_b, chosen_a),
            ):
                noise = mean_ci([r["metrics"]["top1_accuracy"] for r in context.groups[(dataset, METHOD)]])
                margins.append((dataset, scores[own] - scores[other], noise.half_width))
            clear = all(gap > noise for _, gap, noise in margins)
            outcome = REPRODUCED if clear else INCONCLUSIVE
            why = "; ".join(
                f"on {d}, its ε beats the other's by {100 * gap:.1f} points (noise ±{100 * noise:.1f})"
                for d, gap, noise in margins
            )
        lines += ["", f"Best epsilon depends on the task: **{outcome}** ({why})."]
    return lines
