"""``params.yaml``: its schema, the resolution of one paper's section into runs, and validation.

A paper's section has four parts that are merged, in this order, into one config per run:

    train                 what every method of the paper shares (backbone, optimizer, sampler, eval)
    datasets.<dataset>    what differs per dataset (batch composition, image size)
    profiles.<profile>    the budget: seeds, epochs, batches per epoch (smoke / cpu / gpu)
    methods.<method>      what the compared methods differ in (the loss and its hyper-parameters)

Methods may only set ``loss`` (and a ``label``), so that within a paper's table every method has the
same backbone, data, augmentation and budget: the fair-comparison rule of the replication standard.
Every resolved run is validated, and its components are built once on the spot, before any
training starts: a typo or an out-of-range value fails at once with the key path in the message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.params import ConfigError, deep_merge, format_validation_error, load_params
from common.registry import BuildError

PROFILES = ("smoke", "cpu", "gpu")
# Sampler arguments the engine fills in from the data, the run and the process group.
ENGINE_SAMPLER_ARGS = frozenset({"labels", "seed", "rank", "world_size", "batches_per_epoch"})
DATASETS = ("fashion_mnist", "omniglot")


class Component(BaseModel):
    """``{name: ..., **hyperparams}``: something built by name through a registry."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    chunk_size: int = Field(1024, ge=1)
    max_items: int | None = Field(None, ge=2, description="evaluate on a fixed random subset of this size")
    histogram_pairs: int = Field(2000, ge=10, description="embeddings used for the similarity histograms")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must be a non-empty list of integers >= 1")
        return tuple(sorted(set(ks)))


class RunConfig(BaseModel):
    """Everything that determines one training + evaluation run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str
    method: str
    label: str
    dataset: Literal["fashion_mnist", "omniglot"]
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
    datasets: dict[str, dict[str, Any]]
    train: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    profiles: dict[str, dict[str, Any]]

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, datasets: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(datasets) - set(DATASETS))
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; accepted: {', '.join(DATASETS)}")
        if not datasets:
            raise ValueError("lists no dataset")
        return datasets

    @field_validator("methods")
    @classmethod
    def _methods_set_only_the_loss(cls, methods: dict[str, Any]) -> dict[str, Any]:
        if not methods:
            raise ValueError("lists no method")
        for name, spec in methods.items():
            extra = sorted(set(spec or {}) - {"loss", "label"})
            if extra:
                raise ValueError(
                    f"method {name!r} sets {extra}: a method may set only 'loss' and 'label' so that all methods "
                    "share backbone, data and budget (put shared settings under 'train')"
                )
            if "loss" not in (spec or {}):
                raise ValueError(f"method {name!r} has no 'loss'")
        return methods


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

    checks = [
        ("model", lambda: models.build(run.model.name, **run.model.kwargs)),
        ("loss", lambda: losses.build(run.loss.name, **run.loss.kwargs)),
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
    reserved = ENGINE_SAMPLER_ARGS & set(run.sampler.kwargs)
    if reserved:
        raise ConfigError(f"{where}: sampler: {sorted(reserved)} are set by the engine, not in params")
