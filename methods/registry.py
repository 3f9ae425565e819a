"""Registries for view strategies, objectives and named methods, and the plugin entry point.

Everything registers by decorator; a duplicate name is an error. Third-party packages plug in through entry-point
groups: each entry point names a module (or an object inside one) whose import registers its pieces. Method plugins
use ``patchbench.methods`` (views, objectives, methods); evaluation plugins use ``patchbench.evaluations``, read by
the evaluation registry of ``patchbench.benchmark.evaluations``, which is built on the same :class:`Registry`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

if TYPE_CHECKING:
    from .base import Objective, ViewStrategy

ENTRY_POINT_GROUP = "patchbench.methods"

logger = logging.getLogger(__name__)

T = TypeVar("T")


def did_you_mean(name: str, known) -> str:
    """`` Did you mean 'x'?`` for the closest of ``known`` to ``name`` (difflib), or an empty string."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


class RegistryError(ValueError):
    """A user error about a registered name (unknown or duplicate); the CLI prints it without a traceback."""


class Registry(Generic[T]):
    """A name → object map with decorator registration, duplicate checks and did-you-mean lookups."""

    def __init__(self, kind: str, plugin_group: str = ENTRY_POINT_GROUP):
        self.kind = kind
        self.plugin_group = plugin_group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register under ``name`` and set the class's ``name`` attribute to it."""
        def decorator(obj: T) -> T:
            self.add(name, obj)
            setattr(obj, "name", name)  # the registered classes read their name (e.g. in error messages)
            return obj
        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} '{name}' is already registered (by {self._origin[name]})")
        self._items[name] = obj
        self._origin[name] = getattr(obj, "__module__", None) or type(obj).__module__

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name's error also names the plugins that failed to import."""
        failures = load_plugins(self.plugin_group)
        if not isinstance(name, str) or name not in self._items:
            broken = "".join(f". {failure}" for failure in failures)
            raise RegistryError(f"unknown {self.kind} '{name}'.{did_you_mean(name, self._items)} "
                                f"Known: {', '.join(sorted(self._items))}{broken}")
        return self._items[name]

    def names(self) -> list[str]:
        """The registered names, sorted; logs a warning for each plugin of the group that failed to import."""
        self._report(load_plugins(self.plugin_group))
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._report(load_plugins(self.plugin_group))
        return name in self._items

    @staticmethod
    def _report(failures: list[str]) -> None:
        for failure in failures:
            logger.warning("%s", failure)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass(frozen=True)
class MethodSpec:
    """A named method: the default pairing of a view strategy and an objective, with its paper's settings.

    Each of the three mappings lists only what differs from the defaults it overrides: ``view_defaults`` and
    ``objective_defaults`` are keyword arguments of the two classes (whose signatures hold the defaults),
    ``optim_defaults`` keys of the trainer's ``patchbench.benchmark.config.OptimConfig`` (docs/plugins.md).
    """

    name: str
    view: str
    objective: str
    paper: str
    view_defaults: dict[str, Any] = field(default_factory=dict)
    objective_defaults: dict[str, Any] = field(default_factory=dict)
    optim_defaults: dict[str, Any] = field(default_factory=dict)


VIEWS: Registry[type[ViewStrategy]] = Registry("view strategy")
OBJECTIVES: Registry[type[Objective]] = Registry("objective")
METHODS: Registry[MethodSpec] = Registry("method")

register_view = VIEWS.register
register_objective = OBJECTIVES.register


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a named method; its view and objective must be registered under the names it gives."""
    METHODS.add(spec.name, spec)
    return spec


_loaded_groups: set[str] = set()
_plugin_failures: dict[str, list[str]] = {}


def load_plugins(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import every entry point of ``group`` once, so that plugins register themselves; return one line per entry
    point whose import raised, naming it and its error (kept, so every later read of a registry reports it)."""
    if group not in _loaded_groups:
        _loaded_groups.add(group)
        failures = _plugin_failures.setdefault(group, [])
        for ep in entry_points(group=group):
            try:
                ep.load()
            except Exception as err:  # a broken plugin must not hide the others, nor the built-ins
                failures.append(f"plugin '{ep.name}' ({ep.value}, entry point group {group}) failed to import and "
                                f"registers nothing: {type(err).__name__}: {err}. Fix it or uninstall its package")
    return _plugin_failures.get(group, [])
