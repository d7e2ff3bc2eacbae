"""params.yaml validation: bad input fails before compute, with the key in the message."""

import math
from pathlib import Path

import pytest
import yaml

from common.config import LrSchedule, RunConfig, load_paper_section, logged_params, resolve_runs
from common.paper import load_paper
from common.params import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _params(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_committed_params_resolve_for_every_profile():
    for profile in ("smoke", "cpu", "gpu"):
        runs = resolve_runs("multi_similarity", REPO / "params.yaml", profile)
        methods = {r.method for r in runs}
        assert {"multi_similarity", "contrastive", "triplet"} <= methods
        # fair comparison: everything but the loss is shared within a dataset (the budget check's
        # doubled epochs aside)
        doubled = {check.doubled for check in load_paper("multi_similarity").report.budget_checks}
        for dataset in {r.dataset for r in runs}:
            shared = {
                r.model_dump_json(exclude={"method", "label", "loss", "seed"})
                for r in runs
                if r.dataset == dataset and r.method not in doubled
            }
            assert len(shared) == 1
        if profile != "smoke":
            assert all(
                len([r for r in runs if r.dataset == d and r.method == m]) >= 3
                for d in {r.dataset for r in runs}
                for m in methods
            )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: p["multi_similarity"]["methods"]["triplet"]["loss"].update(name="tripplet"),
            "unknown loss 'tripplet'",
        ),
        (
            lambda p: p["multi_similarity"]["methods"]["triplet"]["loss"].update(margn=0.1),
            "does not accept 'margn'",
        ),
        (lambda p: p["multi_similarity"]["methods"]["multi_similarity"]["loss"].update(alpha=-1), "alpha"),
        (
            lambda p: p["multi_similarity"]["train"]["model"].update(name="resnet999"),
            "unknown model 'resnet999'",
        ),
        (lambda p: p["multi_similarity"]["train"]["optimizer"].update(lr=-0.1), "lr must be > 0"),
        (
            lambda p: p["multi_similarity"]["train"]["optimizer"].update(lr="1e-3"),
            "optimizer 'adam': lr must be a number .its default is 0.001.; got the string '1e-3'",
        ),
        (
            lambda p: p["multi_similarity"]["train"]["optimizer"].update(lr=float("inf")),
            "optimizer 'adam': lr must be a finite number; got inf",
        ),
        (
            lambda p: p["multi_similarity"]["methods"]["multi_similarity"]["loss"].update(beta=float("nan")),
            "loss 'multi_similarity': beta must be a finite number; got nan",
        ),
        (lambda p: p["multi_similarity"]["profiles"]["cpu"].update(epochs="three"), "epochs"),
        (lambda p: p["multi_similarity"]["profiles"]["cpu"].update(epochs=0), "epochs"),
        (
            lambda p: p["multi_similarity"]["profiles"]["cpu"].update(seeds=[]),
            "seeds must be a non-empty list",
        ),
        (
            lambda p: p["multi_similarity"]["datasets"].update(cifar={}),
            "dataset .cifar.: not a prepared dataset",
        ),
        (
            lambda p: p["multi_similarity"]["methods"]["triplet"].update(epochs=9),
            r"methods.triplet sets \[.epochs.\], but the paper.s methods vary only",
        ),
        (lambda p: p["multi_similarity"]["train"]["sampler"].update(name="nope"), "unknown sampler 'nope'"),
        (lambda p: p.update(profile="tpu"), "profile"),
        (lambda p: p["multi_similarity"]["train"].update(augment="rotate"), "augment"),
        (lambda p: p["multi_similarity"]["train"].update(lr_schedule={"name": "linear"}), "lr_schedule.name"),
        (
            lambda p: p["multi_similarity"]["train"].update(lr_schedule={"name": "step", "at": [0.5]}),
            "one factor per milestone",
        ),
        (
            lambda p: p["multi_similarity"]["train"].update(
                lr_schedule={"name": "step", "at": [0.9, 0.5], "factors": [0.1, 0.01]}
            ),
            "at must increase",
        ),
        (
            lambda p: p["multi_similarity"]["train"].update(lr_schedule={"name": "cosine", "at": [0.5]}),
            "cosine takes neither",
        ),
    ],
)
def test_bad_params_name_the_key(tmp_path, edit, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_runs("multi_similarity", _params(tmp_path, edit))


def test_missing_params_file_and_section(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_runs("multi_similarity", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no section 'nopaper'"):
        resolve_runs("nopaper", REPO / "params.yaml")


def test_config_hash_changes_with_any_setting():
    runs = resolve_runs("multi_similarity", REPO / "params.yaml", "cpu")
    assert len({r.config_hash() for r in runs}) == len(runs)


def test_a_dataset_variant_reads_its_source_and_carries_its_label_noise():
    from common.config import resolve_runs

    runs = [r for r in resolve_runs("arcface", "params.yaml", "smoke") if r.dataset == "omniglot_noise40"]
    assert runs and all(r.data == "omniglot" and r.label_noise.rate == 0.4 for r in runs)


def test_varies_lets_methods_set_the_declared_key_only(tmp_path):
    import yaml

    from common.config import resolve_runs

    params = yaml.safe_load(open("params.yaml"))
    params["multi_similarity"]["methods"]["triplet"]["sampler"] = {"samples_per_class": 2}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"methods.triplet sets \['sampler'\]"):
        resolve_runs("multi_similarity", path, "smoke")
    params["multi_similarity"]["varies"] += ["sampler"]
    path.write_text(yaml.safe_dump(params))
    runs = resolve_runs("multi_similarity", path, "smoke")
    assert {r.sampler.kwargs["samples_per_class"] for r in runs if r.method == "triplet"} == {2}
    assert {
        r.sampler.kwargs["samples_per_class"]
        for r in runs
        if r.method != "triplet" and r.dataset == "omniglot"
    } == {4}


def _tuned(edit_tune):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params["multi_similarity"]
    section["tune"] = {
        "metric": "map_at_r",
        "grid": {m: {"optimizer.lr": [1e-3, 3e-3]} for m in section["methods"]},
    }
    edit_tune(section["tune"])
    return params


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["grid"].update(triplet={"loss.margin": [0.1, 0.2, 0.3]}), "different numbers of trials"),
        (lambda t: t["grid"].pop("triplet"), "missing ['triplet']"),
        (lambda t: t["grid"].update(nope={"optimizer.lr": [1, 2]}), "unknown ['nope']"),
        (
            lambda t: t["grid"].update(triplet={"loss.name": ["a", "b"]}),
            "the component's name cannot be tuned",
        ),
        (lambda t: t["grid"].update(triplet={"model.depth": [1, 2]}), "'model.depth' is not"),
        (lambda t: t["grid"].update(triplet={"loss.margin": [0.1, 0.1]}), "distinct values"),
        (lambda t: t.update(epochs_share=0), "epochs_share"),
    ],
)
def test_a_bad_tune_section_names_what_is_wrong(tmp_path, edit, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_tuned(edit)))
    with pytest.raises(ConfigError) as caught:
        load_paper_section("multi_similarity", path)
    assert message in str(caught.value)


