"""``params.yaml``: its schema, the resolution of one paper's section into runs, and validation.

A paper's section has four parts that are merged, in this order, into one config per run:

    train                 what every method of the paper shares (backbone, optimizer, sampler, eval)
    datasets.<name>       what differs per dataset (batch composition, image size); a name other than a
                          prepared dataset is a variant of one (``data: omniglot``), e.g. with label noise
    profiles.<profile>    the budget: seeds, epochs, batches per epoch (smoke / cpu / gpu)
    methods.<method>      what the compared methods differ in (the loss and its hyper-parameters)

Methods may only set ``loss`` (and a ``label``), so that within a paper's table every method has the
same backbone, data, augmentation and budget: the fair-comparison rule of the replication standard.
A paper whose compared variable is something else (Prototypical Networks compares training ways) names
it in ``varies`` (default ``[loss]``), so the exception is declared where everyone sees it. A method that
trains for part or a multiple of the budget sets ``epochs_share`` (a positive factor of the profile's epochs,
rounded, at least one: 0.5 for half, 2 for a budget check's doubled baseline), so that the comparison holds
under every profile.
Every resolved run is validated, and its components are built once on the spot, before any
training starts: a typo or an out-of-range value fails at once with the key path in the message.

An optional ``tune`` part picks hyper-parameters on held-out training data before the reported runs:
every method gets the same number of trials (a grid over its own hyper-parameters), each trial trains on
the training split minus a held-out part and is scored on that part, and the best point is applied to the
method's runs (``resolve_trials``, ``apply_point``). The held-out part mirrors the test protocol: whole
classes where the test classes are unseen in training (Omniglot), a share of each class's samples where
they are the same classes (Fashion-MNIST).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from common.params import ConfigError, deep_merge, format_validation_error, load_params
from common.registry import BuildError

PROFILES = ("smoke", "cpu", "gpu")
# Sampler arguments the engine fills in from the data, the run and the process group.
ENGINE_SAMPLER_ARGS = frozenset({"labels", "seed", "rank", "world_size", "batches_per_epoch"})
# Loss arguments the engine fills in from the model and the training labels (margin/proxy heads).
ENGINE_LOSS_ARGS = frozenset({"num_classes", "embedding_dim", "class_counts"})
DATASETS = ("fashion_mnist", "omniglot")
# What a paper may declare that its methods vary (see ``varies``).
METHOD_KEYS = ("loss", "sampler", "classifier", "optimizer", "views", "epochs_share")


class Component(BaseModel):
    """``{name: ..., **hyperparams}``: something built by name through a registry."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class FewShotSpec(BaseModel):
    """N-way K-shot episodes drawn from the test classes (the same episodes for every method and seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ways: tuple[int, ...] = (5, 20)
    shots: tuple[int, ...] = (1, 5)
    queries: int = Field(15, ge=1, description="query samples per class and episode")
    episodes: int = Field(1000, ge=2)
    distance: Literal["from_loss", "squared_euclidean", "cosine"] = Field(
        "from_loss",
        description="from_loss: the training loss's distance if it has one, else squared_euclidean",
    )

    @field_validator("ways", "shots")
    @classmethod
    def _positive(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if not values or min(values) < 1:
            raise ValueError("must be a non-empty list of integers >= 1")
        return tuple(sorted(set(values)))


class ShotGroups(BaseModel):
    """Long-tailed recognition's many / medium / few-shot classes, by training samples: more than ``many``,
    ``few`` to ``many``, fewer than ``few`` (Liu et al., CVPR 2019, use 100 and 20 on ImageNet-LT)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    many: int = Field(100, ge=1)
    few: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ShotGroups:
        if self.few > self.many:
            raise ValueError(f"few ({self.few}) must be <= many ({self.many})")
        return self


