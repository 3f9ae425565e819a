"""Build a method from its name and overrides, checking every name and keyword before anything runs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .backbone import VIT_SIZES, BackboneConfig
from .base import Objective, SSLMethod, ViewStrategy
from .registry import METHODS, OBJECTIVES, VIEWS, RegistryError, did_you_mean
from .typecheck import SettingError, check_setting, parameter_annotations

# Constructor arguments that build_method passes itself (from the backbone and the dataset): not settings.
VIEW_BUILD_ARGUMENTS = frozenset({"image_size", "patch_size", "mean", "std"})
OBJECTIVE_BUILD_ARGUMENTS = frozenset({"embed_dim"})


@dataclass(frozen=True)
class MethodChoice:
    """A method cell: a named method, optionally with another view strategy or objective (an ablation)."""

    method: str
    view: str | None = None
    objective: str | None = None
    view_kwargs: dict[str, Any] = field(default_factory=dict)
    objective_kwargs: dict[str, Any] = field(default_factory=dict)


def _keyword_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword-only ``__init__`` parameters, following ``**kwargs`` up the class hierarchy (subclass first)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"]).parameters
        for name, p in signature.items():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                params.setdefault(name, p)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
            break
    return params


def _args_section(docstring: str | None) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section: name → text, continuation lines joined."""
    entries: dict[str, str] = {}
    lines = inspect.cleandoc(docstring or "").splitlines()
    if "Args:" not in lines:
        return entries
    name = None
    for line in lines[lines.index("Args:") + 1:]:
        if line.strip() and not line.startswith("    "):
            break
        if line.startswith("    ") and not line.startswith("     ") and ":" in line:
            name, text = line.strip().split(":", 1)
            entries[name] = text.strip()
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def setting_docs(cls: type) -> dict[str, str]:
    """The documentation of each keyword setting of ``cls``: the ``Args:`` entries of its docstring and of the
    classes its ``**kwargs`` reach, the subclass's entry first."""
    docs: dict[str, str] = {}
    for klass in cls.__mro__:
        for name, text in _args_section(vars(klass).get("__doc__")).items():
            docs.setdefault(name, text)
    skip = VIEW_BUILD_ARGUMENTS | OBJECTIVE_BUILD_ARGUMENTS
    return {name: docs.get(name, "") for name in _keyword_parameters(cls) if name not in skip}


def _complete_kwargs(cls: type, kwargs: dict[str, Any], what: str, skip: frozenset[str]) -> dict[str, Any]:
    """``kwargs`` checked against ``cls.__init__`` (names, and values against the annotations) and completed with
    its defaults, so a config is fully resolved."""
    if not isinstance(kwargs, dict):
        raise RegistryError(f"the settings of {what} must be a mapping, e.g. {{name: value}}; got {kwargs!r}")
    params = {n: p for n, p in _keyword_parameters(cls).items() if n not in skip}
    annotations = parameter_annotations(cls)
    for key in kwargs:
        if key not in params:
            raise RegistryError(f"{what} has no setting '{key}'.{did_you_mean(key, params)} "
                                f"Settings: {', '.join(params)}")
        if key in annotations:
            try:
                check_setting(key, kwargs[key], annotations[key])
            except SettingError as err:
                raise RegistryError(f"{what}: {err}") from None
    return {name: kwargs.get(name, p.default) for name, p in params.items()}


def resolve_choice(choice: MethodChoice) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(view name, view kwargs, objective name, objective kwargs) with the method's paper defaults filled in.

    A method's defaults for its own view (objective) apply only when that view (objective) is kept.
    """
    spec = METHODS.get(choice.method)
    view = choice.view or spec.view
    objective = choice.objective or spec.objective
    for component, kwargs in (("view", choice.view_kwargs), ("objective", choice.objective_kwargs)):
        if not isinstance(kwargs, dict):
            raise RegistryError(f"{component}_kwargs of method '{choice.method}' must be a mapping of settings, "
                                f"e.g. {{name: value}}; got {kwargs!r}")
    view_cls, objective_cls = VIEWS.get(view), OBJECTIVES.get(objective)
    view_kwargs = {**(spec.view_defaults if view == spec.view else {}), **choice.view_kwargs}
    objective_kwargs = {**(spec.objective_defaults if objective == spec.objective else {}),
                        **choice.objective_kwargs}
    view_kwargs = _complete_kwargs(view_cls, view_kwargs, f"view strategy '{view}'", VIEW_BUILD_ARGUMENTS)
    objective_kwargs = _complete_kwargs(objective_cls, objective_kwargs, f"objective '{objective}'",
                                        OBJECTIVE_BUILD_ARGUMENTS)
    return view, view_kwargs, objective, objective_kwargs


def build_method(choice: MethodChoice, backbone: BackboneConfig, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> SSLMethod:
    """The method the trainer drives; an incompatible view/objective pairing raises ``IncompatiblePairing``."""
    view_name, view_kwargs, objective_name, objective_kwargs = resolve_choice(choice)
    view: ViewStrategy = VIEWS.get(view_name)(image_size=backbone.img_size, patch_size=backbone.patch_size,
                                              mean=mean, std=std, **view_kwargs)
    objective_cls: type[Objective] = OBJECTIVES.get(objective_name)
    objective_cls.check_views(view)
    objective = objective_cls(VIT_SIZES[backbone.size][0], **objective_kwargs)
    return SSLMethod(view, objective, backbone)
