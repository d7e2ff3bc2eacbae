"""One registry mechanism for everything built by name from a config mapping.

Each kind of building block (losses, models, samplers, ...) owns one ``Registry``. A class or
factory registers under a name; ``build(name, **hyperparams)`` checks the name and the keyword
arguments against the constructor's signature before calling it, so a typo in ``params.yaml``
fails at build time with the list of what is accepted, not deep inside training.

Range checks (a negative margin, a temperature of zero) belong to the constructor itself: it
raises ``ValueError`` naming the argument, which ``build`` re-raises as ``BuildError`` with the
registry's kind and the name in front.

A registry given a ``package`` finds a name it does not hold yet in the module of that name
(``"circle"`` -> ``common.losses.circle``) and imports it on first use. A run then imports only the
building blocks its config names, which is what lets each pipeline stage depend on exactly that code
(``common.pipeline``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import pkgutil
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

from common.errors import UserError

T = TypeVar("T")


class BuildError(UserError, ValueError):
    """A name or hyper-parameter that a registry cannot build."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(where: str, value: Any, default: Any) -> None:
    """A hyper-parameter whose default is a number must be one (PyYAML reads ``1e-3``, without a dot, as a
    string), and no number may be infinite or NaN (a learning rate of ``.inf`` trains nothing)."""
    if _is_number(default) and isinstance(value, str):
        raise BuildError(
            f"{where} must be a number (its default is {default!r}); got the string {value!r} (YAML reads "
            "1e-3 as a string: write 1.0e-3)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise BuildError(f"{where} must be a finite number; got {value!r}")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Callable[..., T]] = {}

    def module_of(self, name: str) -> str | None:
        """The module that registers ``name`` by the naming rule (``None`` without a package or module)."""
        if self.package is None or not isinstance(name, str) or not name.isidentifier():
            return None
        module = f"{self.package}.{name}"
        return module if importlib.util.find_spec(module) is not None else None

    def _load(self, name: str) -> None:
        if name not in self._entries and (module := self.module_of(name)) is not None:
            importlib.import_module(module)

    def _load_all(self) -> None:
        if self.package is not None:
            for info in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                self._load(info.name)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Every name, those of modules not imported yet included."""
        self._load_all()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load(name)  # type: ignore[arg-type]
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        self._load(name)
        if name not in self._entries:
            raise BuildError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names())}")
        return self._entries[name]

    def accepted_params(self, name: str) -> dict[str, Any]:
        """Keyword arguments of ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
        signature = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def check(self, name: str, hyperparams: dict[str, Any], supplied_later: Collection[str] = ()) -> None:
        """Raise ``BuildError`` if ``name`` is unknown, or ``hyperparams`` has keys it does not accept or lacks
        a required one (other than ``supplied_later``, which the caller fills in); the message lists what is
        accepted."""
        accepted = self.accepted_params(name)
        listed = ", ".join(
            f"{k}={v!r}" if v is not inspect.Parameter.empty else k for k, v in accepted.items()
        )
        unknown = sorted(set(hyperparams) - set(accepted))
        if unknown:
            raise BuildError(
                f"{self.kind} {name!r} does not accept {', '.join(map(repr, unknown))}; accepted: {listed or 'none'}"
            )
        missing = [
            k
            for k, v in accepted.items()
            if v is inspect.Parameter.empty and k not in hyperparams and k not in supplied_later
        ]
        if missing:
            raise BuildError(f"{self.kind} {name!r} needs {', '.join(missing)}; accepted: {listed}")
        for key, value in hyperparams.items():
            _check_number(f"{self.kind} {name!r}: {key}", value, accepted.get(key))

    def build(self, name: str, /, **hyperparams: Any) -> T:
        self.check(name, hyperparams)
        try:
            return self.get(name)(**hyperparams)
        except (TypeError, ValueError) as err:
            raise BuildError(f"{self.kind} {name!r}: {err}") from err
