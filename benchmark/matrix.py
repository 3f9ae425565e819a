"""Matrix files: what is held fixed, what varies, and the jobs' SLURM resources, expanded into one cell per run.

```yaml
name: demo                   # results go to results/<name>
fixed:                       # held fixed across every cell
  dataset: shapes            # or vary.datasets (a key may not be both fixed and varied)
  image_size: 224            # optional: the side images are read at (sources read from files; default per source)
  backbone: {size: nano, patch_size: 4}
  budget: {epochs: 30, batch_size: 128}
  evaluations:               # registered evaluations (patchbench evaluations) and their settings
    knn: {k: [10, 20], temperature: 0.07}
    linear: {}
    dense: {pretrained_on: [shapes]}   # only for cells of these datasets; `dataset: voc2012` evaluates elsewhere
vary:                        # the declared axes: cells differ only on these
  methods: [dino]            # registered methods
  references: [random-init, raw-pixels]   # evaluation-only rows
  seeds: [0, 1]
  ablations:                 # named overrides applied to every method cell (empty: the method as configured)
    base: {}
    no-locals: {view_kwargs: {n_local: 0}}
methods:                     # per-method settings (budget-matched recipes): view, objective, *_kwargs, optim, slurm
  dino: {objective_kwargs: {out_dim: 1024}, optim: {lr: 1e-3}}
slurm: {partition: gpu, gpus_per_node: 4, nodes: 1, cpus_per_task: 8, mem: 64G, time: "12:00:00",
        eval: {gpus_per_node: 1, time: 60}}
runtime: {checkpoint_interval_min: 5}
report: {baseline: dino, tables: {main: {columns: ["*/knn/top1_k20"]}}}   # paper tables: reports/layout.py
```

An ablation may override ``view``, ``objective``, ``view_kwargs``, ``objective_kwargs``, ``optim``, ``backbone`` and
``budget``; one that swaps the view (objective) starts from that component's defaults, so the method section's
``view_kwargs`` (``objective_kwargs``) do not carry over. Every name and key is checked, and the cells are checked
for fairness (:mod:`.fairness`), before anything runs; the message names the problem and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from patchbench.datasets import DATA_ROOT_ENV, DatasetError, DatasetSource, build_dataset
from patchbench.methods import METHODS, OBJECTIVES, VIEWS, BackboneConfig, did_you_mean, resolve_choice
from patchbench.methods.build import MethodChoice
from patchbench.reports.layout import LayoutError, layout_to_dict, parse_layout

from .cluster import load_cluster_config
from .config import REFERENCES, BudgetConfig, ConfigError, OptimConfig, RunSpec, RuntimeConfig, _strict, make_spec
from .evaluate import resolve_evaluations
from .evaluations import EVALUATIONS
from .fairness import check_fair
from .resources import SLURM_KEYS, SlurmResources, eval_resources, resources

TOP_KEYS = ("name", "fixed", "vary", "methods", "slurm", "runtime", "report")
FIXED_KEYS = ("dataset", "image_size", "backbone", "budget", "evaluations")
VARY_KEYS = ("methods", "references", "datasets", "seeds", "ablations")
BOTH_WAYS = {"dataset": "datasets"}  # fixed key -> its vary key
METHOD_KEYS = ("view", "objective", "view_kwargs", "objective_kwargs", "optim", "slurm")
ABLATION_KEYS = ("view", "objective", "view_kwargs", "objective_kwargs", "optim", "backbone", "budget")
NAME = re.compile(r"[A-Za-z0-9_.-]+")
SECTIONS = {"backbone": BackboneConfig, "budget": BudgetConfig, "optim": OptimConfig}  # overridable settings


@dataclass(frozen=True)
class Cell:
    """One run and the resources of its pretraining and evaluation jobs."""

    spec: RunSpec
    pretrain: SlurmResources
    evaluate: SlurmResources


@dataclass(frozen=True)
class Matrix:
    name: str
    cells: list[Cell]
    ablations: dict[str, dict[str, Any]]  # declared overrides, for the fairness check of collected runs
    report: dict[str, Any] | None = None  # the validated ``report:`` section (reports/layout.py), for ``report``
    file: str | None = None  # the matrix file it was loaded from, as given
    train_sizes: dict[str, int] = field(default_factory=dict)  # training images per pretraining dataset
    decoded: frozenset[str] = frozenset()  # pretraining datasets decoded image by image (DataLoader workers)

    @property
    def specs(self) -> list[RunSpec]:
        return [c.spec for c in self.cells]

    def declaration(self) -> dict[str, Any]:
        """What ``results/<name>/matrix.json`` keeps: the matrix file, the declared ablations, the cells' run ids
        and the report layout."""
        return {"name": self.name, "file": self.file, "ablations": self.ablations,
                "run_ids": [c.spec.run_id for c in self.cells],
                **({"report": self.report} if self.report is not None else {})}


def check_keys(d: Any, allowed: tuple[str, ...], where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, allowed)} "
                              f"Valid keys: {', '.join(allowed)}")
    return d


def _as_list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, e.g. [{value}]")
    return value


def load_matrix(path: str | Path, data_root: str | None = None) -> Matrix:
    """The validated, expanded matrix: names, keys, pairings, dataset files and fairness are all checked."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"matrix file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{path} is a folder, not a matrix file; give a YAML file, e.g. benchmark/matrices/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as a YAML text file: {err}") from None
    raw = check_keys(raw, TOP_KEYS, str(path))
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{path}: give the matrix a 'name' (its results go to results/<name>)")
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{path}: matrix name {name!r} is not a plain name (its results go to results/<name>); "
                          "use letters, digits, '-', '_' and '.', e.g. demo-v2")
    fixed = check_keys(raw.get("fixed"), FIXED_KEYS, f"{path}: fixed")
    vary = check_keys(raw.get("vary"), VARY_KEYS, f"{path}: vary")
    for fixed_key, vary_key in BOTH_WAYS.items():
        if fixed_key in fixed and vary_key in vary:
            raise ConfigError(f"{path}: '{fixed_key}' is both fixed (fixed.{fixed_key}) and varied "
                              f"(vary.{vary_key}); keep one of them")

    methods = _as_list(vary.get("methods"), f"{path}: vary.methods")
    references = _as_list(vary.get("references"), f"{path}: vary.references")
    datasets = [fixed["dataset"]] if "dataset" in fixed else _as_list(vary.get("datasets"), f"{path}: vary.datasets")
    seeds = _as_list(vary.get("seeds"), f"{path}: vary.seeds") or [0]
    ablations = vary.get("ablations") or {}
    if not isinstance(ablations, dict):
        raise ConfigError(f"{path}: vary.ablations must map ablation names to overrides, e.g. {{base: {{}}}}")
    for method in methods:
        METHODS.get(method)  # unknown names fail here, with a did-you-mean
    for ref in references:
        if ref not in REFERENCES:
            raise ConfigError(f"{path}: unknown reference '{ref}'.{did_you_mean(ref, REFERENCES)} "
                              f"References are {', '.join(REFERENCES)}")
    if not methods and not references:
        raise ConfigError(f"{path}: vary.methods (or vary.references) lists nothing to run")
    if not datasets:
        raise ConfigError(f"{path}: no dataset; set fixed.dataset or vary.datasets")
    integers = all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if len(set(map(str, seeds))) != len(seeds) or not integers:
        raise ConfigError(f"{path}: vary.seeds must be distinct integers, got {seeds}")
    for ablation, overrides in ablations.items():
        check_keys(overrides, ABLATION_KEYS, f"{path}: vary.ablations.{ablation}")
        check_sections(overrides or {}, f"{path}: vary.ablations.{ablation}")
    per_method = check_keys(raw.get("methods"), tuple(methods),
                            f"{path}: methods (settings for a method not listed in vary.methods)")
    for m in methods:
        check_sections(check_keys(per_method.get(m), METHOD_KEYS, f"{path}: methods.{m}"), f"{path}: methods.{m}")
    check_sections({k: fixed.get(k) for k in ("backbone", "budget")}, f"{path}: fixed")
    for key, value in (("fixed.dataset", fixed.get("dataset")), *(("vary.datasets", d) for d in datasets)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must name a dataset (run `patchbench datasets`), got {value!r}")

    evaluations = fixed.get("evaluations") or {"knn": {}}
    if not isinstance(evaluations, dict):
        raise ConfigError(f"{path}: fixed.evaluations must map evaluation names to settings, e.g. {{knn: {{}}}}")
    for evaluation in evaluations:
        EVALUATIONS.get(evaluation)  # unknown names fail here, with a did-you-mean
    slurm = check_keys(raw.get("slurm"), SLURM_KEYS + ("eval",), f"{path}: slurm")
    base_resources = {k: v for k, v in slurm.items() if k != "eval"}
    eval_override = check_keys(slurm.get("eval"), SLURM_KEYS, f"{path}: slurm.eval")
    _strict(RuntimeConfig, raw.get("runtime"), f"{path}: runtime")  # the cells keep the values as written
    runtime = dict(raw.get("runtime") or {})
    if data_root is not None:
        runtime["data_root"] = data_root
    elif runtime.get("data_root") is None and DATA_ROOT_ENV not in os.environ:
        runtime["data_root"] = load_cluster_config().data_root
    image_size = fixed.get("image_size")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise ConfigError(f"{path}: fixed.image_size: {image_size!r} is not allowed; give the side in pixels the "
                          "training images are read at, an integer >= 1 (e.g. 224)")
    try:
        sources = {d: build_dataset(d, runtime.get("data_root"), image_size) for d in datasets}
    except DatasetError as err:
        raise ConfigError(f"{path}: fixed.image_size: {err}") from None
    train_sizes, decoded = {}, set()
    for dataset, source in sources.items():
        source.check()
        train = source.load("train")  # opens and validates the files (cheap: no decoding)
        train_sizes[dataset] = len(train)
        if train.images is None:
            decoded.add(dataset)
        source.load("test")

    cells = []
    for dataset in datasets:
        source = sources[dataset]
        cell_evaluations = resolve_evaluations(evaluations, dataset, sources, runtime.get("data_root"),
                                               f"{path}: fixed.evaluations")
        for method in methods + references:
            settings = per_method.get(method) or {}
            pretrain = resources(base_resources, settings.get("slurm"), f"{path}: slurm of {method}")
            evaluate = eval_resources(pretrain, eval_override, f"{path}: slurm.eval")
            variants = ablations.items() if ablations and method in methods else [(None, {})]
            for ablation, overrides in variants:
                cell = apply_ablation(settings, overrides or {}, fixed)
                where = f"{path}: {method}" + (f" ({ablation})" if ablation else "") + f" on '{dataset}'"
                check_sizes(cell, source.image_size, train_sizes[dataset], method in methods, where)
                if method in methods:
                    check_pairing(method, cell, source)
                for seed in seeds:
                    spec = make_spec(
                        matrix=name, method=method, dataset=dataset, seed=int(seed), image_size=source.image_size,
                        read_size=image_size,
                        backbone=cell["backbone"], budget=cell["budget"],
                        optim=cell.get("optim"), view=cell.get("view"), objective=cell.get("objective"),
                        view_kwargs=cell.get("view_kwargs"), objective_kwargs=cell.get("objective_kwargs"),
                        runtime=runtime, evaluations=cell_evaluations, ablation=ablation)
                    cells.append(Cell(spec, pretrain, evaluate))
    declared = {a: dict(o or {}) for a, o in ablations.items()}
    check_fair([c.spec for c in cells], declared)
    try:
        layout = parse_layout(raw.get("report"), {c.spec.label for c in cells})
    except LayoutError as err:
        raise ConfigError(f"{path}: {err}") from None
    return Matrix(name, cells, declared, layout_to_dict(layout), str(path), train_sizes, frozenset(decoded))


def apply_ablation(settings: dict[str, Any], overrides: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """A cell's method settings, backbone and budget: the method section, then the ablation's overrides."""
    cell = {k: settings.get(k) for k in ("view", "objective", "view_kwargs", "objective_kwargs", "optim")}
    cell["backbone"], cell["budget"] = fixed.get("backbone"), fixed.get("budget")
    for component in ("view", "objective"):
        if overrides.get(component) is not None and overrides[component] != cell[component]:
            cell[f"{component}_kwargs"] = None
    for key, value in overrides.items():
        current = cell.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            cell[key] = {**current, **value}
        else:
            cell[key] = value
    return cell


def check_sections(settings: dict[str, Any], where: str) -> None:
    """The backbone, budget and optim sections of a matrix part: mappings of known keys with values that fit."""
    for key, cls in SECTIONS.items():
        if settings.get(key) is not None:
            _strict(cls, settings[key], f"{where}.{key}")


def check_sizes(cell: dict[str, Any], image_size: int, train_size: int, trains: bool, where: str) -> None:
    """The ranges that depend on the dataset: patch size against image size, batch size against the training set."""
    patch_size = (cell.get("backbone") or {}).get("patch_size", BackboneConfig.patch_size)
    if patch_size > image_size or image_size % patch_size:
        raise ConfigError(f"{where}: backbone.patch_size {patch_size} does not tile the {image_size} px images; "
                          f"use a divisor of {image_size}, e.g. {4 if image_size % 4 == 0 else 1}")
    batch_size = (cell.get("budget") or {}).get("batch_size", BudgetConfig.batch_size)
    if trains and batch_size > train_size:
        raise ConfigError(f"{where}: budget.batch_size {batch_size} exceeds the {train_size} training images; "
                          f"use batch_size <= {train_size}")


def check_pairing(method: str, cell: dict[str, Any], source: DatasetSource) -> None:
    """Build the cell's view strategy (cheap) and let its objective refuse it if incompatible."""
    choice = MethodChoice(method, cell.get("view"), cell.get("objective"), cell.get("view_kwargs") or {},
                          cell.get("objective_kwargs") or {})
    view_name, view_kwargs, objective_name, _ = resolve_choice(choice)
    patch_size = int((cell.get("backbone") or {}).get("patch_size", 4))
    try:
        view = VIEWS.get(view_name)(image_size=source.image_size, patch_size=patch_size, mean=source.mean,
                                    std=source.std, **view_kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"method '{method}' on dataset '{source.name}': {err}") from None
    OBJECTIVES.get(objective_name).check_views(view)