def test_trials_give_every_method_its_grid_on_held_out_data_with_a_share_of_the_epochs(tmp_path):
    from common.config import resolve_trials

    def edit(tune):
        tune["grid"]["triplet"] = {"loss.margin": [0.05, 0.2]}
        tune.update(epochs_share=0.4, seeds=[7])

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_tuned(edit)))
    trials = resolve_trials("multi_similarity", path, "cpu")
    runs = resolve_runs("multi_similarity", path, "cpu")
    assert len(trials) == 2 * len({(r.dataset, r.method) for r in runs})
    epochs = {(r.dataset, r.method): r.epochs for r in runs}
    for run, point in trials:
        assert run.holdout is not None and run.seed == 7
        assert (
            run.epochs == round(0.4 * epochs[(run.dataset, run.method)]) < epochs[(run.dataset, run.method)]
        )
        [(key, value)] = point.items()
        component, name = key.split(".")
        assert getattr(run, component).kwargs[name] == value
    margins = sorted(run.loss.kwargs["margin"] for run, _ in trials if run.method == "triplet")
    assert margins == [0.05, 0.05, 0.2, 0.2]  # two datasets


def test_a_profiles_tune_trials_keeps_the_first_points_of_each_grid_there_only(tmp_path):
    from common.config import expected_config, resolve_trials, tune_of

    def edit(tune):
        tune["grid"] = {m: {"optimizer.lr": [1e-3, 3e-3, 1e-2]} for m in tune["grid"]}

    params = _tuned(edit)
    params["multi_similarity"]["profiles"]["smoke"]["tune_trials"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    pairs = {(r.dataset, r.method) for r in resolve_runs("multi_similarity", path, "smoke")}
    smoke, cpu = (
        resolve_trials("multi_similarity", path, "smoke"),
        resolve_trials("multi_similarity", path, "cpu"),
    )
    assert len(smoke) == 2 * len(pairs) and len(cpu) == 3 * len(pairs)
    assert {point["optimizer.lr"] for _, point in smoke} == {1e-3, 3e-3}  # the first two, in grid order
    assert tune_of("multi_similarity", path, "cpu").trials is None

    # a record tuned over the smoke profile's two points is current there, and not under the full grid
    run = resolve_runs("multi_similarity", path, "smoke")[0]
    tried = [
        {"point": p, "values": [0.5], "mean": 0.5}
        for p in tune_of("multi_similarity", path, "smoke").points(run.method)
    ]
    record = {"tuning": {"metric": "map_at_r", "trials": tried, "chosen": tried[1]["point"]}}
    assert (
        expected_config(run, record, tune_of("multi_similarity", path, "smoke")).optimizer.kwargs["lr"]
        == 3e-3
    )
    assert expected_config(run, record, tune_of("multi_similarity", path, "cpu")) is None


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "one"])
def test_a_bad_tune_trials_names_the_profile(tmp_path, value):
    from common.config import resolve_trials

    params = _tuned(lambda tune: None)
    params["multi_similarity"]["profiles"]["smoke"]["tune_trials"] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(
        ConfigError, match=r"multi_similarity\.profiles\.smoke\.tune_trials must be a positive"
    ):
        resolve_trials("multi_similarity", path, "smoke")


