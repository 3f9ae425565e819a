"""Registries for view strategies, objectives and named methods, and the plugin entry point.

Everything registers by decorator; a duplicate name is an error. Third-party packages plug in through entry-point
groups: each entry point names a module (or an object inside one) whose import registers its pieces. Method plugins
use ``patchbench.methods`` (views, objectives, methods); evaluation plugins use ``patchbench.evaluations``, read by
the evaluation registry of ``patchbench.benchmark.evaluations``, which is built on the same :class:`Registry`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

ENTRY_POINT_GROUP = "patchbench.methods"

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
            obj.name = name
            return obj
        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} '{name}' is already registered (by {self._origin[name]})")
        self._items[name] = obj
        self._origin[name] = getattr(obj, "__module__", None) or type(obj).__module__

    def get(self, name: str) -> T:
        load_plugins(self.plugin_group)
        if not isinstance(name, str) or name not in self._items:
            raise RegistryError(f"unknown {self.kind} '{name}'.{did_you_mean(name, self._items)} "
                                f"Known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        load_plugins(self.plugin_group)
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_plugins(self.plugin_group)
        return name in self._items

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


VIEWS: Registry[type] = Registry("view strategy")
OBJECTIVES: Registry[type] = Registry("objective")
METHODS: Registry[MethodSpec] = Registry("method")

register_view = VIEWS.register
register_objective = OBJECTIVES.register


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a named method; its view and objective must be registered under the names it gives."""
    METHODS.add(spec.name, spec)
    return spec


_loaded_groups: set[str] = set()


def load_plugins(group: str = ENTRY_POINT_GROUP) -> None:
    """Import every entry point of ``group`` once, so that plugins register themselves."""
    if group in _loaded_groups:
        return
    _loaded_groups.add(group)
    for ep in entry_points(group=group):
        ep.load()
