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
from patchbench.methods.typecheck import SettingError, check_setting, dataclass_annotations, ranged

# Evaluation-only rows computed with the shared evaluation code: the untrained backbone read at its CLS token, or
# at its mean-pooled patch tokens (the readout of methods that never train CLS, e.g. GTSA), and the raw pixels.
REFERENCES = ("random-init", "random-init-patches", "raw-pixels")


class ConfigError(ValueError):
    """A user error in a config or matrix; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation, as DINO's ``main_dino.py``: lr per 256 images, warm-up + cosine; wd cosine; EMA cosine."""

    lr: float = ranged(5e-4, above=0)
    min_lr: float = ranged(1e-6, min=0)
    warmup_epochs: int = ranged(10, min=0)
    weight_decay: float = ranged(0.04, min=0)
    weight_decay_end: float = ranged(0.4, min=0)
    momentum_teacher: float = ranged(0.996, min=0, max=1)
    clip_grad: float = ranged(3.0, min=0)  # per-parameter clipping (utils.clip_gradients); 0 disables


@dataclass(frozen=True)
class BudgetConfig:
    epochs: int = ranged(100, min=1)
    batch_size: int = ranged(64, min=1)


@dataclass(frozen=True)
class RuntimeConfig:
    """How a run executes; not part of its identity."""

    data_root: str | None = None
    device: str = "auto"
    checkpoint_interval_min: float = ranged(10.0, min=0)  # 0: after every batch
    num_workers: int | None = ranged(None, min=0)  # DataLoader workers; None: from the allocation (loader_workers)
    log_every: int = ranged(20, min=1)


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
    image_size: int | None = None  # the side the dataset is read at (a matrix's fixed.image_size); None: its default

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
        if self.image_size is None:  # the source's default size: the run ids of matrices that do not set one
            d.pop("image_size")
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


def _strict(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys with a did-you-mean and values that do not
    fit a field's type and range (``methods/typecheck.py``: annotations, and ``ranged`` metadata)."""
    if values is not None and not isinstance(values, dict):
        example = ", ".join(f"{f.name}: {to_dict(f.default)}" for f in fields(cls)[:2]
                            if f.default is not dataclasses.MISSING)
        raise ConfigError(f"{where} must be a mapping of settings, e.g. {{{example}}}; got {values!r}")
    values = dict(values or {})
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, names)} "
                              f"Valid keys: {', '.join(names)}")
    annotations = dataclass_annotations(cls)
    for f in fields(cls):
        if f.name in values:
            try:
                values[f.name] = check_setting(f.name, values[f.name], annotations[f.name], f.metadata)
            except SettingError as err:
                raise ConfigError(f"{where}: {err}") from None
    return cls(**values)


def make_spec(*, matrix: str, method: str, dataset: str, seed: int, image_size: int,
              backbone: dict | None = None, budget: dict | None = None, optim: dict | None = None,
              view: str | None = None, objective: str | None = None, view_kwargs: dict | None = None,
              objective_kwargs: dict | None = None, runtime: dict | None = None,
              evaluations: dict[str, dict[str, Any]] | None = None, ablation: str | None = None,
              read_size: int | None = None) -> RunSpec:
    """Resolve one cell: fill in the method's paper defaults and check every name and key. ``image_size`` is the
    side of the dataset's images, ``read_size`` the matrix's ``fixed.image_size`` that set it (None if none did)."""
    backbone_cfg = _strict(BackboneConfig, {"img_size": image_size, **(backbone or {})}, "backbone")
    common = dict(matrix=matrix, method=method, dataset=dataset, seed=seed, backbone=backbone_cfg,
                  evaluations=dict(evaluations or {}), ablation=ablation, image_size=read_size,
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
        ablation=d.get("ablation"), image_size=d.get("image_size"),
        runtime=_strict(RuntimeConfig, d.get("runtime"), "runtime"))
