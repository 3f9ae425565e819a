"""Settings checked against their declared type and range, so that a bad value fails at load with one clear line.

A setting's type is its annotation (a dataclass field, or a keyword of a view strategy's or objective's
``__init__``): ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``tuple[int, ...]`` / ``tuple[float, float]``,
``X | None`` and unions of these; unannotated settings and other types are not checked. Its range is optional
metadata: ``min``/``max`` (inclusive), ``above`` (exclusive lower bound), ``choices`` and ``min_items``; a dataclass
field carries it as ``field(metadata=...)`` (see :func:`ranged`). YAML quirks handled explicitly: ``bool`` is not
accepted where a number is expected (``true`` is not 1), an integer is accepted where a float is, and ``1e-3`` (read
by YAML 1.1 as text) is refused with the spelling that works (``1.0e-3``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any, Literal, Mapping, Union

FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class SettingError(ValueError):
    """A value that does not fit its setting's type or range; the message says what is allowed."""


def ranged(default: Any, **bounds: Any) -> Any:
    """A dataclass field with a range: ``epochs: int = ranged(100, min=1)``."""
    return dataclasses.field(default=default, metadata=bounds)


def _allowed(annotation: Any, bounds: Mapping[str, Any], plural: bool = False) -> str:
    """What a setting accepts, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        options = [_allowed(a, bounds) for a in args if a is not type(None)]
        return " or ".join(options) + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            item = _allowed(args[0], bounds, plural=True) if args else "values"
            least = bounds.get("min_items", 0)
            return f"a list of {item}" + (f" (at least {least})" if least else "")
        return f"a list of {len(args)} values ({', '.join(_allowed(a, {}) for a in args)})"
    if "choices" in bounds:
        return "one of " + ", ".join(str(c) for c in bounds["choices"])
    words = {bool: ("true or false", "true or false values"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("a text", "texts")}
    word = words[annotation][plural] if annotation in words else None
    if word is None:
        return getattr(annotation, "__name__", str(annotation))
    limits = []
    if "min" in bounds:
        limits.append(f">= {bounds['min']}")
    if "above" in bounds:
        limits.append(f"> {bounds['above']}")
    if "max" in bounds:
        limits.append(f"<= {bounds['max']}")
    return word + (" " + " and ".join(limits) if limits else "")


def _fits(value: Any, annotation: Any, bounds: Mapping[str, Any]) -> tuple[bool, Any]:
    """(whether ``value`` fits, the value to keep: lists become tuples where a tuple is declared)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is typing.Any:
        return True, value
    if annotation is type(None) or annotation is None:
        return value is None, value
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}, value
    if origin in (Union, types.UnionType):
        for arm in args:
            ok, kept = _fits(value, arm, bounds if arm is not type(None) else {})
            if ok:
                return True, kept
        return False, value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = list(value)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            arms = [args[0] if args else Any] * len(items)
            if len(items) < bounds.get("min_items", 0):
                return False, value
        else:
            if len(items) != len(args):
                return False, value
            arms = list(args)
        kept = []
        for item, arm in zip(items, arms):
            ok, item = _fits(item, arm, bounds)
            if not ok:
                return False, value
            kept.append(item)
        return True, (tuple(kept) if origin is tuple else kept)
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation in (int, float):
        numeric = isinstance(value, int) or (annotation is float and isinstance(value, float))
        if isinstance(value, bool) or not numeric:
            return False, value
        if value != value:  # NaN
            return False, value
        if "min" in bounds and value < bounds["min"] or "max" in bounds and value > bounds["max"]:
            return False, value
        if "above" in bounds and not value > bounds["above"]:
            return False, value
        return True, value
    if annotation is str:
        if not isinstance(value, str):
            return False, value
        return ("choices" not in bounds or value in bounds["choices"]), value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value  # an annotation this checker does not read (e.g. a callable type)


def check_setting(key: str, value: Any, annotation: Any, bounds: Mapping[str, Any] | None = None) -> Any:
    """``value`` (lists as tuples where a tuple is declared) if it fits ``annotation`` and ``bounds``; else raise
    :class:`SettingError` naming the key, the value and what is allowed."""
    bounds = bounds or {}
    ok, kept = _fits(value, annotation, bounds)
    if ok:
        return kept
    hint = ""
    if isinstance(value, str) and FLOAT_TEXT.fullmatch(value):
        hint = " (YAML reads a number such as 1e-3 as text: write it with a dot, 1.0e-3)"
    shown = json.dumps(value, default=str)
    raise SettingError(f"{key}: {shown} is not allowed; give {_allowed(annotation, bounds)}{hint}")


def dataclass_annotations(cls: type) -> dict[str, Any]:
    """Field name → resolved annotation of dataclass ``cls`` (string annotations evaluated)."""
    return typing.get_type_hints(cls)


def parameter_annotations(cls: type) -> dict[str, Any]:
    """Keyword → resolved annotation of the ``__init__`` of ``cls`` and of the classes its ``**kwargs`` reach."""
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            try:
                found = typing.get_type_hints(vars(klass)["__init__"])
            except (NameError, TypeError):  # an annotation that cannot be evaluated: leave those keywords unchecked
                found = {}
            for name, annotation in found.items():
                hints.setdefault(name, annotation)
    return hints
