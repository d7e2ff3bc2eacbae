"""The tuning point each method runs with: the best mean of the held-out metric over the trial seeds, in the
direction the tune section gives (``choose_points``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.config import TuneSpec
from common.records import write_record
from common.runner import choose_points, trial_record_path

SCALES = [1.0, 0.5, 10.0]
# one_shot_error of each trial, per seed: scale 0.5 has the lowest mean error, scale 10.0 the highest
ERRORS = {1.0: [0.30, 0.34], 0.5: [0.20, 0.26], 10.0: [0.40, 0.36]}


def _tune(lower_is_better: bool) -> TuneSpec:
    return TuneSpec(
        metric="one_shot_error",
        lower_is_better=lower_is_better,
        grid={"euclid_5way": {"loss.scale": SCALES}},
    )


def _trials(root, tune: TuneSpec) -> dict:
    """Trial records as the run stage writes them; ``choose_points`` reads a run's paper, dataset and
    method only."""
    trials = {}
    for point in tune.points("euclid_5way"):
        for seed, error in enumerate(ERRORS[point["loss.scale"]]):
            run = SimpleNamespace(paper="protonets", dataset="omniglot", method="euclid_5way", seed=seed)
            path = trial_record_path(root, run, point)
            write_record(path, {"metrics": {"one_shot_error": error}})
            trials[path] = (run, point)
    return trials


@pytest.mark.parametrize(("lower_is_better", "best_scale"), [(True, 0.5), (False, 10.0)])
def test_the_chosen_tuning_point_is_the_best_mean_in_the_metrics_direction(
    tmp_path, lower_is_better, best_scale
):
    tune = _tune(lower_is_better)

    choice = choose_points(tune, _trials(tmp_path, tune))[("omniglot", "euclid_5way")]

    assert choice["chosen"] == {"loss.scale": best_scale}
    assert choice["lower_is_better"] is lower_is_better
    means = {row["point"]["loss.scale"]: row["mean"] for row in choice["trials"]}
    assert means == pytest.approx({scale: sum(v) / len(v) for scale, v in ERRORS.items()})