def test_epochs_share_trains_a_method_for_part_of_every_profiles_epochs(tmp_path):
    runs = {
        (r.profile, r.method): r.epochs
        for p in ("smoke", "cpu", "gpu")
        for r in resolve_runs("align_uniform", REPO / "params.yaml", p)
    }
    assert [runs[(p, "au_lam1")] for p in ("smoke", "cpu", "gpu")] == [1, 15, 100]
    assert [runs[(p, "ntxent_t0_5_doubled")] for p in ("smoke", "cpu", "gpu")] == [2, 30, 200]

    def share(value):
        return lambda p: p["align_uniform"]["methods"]["au_lam1"].update(epochs_share=value)

    for bad in (0, -1, "half", True):
        with pytest.raises(ConfigError, match=r"method au_lam1, .*epochs_share must be a positive number"):
            resolve_runs("align_uniform", _params(tmp_path, share(bad)), "cpu")
    for value, epochs in ((0.334, 5), (0.667, 10), (2, 30)):  # rounded to whole epochs of the cpu's 15
        shared = {
            r.method: r.epochs for r in resolve_runs("align_uniform", _params(tmp_path, share(value)), "cpu")
        }
        assert shared["au_lam1"] == epochs
    smoke = {
        r.method: r.epochs for r in resolve_runs("align_uniform", _params(tmp_path, share(0.334)), "smoke")
    }
    assert smoke["au_lam1"] == 1  # never below one epoch

    def undeclared(p):
        p["align_uniform"]["varies"] = ["loss", "views"]

    with pytest.raises(ConfigError, match=r"methods\.ntxent_t0_5_doubled sets \['epochs_share'\]"):
        resolve_runs("align_uniform", _params(tmp_path, undeclared), "cpu")


