"""Matrix files: what varies and what is held fixed, expanded into one ``RunSpec`` per cell.

```yaml
name: demo
fixed:                       # held fixed across every cell
  backbone: {size: nano, patch_size: 4}
  budget: {epochs: 30, batch_size: 128}
  knn: {k: [10, 20], temperature: 0.07}
vary:
  methods: [dino]            # registered methods
  references: [random-init, raw-pixels]
  datasets: [shapes, digits]
  seeds: [0, 1]
methods:                     # per-method settings (ablation overrides and budget-matched recipes)
  dino: {objective_kwargs: {out_dim: 1024}, optim: {lr: 1e-3}}
runtime: {checkpoint_interval_min: 5}
```

Every name and key is checked before anything runs; the message names the problem and the fix.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from patchbench.datasets import DatasetSource, build_dataset
from patchbench.methods import METHODS, OBJECTIVES, VIEWS, resolve_choice
from patchbench.methods.build import MethodChoice

from .config import REFERENCES, ConfigError, RunSpec, make_spec

TOP_KEYS = ("name", "fixed", "vary", "methods", "runtime")
FIXED_KEYS = ("backbone", "budget", "knn")
VARY_KEYS = ("methods", "references", "datasets", "seeds")
METHOD_KEYS = ("view", "objective", "view_kwargs", "objective_kwargs", "optim")


def _check_keys(d: Any, allowed: tuple[str, ...], where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'.{hint} Valid keys: {', '.join(allowed)}")
    return d


def load_matrix(path: str | Path, data_root: str | None = None) -> tuple[str, list[RunSpec]]:
    """(matrix name, run specs), validated: names, keys, pairings and dataset files."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"matrix file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    raw = _check_keys(raw, TOP_KEYS, str(path))
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{path}: give the matrix a 'name' (its results go to results/<name>)")
    fixed = _check_keys(raw.get("fixed"), FIXED_KEYS, f"{path}: fixed")
    vary = _check_keys(raw.get("vary"), VARY_KEYS, f"{path}: vary")
    for method in vary.get("methods") or []:
        METHODS.get(method)  # unknown names fail here, with a did-you-mean
    per_method = _check_keys(raw.get("methods"), tuple(vary.get("methods") or ()),
                             f"{path}: methods (settings for a method not listed in vary.methods)")
    runtime = dict(raw.get("runtime") or {})
    if data_root is not None:
        runtime["data_root"] = data_root

    methods, references = list(vary.get("methods") or []), list(vary.get("references") or [])
    datasets, seeds = list(vary.get("datasets") or []), list(vary.get("seeds") or [0])
    if not methods and not references:
        raise ConfigError(f"{path}: vary.methods (or vary.references) lists nothing to run")
    if not datasets:
        raise ConfigError(f"{path}: vary.datasets lists no dataset")
    for ref in references:
        if ref not in REFERENCES:
            raise ConfigError(f"{path}: unknown reference '{ref}'; references are {', '.join(REFERENCES)}")
    sources = {d: build_dataset(d, runtime.get("data_root")) for d in datasets}
    for source in sources.values():
        source.check()
    for m in methods:
        settings = _check_keys(per_method.get(m), METHOD_KEYS, f"{path}: methods.{m}")
        choice = MethodChoice(m, settings.get("view"), settings.get("objective"), settings.get("view_kwargs") or {},
                              settings.get("objective_kwargs") or {})
        for source in sources.values():
            check_pairing(choice, int((fixed.get("backbone") or {}).get("patch_size", 4)), source)

    specs = []
    for dataset in datasets:
        for method in methods + references:
            settings = per_method.get(method) or {}
            for seed in seeds:
                specs.append(make_spec(
                    matrix=name, method=method, dataset=dataset, seed=int(seed),
                    image_size=sources[dataset].image_size, backbone=fixed.get("backbone"),
                    budget=fixed.get("budget"), knn=fixed.get("knn"), optim=settings.get("optim"),
                    view=settings.get("view"), objective=settings.get("objective"),
                    view_kwargs=settings.get("view_kwargs"), objective_kwargs=settings.get("objective_kwargs"),
                    runtime=runtime))
    return name, specs


def check_pairing(choice: MethodChoice, patch_size: int, source: DatasetSource) -> None:
    """Build the cell's view strategy (cheap) and let its objective refuse it if incompatible."""
    view_name, view_kwargs, objective_name, _ = resolve_choice(choice)
    try:
        view = VIEWS.get(view_name)(image_size=source.image_size, patch_size=patch_size, mean=source.mean,
                                    std=source.std, **view_kwargs)
    except ValueError as err:
        raise ConfigError(f"method '{choice.method}' on dataset '{source.name}': {err}") from None
    OBJECTIVES.get(objective_name).check_views(view)
