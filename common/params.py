"""The top level of ``params.yaml``: reading it, its schema, and the error every config problem raises; and
the papers there are (``all_papers``: the folders of ``papers/`` with a ``paper.yaml``).

Kept apart from :mod:`common.config` (the paper sections and their runs) so that a stage that reads only the
top level (``prepare-<dataset>``) does not depend on the building blocks the runs name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import UserError

PAPERS_ROOT = Path(__file__).resolve().parent.parent / "papers"


def all_papers(root: Path = PAPERS_ROOT) -> list[str]:
    """Every paper's slug: the folders of ``papers/`` with a ``paper.yaml``."""
    return sorted(p.parent.name for p in root.glob("*/paper.yaml"))


class ConfigError(UserError, ValueError):
    """params.yaml (or a paper's files) says something that cannot run; the message names the key."""


class Params(BaseModel):
    """The top level of params.yaml."""

    model_config = ConfigDict(extra="allow")
    profile: Literal["smoke", "cpu", "gpu"] = "cpu"
    launcher: str = "python"
    data: dict[str, dict[str, Any]] = {}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def format_validation_error(where: str, err: ValidationError) -> str:
    lines = [f"{where}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {e['msg']}{got_text}")
    return "\n".join(lines)


# libyaml's loader where PyYAML has it: the same documents, five times faster than the pure-Python one
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_parsed: dict[bytes, Any] = {}  # a stage reads params.yaml a dozen times: parse each content once


def _parse(path: Path) -> Any:
    text = path.read_bytes()
    if text not in _parsed:
        _parsed.clear()
        _parsed[text] = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    return copy.deepcopy(_parsed[text])  # callers may change what they get


def load_params(path: str | Path = "params.yaml") -> tuple[Params, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the repository root, or pass the params file)")
    try:
        raw = _parse(path) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw), raw
    except ValidationError as err:
        raise ConfigError(format_validation_error(str(path), err)) from err