class SharpnessSpec(BaseModel):
    """Sharpness of the trained weights on a fixed subset of the training data (``common.metrics.sharpness``):
    the loss increase in an L2 ball of radius ``rho`` (``ascent_steps`` of projected gradient ascent) and the
    largest Hessian eigenvalue (``power_iterations`` of power iteration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rho: float = Field(0.05, gt=0)
    samples: int = Field(1000, ge=2)
    ascent_steps: int = Field(5, ge=1)
    power_iterations: int = Field(20, ge=1)


class ProbeSpec(BaseModel):
    """A run's encoder judged on frozen features of the un-augmented images (``common.engine.representation``):
    a linear probe trained on the training features (its test accuracy is ``probe_top1_accuracy``, as SupCon
    reports its encoders; an embedding loss's ``top1_accuracy`` too), k-NN accuracy, uniformity of the test
    features and, for runs trained on views, alignment of two views of each test image (Wang & Isola). A
    classification loss is probed on the features its classifier reads, so that both kinds of loss can be
    read out the same way; its ``top1_accuracy`` stays its classifier's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight_decay: float = Field(1e-4, gt=0, description="the probe's L2 penalty")
    knn_k: int = Field(20, ge=1)
    knn_temperature: float | None = Field(0.07, gt=0, description="None: a majority vote")
    train_items: int | None = Field(
        None, ge=2, description="probe on a fixed random subset of the training set"
    )


class CorruptionSpec(BaseModel):
    """Accuracy on corrupted copies of (a fixed subset of) the test images (``common.data.corruptions``):
    per corruption and severity, and their mean, ``corruption_accuracy``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kinds: tuple[Literal["gaussian_noise", "gaussian_blur", "contrast"], ...] = (
        "gaussian_noise",
        "gaussian_blur",
        "contrast",
    )
    severities: tuple[int, ...] = (1, 3, 5)
    max_items: int | None = Field(2000, ge=2, description="test images corrupted (a fixed random subset)")
    seed: int = Field(0, ge=0, description="the noise of gaussian_noise")

    @field_validator("kinds", "severities")
    @classmethod
    def _non_empty(cls, values: tuple) -> tuple:
        if not values:
            raise ValueError("must list at least one")
        return tuple(dict.fromkeys(values))

    @field_validator("severities")
    @classmethod
    def _severities(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(s not in (1, 2, 3, 4, 5) for s in values):
            raise ValueError(f"severities must be in 1..5, got {list(values)}")
        return tuple(sorted(values))


def omit_later_defaults(data: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the fields added after the first records (``later``: name -> default) where they hold
    their default, so that a run that does not use them keeps its config, its hash and its record."""
    return {k: v for k, v in data.items() if k not in later or v != later[k]}


class EvalSpec(BaseModel):
    """What is measured on the test split after training: retrieval for embedding losses, classification
    metrics (top-1, balanced accuracy, ECE) for classification losses; the rest when asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    chunk_size: int = Field(1024, ge=1)
    max_items: int | None = Field(None, ge=2, description="evaluate on a fixed random subset of this size")
    histogram_pairs: int = Field(2000, ge=10, description="embeddings used for the similarity histograms")
    fars: tuple[float, ...] = Field((), description="verification: TAR at these FARs over all test pairs")
    few_shot: FewShotSpec | None = None
    one_shot_runs: bool = Field(False, description="Omniglot only: the 20 official one-shot runs")
    calibration_bins: int = Field(
        15, ge=1, description="classification: equal-width confidence bins of the ECE"
    )
    shot_groups: ShotGroups | None = Field(None, description="classification: many/medium/few-shot accuracy")
    train_accuracy: bool = Field(
        False,
        description="classification: top-1 on the training images against the labels trained on (noisy ones "
        "included), without augmentation: how well the model fits its training set",
    )
    sharpness: SharpnessSpec | None = None
    probe: ProbeSpec | None = Field(
        None, description="linear probe, k-NN, alignment, uniformity of the features"
    )
    corruptions: CorruptionSpec | None = Field(None, description="accuracy on corrupted test images")

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_later_defaults(handler(self), {"train_accuracy": False})

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of integers >= 1")
        return tuple(sorted(set(ks)))

    @field_validator("fars")
    @classmethod
    def _fars(cls, fars: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < far < 1 for far in fars):
            raise ValueError("fars must lie in (0, 1)")
        return tuple(sorted(set(fars)))


class LabelNoise(BaseModel):
    """Synthetic noise on the training labels (``common.data.transforms.noisy_labels``); the test split is
    never touched. ``seed`` fixes the noisy labels, the same for every method and run seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["symmetric", "asymmetric"] = "symmetric"
    rate: float = Field(ge=0, le=1)
    seed: int = Field(0, ge=0)


class LongTail(BaseModel):
    """A long-tailed training set (``common.data.transforms.long_tailed_indices``): class ``c`` keeps
    ``n_max * (1 / imbalance_ratio) ** (c / (C - 1))`` samples (``exponential``, Cao et al. 2019) or the step
    profile, ``n_max`` being the smallest class of the (limited) training split; the test split is untouched."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    imbalance_ratio: float = Field(ge=1)
    profile: Literal["exponential", "step"] = "exponential"
    seed: int = Field(0, ge=0)


class ViewsSpec(BaseModel):
    """Training on random views of each image (``common.data.views``): ``count`` views of every image of a
    batch (2: the positive pairs of a contrastive loss; 1: plain augmentation, e.g. for a cross-entropy
    baseline at the same strength), drawn at ``strength`` in [0, 1]. ``labels``: the views of an image share
    its class (``class``: supervised, as SupCon) or only each other (``instance``: self-supervised, as
    SimCLR or Wang & Isola; the label is the image's index in the training split)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: Literal[1, 2] = 2
    strength: float = Field(1.0, ge=0, le=1)
    labels: Literal["class", "instance"] = "class"

    @model_validator(mode="after")
    def _instances_need_pairs(self) -> ViewsSpec:
        if self.labels == "instance" and self.count != 2:
            raise ValueError("labels 'instance' needs count 2: one view of an image has no positive")
        return self


class LrSchedule(BaseModel):
    """The learning rate over training, as a factor of the optimizer's ``lr``, set before every step; a pure
    function of the step, so a resumed run continues it exactly.

    ``cosine``: from 1 down to 0 along half a cosine over all the run's steps (Loshchilov & Hutter, "SGDR",
    ICLR 2017). ``step``: multiplied by ``factors[i]`` (not cumulative) from the epoch after ``at[i]`` of the
    run's epochs (LDAM-DRW's CIFAR schedule, lr x 0.01 after epoch 160 of 200 and x 0.0001 after 180, is
    ``at: [0.8, 0.9], factors: [0.01, 0.0001]``). ``warmup_epochs``: first a linear rise from ``1 / steps`` to
    1 over the first epochs' steps (Goyal et al. 2017; LDAM-DRW warms up for 5 epochs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["cosine", "step"]
    at: tuple[float, ...] = Field((), description="step: the shares of the epochs after which factors apply")
    factors: tuple[float, ...] = Field((), description="step: the lr factor from each milestone on")
    warmup_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _milestones(self) -> LrSchedule:
        if self.name == "cosine" and (self.at or self.factors):
            raise ValueError("at and factors belong to the step schedule; cosine takes neither")
        if self.name == "step":
            if not self.at or len(self.at) != len(self.factors):
                raise ValueError("the step schedule needs at and factors, one factor per milestone")
            if list(self.at) != sorted(set(self.at)) or not all(0 < a < 1 for a in self.at):
                raise ValueError(f"at must increase strictly within (0, 1); got {list(self.at)}")
            if not all(f > 0 for f in self.factors):
                raise ValueError(f"factors must be positive; got {list(self.factors)}")
        return self

    def factor(self, epoch: int, step: int, epochs: int, steps_per_epoch: int) -> float:
        """The lr factor at ``step`` (0-based) of ``epoch`` (1-based) of ``epochs`` of ``steps_per_epoch``."""
        done = (epoch - 1) * steps_per_epoch + step
        if self.name == "cosine":
            value = 0.5 * (1.0 + math.cos(math.pi * done / (epochs * steps_per_epoch)))
        else:
            value = 1.0
            for share, factor in zip(self.at, self.factors, strict=True):
                if epoch - 1 >= round(share * epochs):
                    value = factor
        warmup = self.warmup_epochs * steps_per_epoch
        return value * min(1.0, (done + 1) / warmup) if warmup else value


class Holdout(BaseModel):
    """Train on the training split minus a held-out part, and evaluate on that part (tuning trials).

    ``share`` of the training classes (a class-disjoint test protocol) or of each class's samples (a test on
    the training classes), drawn with ``seed``: the same part for every method and trial."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    share: float = Field(gt=0, lt=1)
    seed: int = Field(0, ge=0)


class RunConfig(BaseModel):
    """Everything that determines one training + evaluation run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str
    method: str
    label: str
    dataset: str = Field(description="the name under the paper's datasets: a prepared dataset or a variant")
    data: Literal["fashion_mnist", "omniglot"] = Field(description="the prepared dataset it reads")
    label_noise: LabelNoise | None = None
    long_tail: LongTail | None = None
    seed: int = Field(ge=0)
    profile: Literal["smoke", "cpu", "gpu"]
    model: Component
    loss: Component
    optimizer: Component
    sampler: Component
    classifier: Literal["linear", "cosine"] | None = Field(
        None,
        description="classification losses only: the layer that turns embeddings into logits (default linear)",
    )
    epochs: int = Field(ge=1)
    batches_per_epoch: int = Field(ge=1)
    image_size: int = Field(28, ge=8)
    augment: Literal["none", "shift"] = "none"
    views: ViewsSpec | None = Field(None, description="train on random views of each image (contrastive)")
    lr_schedule: LrSchedule | None = Field(
        None, description="the learning rate over training (default constant)"
    )
    train_limit: int | None = Field(None, ge=2, description="train on a fixed random subset of this size")
    channels_last: bool = Field(
        False,
        description="the model's convolutions in torch.channels_last memory format: about 2.3x faster on CPU "
        "at 16 channels (benchmarks/speedups.py), with other rounding, so it changes a run's numbers",
    )
    eval: EvalSpec = EvalSpec()
    holdout: Holdout | None = Field(None, description="a tuning trial: evaluate on held-out training data")

    @model_validator(mode="after")
    def _one_augmentation(self) -> RunConfig:
        if self.views is not None and self.augment != "none":
            raise ValueError(
                f"views and augment {self.augment!r} exclude each other: the views are the augmentation"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_later_defaults(handler(self), {"lr_schedule": None, "channels_last": False})

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"

    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


TUNABLE = ("loss", "optimizer", "sampler")


class TuneSpec(BaseModel):
    """Hyper-parameters picked on held-out training data, with the same number of trials for every method.

    ``grid``: per method, ``{"<component>.<hyper-parameter>": [values]}`` (component: loss, optimizer or
    sampler); a method's trials are the product of its lists. ``metric`` (a key of the run metrics,
    measured on the held-out part) is maximized, or minimized with ``lower_is_better``, averaged over
    ``seeds`` (default: the profile's first seed). A trial trains for ``epochs_share`` of the profile's
    epochs (at least one). ``trials``: at most that many points a method, the first of its grid (set by a
    profile's ``tune_trials``, so that a quick profile runs the tuning code on fewer trials; see ``tune_of``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    lower_is_better: bool = False
    holdout: Holdout = Holdout(share=0.2)
    seeds: list[int] | None = None
    epochs_share: float = Field(1.0, gt=0, le=1)
    grid: dict[str, dict[str, list[Any]]]
    trials: int | None = Field(None, ge=1)

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for method, axes in grid.items():
            if not axes:
                raise ValueError(f"{method}: no hyper-parameter to try")
            for key, values in axes.items():
                component, _, name = key.partition(".")
                if component not in TUNABLE or not name or "." in name or name == "name":
                    raise ValueError(
                        f"{method}: {key!r} is not '<component>.<hyper-parameter>' with component one of "
                        f"{', '.join(TUNABLE)} (the component's name cannot be tuned)"
                    )
                if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
                    raise ValueError(f"{method}: {key}: must be a non-empty list of distinct values")
        return grid

    def points(self, method: str) -> list[dict[str, Any]]:
        """The method's trials: every combination of its values, as ``{"loss.gamma": 64, ...}``."""
        points: list[dict[str, Any]] = [{}]
        for key, values in self.grid[method].items():
            points = [{**point, key: value} for point in points for value in values]
        return points[: self.trials]


def point_label(point: dict[str, Any]) -> str:
    """``loss.gamma=64,optimizer.lr=0.001``: a trial's name in records, MLflow and the report."""
    return ",".join(f"{key}={value}" for key, value in point.items())


class PaperSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    datasets: dict[str, dict[str, Any] | None]
    train: dict[str, Any]
    varies: list[Literal[METHOD_KEYS]] = ["loss"]
    methods: dict[str, dict[str, Any]]
    profiles: dict[str, dict[str, Any]]
    tune: TuneSpec | None = None

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, datasets: dict[str, Any]) -> dict[str, Any]:
        if not datasets:
            raise ValueError("lists no dataset")
        for name, spec in datasets.items():
            source = (spec or {}).get("data", name)
            if source not in DATASETS:
                raise ValueError(
                    f"dataset {name!r}: {'data ' + repr(source) + ' is ' if 'data' in (spec or {}) else ''}"
                    f"not a prepared dataset; accepted: {', '.join(DATASETS)} "
                    "(a variant names its source with data: <dataset>)"
                )
            if not all(c.isalnum() or c == "_" for c in name):
                raise ValueError(f"dataset {name!r}: use letters, digits and underscores only (a stage name)")
        return datasets

    @model_validator(mode="after")
    def _methods_vary_only_what_is_declared(self) -> PaperSection:
        if not self.methods:
            raise ValueError("methods: lists no method")
        allowed = {*self.varies, "label"}
        for name, spec in self.methods.items():
            extra = sorted(set(spec or {}) - allowed)
            if extra:
                raise ValueError(
                    f"methods.{name} sets {extra}, but the paper's methods vary only {self.varies}, so that all "
                    "methods share backbone, data and budget (put shared settings under 'train', or declare "
                    "the compared variable in 'varies')"
                )
            if "loss" not in (spec or {}) and "loss" not in self.train:
                raise ValueError(f"methods.{name} has no 'loss' (nor has 'train')")
        if self.tune is not None:
            missing, unknown = (
                sorted(set(self.methods) - set(self.tune.grid)),
                sorted(set(self.tune.grid) - set(self.methods)),
            )
            if missing or unknown:
                raise ValueError(
                    f"tune.grid must list every method and only those: missing {missing}, unknown {unknown}"
                )
            counts = {method: len(self.tune.points(method)) for method in self.methods}
            if len(set(counts.values())) > 1:
                raise ValueError(
                    f"tune.grid gives the methods different numbers of trials {counts}: each method must get "
                    "the same number, so that no method is tuned harder than another"
                )
        return self


def load_paper_section(paper: str, params_path: str | Path = "params.yaml") -> PaperSection:
    """The validated ``paper`` section of params.yaml."""
    _, raw = load_params(params_path)
    if paper not in raw:
        raise ConfigError(f"{params_path}: no section {paper!r} for this paper")
    try:
        return PaperSection.model_validate(raw[paper])
    except ValidationError as err:
        raise ConfigError(format_validation_error(f"{params_path}: {paper}", err)) from err


def resolve_runs(
    paper: str, params_path: str | Path = "params.yaml", profile: str | None = None, check: bool = True
) -> list[RunConfig]:
    """All runs of ``paper`` under ``profile`` (default: params.yaml's), validated, and build-checked unless
    ``check`` is false (for a caller that reads names only)."""
    params, _ = load_params(params_path)
    profile = profile or params.profile
    if profile not in PROFILES:
        raise ConfigError(f"{params_path}: profile {profile!r} unknown; accepted: {', '.join(PROFILES)}")
    section = load_paper_section(paper, params_path)
    if profile not in section.profiles:
        raise ConfigError(
            f"{params_path}: {paper}.profiles has no {profile!r}; it has {sorted(section.profiles)}"
        )
    budget = dict(section.profiles[profile])
    seeds = budget.pop("seeds", None)
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(
            f"{params_path}: {paper}.profiles.{profile}.seeds must be a non-empty list of integers"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{params_path}: {paper}.profiles.{profile}.seeds has duplicates: {seeds}")
    _profile_tune_trials(budget.pop("tune_trials", None), f"{params_path}: {paper}.profiles.{profile}")

    runs = []
    for dataset, dataset_overrides in section.datasets.items():
        for method, method_spec in section.methods.items():
            merged = deep_merge(
                deep_merge(deep_merge(section.train, dataset_overrides or {}), budget), method_spec
            )
            merged.setdefault("label", method)
            merged.setdefault("data", dataset)
            where = f"{params_path}: {paper} (dataset {dataset}, method {method}, profile {profile})"
            if "epochs_share" in merged:
                share, epochs = merged.pop("epochs_share"), merged.get("epochs")
                if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
                    raise ConfigError(f"{where}: epochs_share must be a positive number; got {share!r}")
                if isinstance(epochs, int):
                    merged["epochs"] = max(1, round(share * epochs))
            for index, seed in enumerate(seeds):
                fields = {
                    "paper": paper,
                    "method": method,
                    "dataset": dataset,
                    "seed": seed,
                    "profile": profile,
                }
                try:
                    run = RunConfig.model_validate({**merged, **fields})
                except ValidationError as err:
                    raise ConfigError(format_validation_error(where, err)) from err
                if check and index == 0:  # the seed builds nothing: one check for all seeds
                    check_components(run, where)
                runs.append(run)
    return runs


def apply_point(run: RunConfig, point: dict[str, Any], **fields: Any) -> RunConfig:
    """``run`` with a tuning point's hyper-parameters (and ``fields``) set, validated and build-checked."""
    data = {**run.model_dump(mode="json"), **fields}
    for key, value in point.items():
        component, _, name = key.partition(".")
        data[component] = {**data[component], name: value}
    where = f"{run.paper} (dataset {run.dataset}, method {run.method}, tune point {point_label(point)})"
    try:
        tuned = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(where, err)) from err
    check_components(tuned, where)
    return tuned


def expected_config(run: RunConfig, record: dict[str, Any], tune: TuneSpec | None) -> RunConfig | None:
    """The config that ``record`` (a reported run of ``run``'s dataset, method and seed) must have under the
    current params: ``run`` itself, or with the point its tuning chose; ``None`` if the record's tuning no
    longer fits (the paper's ``tune`` was added, removed, or its grid or metric changed)."""
    tuning = record.get("tuning")
    if tune is None or tuning is None:
        return run if tune is None and tuning is None else None
    tried = [trial["point"] for trial in tuning["trials"]]
    if tuning["metric"] != tune.metric or tried != tune.points(run.method) or tuning["chosen"] not in tried:
        return None
    return apply_point(run, tuning["chosen"])


def _profile_tune_trials(value: Any, where: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{where}.tune_trials must be a positive integer (trials a method); got {value!r}")
    return value


def tune_of(
    paper: str, params_path: str | Path = "params.yaml", profile: str | None = None
) -> TuneSpec | None:
    """The paper's ``tune`` under ``profile`` (default: params.yaml's): with the profile's ``tune_trials``, each
    method tries only the first points of its grid (the published value first, by convention)."""
    section = load_paper_section(paper, params_path)
    if section.tune is None:
        return None
    profile = profile or load_params(params_path)[0].profile
    where = f"{params_path}: {paper}.profiles.{profile}"
    trials = _profile_tune_trials((section.profiles.get(profile) or {}).get("tune_trials"), where)
    return section.tune if trials is None else section.tune.model_copy(update={"trials": trials})


def resolve_trials(
    paper: str, params_path: str | Path = "params.yaml", profile: str | None = None
) -> list[tuple[RunConfig, dict[str, Any]]]:
    """The tuning trials of ``paper`` (empty without ``tune``): ``(run, point)`` for every dataset, method,
    point of the method's grid and tuning seed; each run holds out part of the training data, on which it is
    evaluated (and skips Omniglot's one-shot runs, which are test data)."""
    tune = tune_of(paper, params_path, profile)
    if tune is None:
        return []
    runs = resolve_runs(paper, params_path, profile)
    seeds = tune.seeds or [runs[0].seed]
    templates = {(run.dataset, run.method): run for run in runs}
    trials = []
    for run in templates.values():
        evaluation = run.eval.model_copy(update={"one_shot_runs": False}).model_dump(mode="json")
        for point in tune.points(run.method):
            for seed in seeds:
                trial = apply_point(
                    run,
                    point,
                    seed=seed,
                    holdout=tune.holdout.model_dump(),
                    eval=evaluation,
                    epochs=max(1, round(tune.epochs_share * run.epochs)),
                )
                trials.append((trial, point))
    return trials


def check_components(run: RunConfig, where: str) -> None:
    """Build the cheap components and check the others' names and keys, so errors surface before compute."""
    import torch

    from common import losses, models, optim, samplers

    for key, component, engine_args in (
        ("sampler", run.sampler, ENGINE_SAMPLER_ARGS),
        ("loss", run.loss, ENGINE_LOSS_ARGS),
    ):
        reserved = engine_args & set(component.kwargs)
        if reserved:
            raise ConfigError(f"{where}: {key}: {sorted(reserved)} are set by the engine, not in params")

    def check_loss() -> None:
        losses.LOSSES.check(run.loss.name, run.loss.kwargs, ENGINE_LOSS_ARGS)
        logits = losses.reads_logits(run.loss.name)
        if run.views is not None and run.views.labels == "instance" and logits:
            raise ConfigError(
                f"{where}: views: labels 'instance' give every image its own label, but loss "
                f"{run.loss.name!r} trains a classifier over the dataset's classes; use labels 'class'"
            )
        if run.eval.corruptions is not None and not logits and run.eval.probe is None:
            raise ConfigError(
                f"{where}: eval.corruptions needs something that classifies: a classification loss, or "
                "eval.probe for an embedding loss"
            )
        if run.classifier is not None and not logits:
            raise ConfigError(
                f"{where}: classifier: {run.classifier!r} is set, but loss {run.loss.name!r} reads embeddings, "
                "not logits; a classifier applies to classification losses only"
            )
        model = built["model"]
        losses.build(run.loss.name, **run.loss.kwargs, **engine_loss_kwargs(run, model, class_counts=[2, 1]))

    built: dict[str, Any] = {}
    checks = [
        ("model", lambda: built.setdefault("model", models.build(run.model.name, **run.model.kwargs))),
        ("loss", check_loss),
        (
            "optimizer",
            lambda: optim.build(
                run.optimizer.name, [torch.nn.Parameter(torch.zeros(1))], **run.optimizer.kwargs
            ),
        ),
        (
            "sampler",
            lambda: samplers.SAMPLERS.check(run.sampler.name, run.sampler.kwargs, ENGINE_SAMPLER_ARGS),
        ),
    ]
    for key, check in checks:
        try:
            check()
        except BuildError as err:
            raise ConfigError(f"{where}: {key}: {err}") from err


def engine_loss_kwargs(run: RunConfig, model: Any, class_counts: list[int]) -> dict[str, Any]:
    """The engine's arguments that the run's loss takes: a margin/proxy head gets the number of training
    classes and the model's embedding size, a loss for imbalanced data (LDAM, re-weighting) the training
    samples per class; a pair loss gets nothing."""
    from common import losses

    supplied = {
        "num_classes": len(class_counts),
        "embedding_dim": model.embedding_dim,
        "class_counts": list(class_counts),
    }
    accepted = losses.LOSSES.accepted_params(run.loss.name)
    return {k: v for k, v in supplied.items() if k in accepted}


def logged_params(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config (``RunConfig.model_dump(mode="json")``, as its record holds it) as MLflow params, each
    component's (loss, optimizer, sampler, model) defaults filled in from its signature, so a run shows every
    hyper-parameter it used, not only those params.yaml sets (a Multi-Similarity run shows ``loss.beta`` and
    ``loss.base`` at 40 and 0.5 even where left unset)."""
    import copy
    import inspect

    from common import losses, optim, samplers
    from common.models.backbones import MODELS

    params = copy.deepcopy(config)
    components = (
        ("loss", losses.LOSSES, ENGINE_LOSS_ARGS),
        ("optimizer", optim.OPTIMIZERS, frozenset()),
        (
            "sampler",
            samplers.SAMPLERS,
            ENGINE_SAMPLER_ARGS,
        ),  # the engine's values: params already (seed, ...)
        ("model", MODELS, frozenset()),
    )
    for key, registry, engine_args in components:
        component = params.get(key)
        if not isinstance(component, dict) or component.get("name") not in registry:
            continue
        for name, default in registry.accepted_params(component["name"]).items():
            if name not in component and name not in engine_args and default is not inspect.Parameter.empty:
                component[name] = list(default) if isinstance(default, tuple) else default
    return params