def test_the_lr_schedules_follow_their_formulas():
    cosine = LrSchedule(name="cosine")
    assert cosine.factor(1, 0, 4, 10) == 1.0
    assert cosine.factor(3, 0, 4, 10) == pytest.approx(0.5)  # half-way
    assert cosine.factor(4, 9, 4, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    ldam = LrSchedule(name="step", at=(0.8, 0.9), factors=(0.01, 0.0001), warmup_epochs=5)  # LDAM-DRW, CIFAR
    assert ldam.factor(1, 0, 200, 10) == pytest.approx(1 / 50)  # warm-up: step 1 of 50
    assert ldam.factor(5, 9, 200, 10) == 1.0
    assert [ldam.factor(e, 0, 200, 10) for e in (160, 161, 180, 181)] == [1.0, 0.01, 0.01, 0.0001]


def test_a_run_without_the_later_settings_keeps_its_config_and_hash():
    """``lr_schedule`` and ``eval.train_accuracy`` came after the first records: unset, they are not in the
    config a record holds."""
    dumped = resolve_runs("multi_similarity", REPO / "params.yaml", "cpu")[0].model_dump(mode="json")
    dumped.pop("lr_schedule")
    dumped["eval"].pop("train_accuracy", None)
    run = RunConfig.model_validate(dumped)  # as a record written before the two settings holds it
    assert "lr_schedule" not in run.model_dump(mode="json")
    assert "train_accuracy" not in run.model_dump(mode="json")["eval"]
    measured = RunConfig.model_validate({**run.model_dump(mode="json"), "eval": {"train_accuracy": True}})
    assert measured.model_dump(mode="json")["eval"]["train_accuracy"] is True
    assert measured.config_hash() != run.config_hash()
    scheduled = RunConfig.model_validate({**run.model_dump(mode="json"), "lr_schedule": {"name": "cosine"}})
    assert scheduled.model_dump(mode="json")["lr_schedule"]["name"] == "cosine"
    assert scheduled.config_hash() != run.config_hash()
    assert RunConfig.model_validate(scheduled.model_dump(mode="json")) == scheduled


def test_logged_params_hold_every_hyper_parameter_the_run_used():
    """MLflow params: the config plus each component's defaults, but not what the engine supplies (a sampler's
    seed and batches per epoch come from the run itself), and the config itself is left as it was."""
    [run] = [
        r
        for r in resolve_runs("multi_similarity", REPO / "params.yaml", "cpu")
        if r.method == "multi_similarity"
    ][:1]
    config = run.model_dump(mode="json")
    params = logged_params(config)
    assert params["loss"] == {
        "name": "multi_similarity",
        "beta": 40,
        "base": 0.5,
        "alpha": 2.0,
        "epsilon": 0.1,
        "mining": True,
    }
    assert params["optimizer"] == {"name": "adam", "lr": config["optimizer"]["lr"], "weight_decay": 0.0}
    assert params["sampler"] == {"name": "m_per_class", "samples_per_class": 4, "classes_per_batch": 16}
    assert (
        params["model"]["batch_norm"] is True and params["batches_per_epoch"] == config["batches_per_epoch"]
    )
    assert config["loss"] == {"name": "multi_similarity", "beta": 40, "base": 0.5}
    assert {k: v for k, v in params.items() if k not in ("loss", "optimizer", "sampler", "model")} == {
        k: v for k, v in config.items() if k not in ("loss", "optimizer", "sampler", "model")
    }
