"""The fairness check: cells compared in one table differ only on declared varied axes.

Declared axes are the method (with its section of per-method settings), the dataset (which sets the image size),
the seed and the named ablations (each only on the keys it overrides). Everything else a run's result depends on
(backbone, pretraining budget, evaluation settings) must be identical; an evaluation that only some cells have (one
restricted to some datasets) is compared among those that have it. Run at expansion, and again when ``report``
collects runs, where stale runs from an earlier version of the matrix would otherwise share the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from patchbench.reports.schema import RUN_RESULTS_DIR

from .config import ConfigError, RunSpec, to_dict


def held_fixed(spec: RunSpec, ablations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings of ``spec`` that must match across a table (flattened to dotted keys)."""
    d = to_dict(spec)
    evaluations = {name: {k: v for k, v in settings.items() if not (k == "dataset" and v == spec.dataset)}
                   for name, settings in d["evaluations"].items()}  # the cell's own dataset is a declared axis
    fixed = {"matrix": d["matrix"], "backbone": {k: v for k, v in d["backbone"].items() if k != "img_size"},
             "evaluations": evaluations}
    if not spec.is_reference:
        fixed["budget"] = d["budget"]
    overridden = set(ablations.get(spec.ablation) or {}) if spec.ablation is not None else set()
    flat = _flatten(fixed)
    return {k: v for k, v in flat.items() if k.split(".")[0] not in overridden}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_fair(specs: Iterable[RunSpec], ablations: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`ConfigError` naming two cells and the setting they differ on, or two cells that coincide."""
    seen: dict[str, RunSpec] = {}
    reference: dict[str, tuple[Any, RunSpec]] = {}
    for spec in specs:
        other = seen.get(spec.run_id)
        if other is not None and other.label != spec.label:
            raise ConfigError(f"cells '{other.label}' and '{spec.label}' ({spec.dataset}, seed {spec.seed}) resolve to "
                              f"the same run {spec.run_id}: the ablation changes nothing; drop one of them")
        seen[spec.run_id] = spec
        for key, value in held_fixed(spec, ablations).items():
            if key not in reference:
                reference[key] = (value, spec)
                continue
            first_value, first = reference[key]
            if value != first_value:
                raise ConfigError(
                    f"unfair comparison: runs {first.run_id} ({first.label}, {first.dataset}, seed {first.seed}) and "
                    f"{spec.run_id} ({spec.label}, {spec.dataset}, seed {spec.seed}) differ on '{key}' "
                    f"({first_value!r} vs {value!r}), which is held fixed. Declare it as an ablation, or keep such "
                    f"runs in separate results folders")


def unfair_runs(runs: dict[str, RunSpec], ablations: dict[str, dict[str, Any]]) -> dict[str, str]:
    """run folder → what is wrong, for every run (folder name → its spec) whose value of a held-fixed setting is
    not the one most runs share (ties: the value seen first)."""
    by_key: dict[str, list[tuple[Any, str, RunSpec]]] = {}
    for name, spec in runs.items():
        for key, value in held_fixed(spec, ablations).items():
            by_key.setdefault(key, []).append((value, name, spec))
    unfair: dict[str, list[str]] = {}
    for key, entries in by_key.items():
        counts: dict[str, int] = {}
        for value, _, _ in entries:
            counts[repr(value)] = counts.get(repr(value), 0) + 1
        if len(counts) < 2:
            continue
        common = max(counts, key=lambda r: counts[r])  # the first of the most frequent (dicts keep insertion order)
        for value, name, spec in entries:
            if repr(value) != common:
                unfair.setdefault(name, []).append(
                    f"{spec.label}, {spec.dataset}, seed {spec.seed}: '{key}' is {value!r}, "
                    f"{counts[common]} other runs have {common}")
    return {run_id: "; ".join(why) for run_id, why in sorted(unfair.items())}


def check_results_folder(results: Path, allow_unfair: bool = False) -> dict[str, str]:
    """The fairness check over every run with a result record under ``results`` (ablations from the
    ``matrix.json`` that ``run`` writes there). Raises :class:`ConfigError` naming the runs outside the fair
    comparison, or, with ``allow_unfair``, returns them (run_id → what differs) for the report to mark."""
    from .store import RunDir  # the store imports the config; keep this module importable on its own

    declaration = results / "matrix.json"
    ablations = json.loads(declaration.read_text()).get("ablations", {}) if declaration.exists() else {}
    runs = [RunDir(p.parent) for p in sorted(results.glob(f"*/{RUN_RESULTS_DIR}")) if any(p.glob("*.json"))]
    unfair = unfair_runs({run.path.name: run.read_spec() for run in runs if run.spec_file.exists()}, ablations)
    if unfair and not allow_unfair:
        listed = "; ".join(f"run {run_id} ({why})" for run_id, why in list(unfair.items())[:5])
        more = f" and {len(unfair) - 5} more" if len(unfair) > 5 else ""
        raise ConfigError(f"unfair comparison under {results}: {len(unfair)} run(s) differ from the others on a "
                          f"setting held fixed: {listed}{more}. Keep such runs in separate results folders, declare "
                          f"the difference as an ablation, or report them anyway, marked, with --allow-unfair")
    return unfair
