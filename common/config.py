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
it in ``varies`` (default ``[loss]``), so the exception is declared where everyone sees it.
Every resolved run is validated, and its components are built once on the spot, before any
training starts: a typo or an out-of-range value fails at once with the key path in the message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.params import ConfigError, deep_merge, format_validation_error, load_params
from common.registry import BuildError

PROFILES = ("smoke", "cpu", "gpu")
# Sampler arguments the engine fills in from the data, the run and the process group.
ENGINE_SAMPLER_ARGS = frozenset({"labels", "seed", "rank", "world_size", "batches_per_epoch"})
# Loss arguments the engine fills in from the model and the training labels (margin/proxy heads).
ENGINE_LOSS_ARGS = frozenset({"num_classes", "embedding_dim"})
DATASETS = ("fashion_mnist", "omniglot")
# What a paper may declare that its methods vary (see ``varies``).
METHOD_KEYS = ("loss", "sampler")


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


class EvalSpec(BaseModel):
    """What is measured on the test split after training. Retrieval always; the rest when asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    chunk_size: int = Field(1024, ge=1)
    max_items: int | None = Field(None, ge=2, description="evaluate on a fixed random subset of this size")
    histogram_pairs: int = Field(2000, ge=10, description="embeddings used for the similarity histograms")
    fars: tuple[float, ...] = Field((), description="verification: TAR at these FARs over all test pairs")
    few_shot: FewShotSpec | None = None
    one_shot_runs: bool = Field(False, description="Omniglot only: the 20 official one-shot runs")

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


class RunConfig(BaseModel):
    """Everything that determines one training + evaluation run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str
    method: str
    label: str
    dataset: str = Field(description="the name under the paper's datasets: a prepared dataset or a variant")
    data: Literal["fashion_mnist", "omniglot"] = Field(description="the prepared dataset it reads")
    label_noise: LabelNoise | None = None
    seed: int = Field(ge=0)
    profile: Literal["smoke", "cpu", "gpu"]
    model: Component
    loss: Component
    optimizer: Component
    sampler: Component
    epochs: int = Field(ge=1)
    batches_per_epoch: int = Field(ge=1)
    image_size: int = Field(28, ge=8)
    augment: Literal["none", "shift"] = "none"
    train_limit: int | None = Field(None, ge=2, description="train on a fixed random subset of this size")
    eval: EvalSpec = EvalSpec()

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"

    def config_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class PaperSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    datasets: dict[str, dict[str, Any] | None]
    train: dict[str, Any]
    varies: list[Literal["loss", "sampler"]] = ["loss"]
    methods: dict[str, dict[str, Any]]
    profiles: dict[str, dict[str, Any]]

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
            if "loss" not in (spec or {}):
                raise ValueError(f"methods.{name} has no 'loss'")
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
    paper: str, params_path: str | Path = "params.yaml", profile: str | None = None
) -> list[RunConfig]:
    """All runs of ``paper`` under ``profile`` (default: params.yaml's), validated and build-checked."""
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

    runs = []
    for dataset, dataset_overrides in section.datasets.items():
        for method, method_spec in section.methods.items():
            merged = deep_merge(
                deep_merge(deep_merge(section.train, dataset_overrides or {}), budget), method_spec
            )
            merged.setdefault("label", method)
            merged.setdefault("data", dataset)
            for seed in seeds:
                where = f"{params_path}: {paper} (dataset {dataset}, method {method}, profile {profile})"
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
                check_components(run, where)
                runs.append(run)
    return runs


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
        model = models.build(run.model.name, **run.model.kwargs)
        losses.build(run.loss.name, **run.loss.kwargs, **engine_loss_kwargs(run, model, num_classes=2))

    checks = [
        ("model", lambda: models.build(run.model.name, **run.model.kwargs)),
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


def engine_loss_kwargs(run: RunConfig, model: Any, num_classes: int) -> dict[str, int]:
    """The engine's arguments that the run's loss takes: a margin/proxy head gets the number of training
    classes and the model's embedding size; a pair loss gets nothing."""
    from common import losses

    supplied = {"num_classes": num_classes, "embedding_dim": model.embedding_dim}
    accepted = losses.LOSSES.accepted_params(run.loss.name)
    return {k: v for k, v in supplied.items() if k in accepted}
