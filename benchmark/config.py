"""The run config: the fully resolved settings of one cell (``RunSpec``) and its run id.

The run id is a short hash of the canonical resolved config (method defaults filled in), so the same cell always
maps to the same folder and a changed cell is a new run. Left out of the hash: where the data lives and how the run
executes (``runtime``), which evaluations to run on it (adding one to a matrix evaluates the existing runs, it
does not pretrain them again), and the ablation's name (a label; its overrides are in the resolved config).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from patchbench.methods import METHODS, BackboneConfig, MethodChoice, did_you_mean, resolve_choice

# Evaluation-only rows computed with the shared evaluation code: the untrained backbone read at its CLS token, or
# at its mean-pooled patch tokens (the readout of methods that never train CLS, e.g. GTSA), and the raw pixels.
REFERENCES = ("random-init", "random-init-patches", "raw-pixels")


class ConfigError(ValueError):
    """A user error in a config or matrix; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation, as DINO's ``main_dino.py``: lr per 256 images, warm-up + cosine; wd cosine; EMA cosine."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0  # per-parameter clipping (utils.clip_gradients); 0 disables


@dataclass(frozen=True)
class BudgetConfig:
    epochs: int = 100
    batch_size: int = 64


@dataclass(frozen=True)
class RuntimeConfig:
    """How a run executes; not part of its identity."""

    data_root: str | None = None
    device: str = "auto"
    checkpoint_interval_min: float = 10.0
    num_workers: int = 0
    log_every: int = 20


@dataclass(frozen=True)
class RunSpec:
    """One cell: ``method`` is a registered method or a reference row (random-init, raw-pixels).

    ``evaluations``: evaluation name → its resolved settings, ``dataset`` (what it evaluates on) included
    (``patchbench.benchmark.evaluate.resolve_evaluations``)."""

    matrix: str
    method: str
    dataset: str
    seed: int
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    view: str | None = None
    objective: str | None = None
    view_kwargs: dict[str, Any] = field(default_factory=dict)
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    ablation: str | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def label(self) -> str:
        """The row name in tables: the method, and the ablation where the cell is one."""
        return self.method if self.ablation is None else f"{self.method}/{self.ablation}"

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCES

    def choice(self) -> MethodChoice:
        return MethodChoice(self.method, self.view, self.objective, self.view_kwargs, self.objective_kwargs)

    def identity(self) -> dict[str, Any]:
        """The canonical resolved config that the run id hashes."""
        d = to_dict(self)
        for key in ("runtime", "evaluations", "ablation"):
            d.pop(key)
        if self.is_reference:  # nothing is trained: only what the evaluation sees matters
            for key in ("budget", "optim", "view", "objective", "view_kwargs", "objective_kwargs"):
                d.pop(key)
        return d

    @property
    def run_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def to_dict(obj: Any) -> Any:
    """Dataclasses → plain JSON-able dicts and lists (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _strict(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys with a did-you-mean."""
    values = dict(values or {})
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, names)} "
                              f"Valid keys: {', '.join(names)}")
    for f in fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def make_spec(*, matrix: str, method: str, dataset: str, seed: int, image_size: int,
              backbone: dict | None = None, budget: dict | None = None, optim: dict | None = None,
              view: str | None = None, objective: str | None = None, view_kwargs: dict | None = None,
              objective_kwargs: dict | None = None, runtime: dict | None = None,
              evaluations: dict[str, dict[str, Any]] | None = None, ablation: str | None = None) -> RunSpec:
    """Resolve one cell: fill in the method's paper defaults and check every name and key."""
    backbone_cfg = _strict(BackboneConfig, {"img_size": image_size, **(backbone or {})}, "backbone")
    common = dict(matrix=matrix, method=method, dataset=dataset, seed=seed, backbone=backbone_cfg,
                  evaluations=dict(evaluations or {}), ablation=ablation,
                  runtime=_strict(RuntimeConfig, runtime, "runtime"))
    if method in REFERENCES:
        return RunSpec(**common)
    spec = METHODS.get(method)
    view_name, view_kw, objective_name, objective_kw = resolve_choice(
        MethodChoice(method, view, objective, view_kwargs or {}, objective_kwargs or {}))
    return RunSpec(
        **common, budget=_strict(BudgetConfig, budget, "budget"),
        optim=_strict(OptimConfig, {**spec.optim_defaults, **(optim or {})}, f"optim of {method}"),
        view=view_name, objective=objective_name, view_kwargs=to_dict(view_kw), objective_kwargs=to_dict(objective_kw))


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    """Inverse of ``to_dict`` for a stored spec.yaml."""
    d = dict(d)
    return RunSpec(
        matrix=d["matrix"], method=d["method"], dataset=d["dataset"], seed=d["seed"],
        backbone=_strict(BackboneConfig, d.get("backbone"), "backbone"),
        budget=_strict(BudgetConfig, d.get("budget"), "budget"), optim=_strict(OptimConfig, d.get("optim"), "optim"),
        view=d.get("view"), objective=d.get("objective"), view_kwargs=d.get("view_kwargs") or {},
        objective_kwargs=d.get("objective_kwargs") or {}, evaluations=d.get("evaluations") or {},
        ablation=d.get("ablation"),
        runtime=_strict(RuntimeConfig, d.get("runtime"), "runtime"))
