"""The LDAM-DRW report's own section: why the LDAM rows' calibration columns are not comparable."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.report.build import ReportContext


def sections(context: ReportContext) -> list[str]:
    cosine = [
        context.groups[(context.datasets[0], m)][0]["label"]
        for m in context.methods
        if context.groups[(context.datasets[0], m)][0]["config"].get("classifier") == "cosine"
    ]
    if not cosine:
        return []
    return [
        "",
        "## Calibration of the cosine-classifier rows",
        "",
        f"{', '.join(cosine)} read cosine logits, which the loss multiplies by its scale s = 30 before the "
        "softmax during training; the evaluation takes the softmax of the unscaled cosines, whose probabilities "
        "are nearly uniform. Their ECE is therefore that of a different predictor and is not comparable with "
        "the cross-entropy rows; their top-1 and per-group accuracies (arg-max, unchanged by the scale) are.",
    ]
