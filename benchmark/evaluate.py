"""Evaluation jobs: the same code path for every method, every evaluation and the reference rows.

A cell's evaluations are resolved when its matrix is loaded (:func:`resolve_evaluations`): each named evaluation's
settings are completed with its defaults, checked, and paired with the dataset it evaluates on (the cell's own unless
the matrix names another), which must provide what the evaluation needs. :func:`evaluate` runs one of them on a run
and returns its result record (schema: ``patchbench.reports.schema``): the run's identity, the protocol, the settings,
readout, grid, chosen values and selection rule, the metrics, the run's cost and provenance.
"""

from __future__ import annotations

import json
from typing import Any

from patchbench.datasets import DatasetSource, build_dataset

from .config import ConfigError, RunSpec, _strict, to_dict
from .evaluations import EVALUATIONS, Evaluation, check_serves
from .features import EvalInputs
from .provenance import provenance
from .store import RunDir
from .train import pick_device

EVAL_DATASET_KEY = "dataset"  # evaluate on this dataset instead of the cell's
PRETRAINED_ON_KEY = "pretrained_on"  # run this evaluation only for cells pretrained on these datasets
COST_KEYS = ("images_per_s", "wall_s", "peak_memory_mb", "device_name")


def build_evaluation(name: str, settings: dict[str, Any], where: str) -> Evaluation:
    """The registered evaluation ``name`` with ``settings`` (its defaults completed; unknown keys refused)."""
    cls = EVALUATIONS.get(name)
    return cls(_strict(cls.settings_class, settings, f"{where}.{name}"))


def resolve_evaluations(declared: dict[str, Any], cell_dataset: str, sources: dict[str, DatasetSource],
                        data_root: str | None, where: str) -> dict[str, dict[str, Any]]:
    """A cell's evaluations, name → fully resolved settings (``dataset`` included), from a matrix's
    ``fixed.evaluations``. ``sources`` holds the datasets already built (and checked); new ones are added."""
    resolved = {}
    for name, values in declared.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}.{name} must be a mapping of settings, e.g. {name}: {{}}")
        values = dict(values or {})
        only = values.pop(PRETRAINED_ON_KEY, None)
        if only is not None and not (isinstance(only, list) and all(isinstance(d, str) for d in only)):
            raise ConfigError(f"{where}.{name}.{PRETRAINED_ON_KEY} must be a list of dataset names, e.g. [shapes]")
        if only is not None and cell_dataset not in only:
            continue
        dataset = values.pop(EVAL_DATASET_KEY, None) or cell_dataset
        evaluation = build_evaluation(name, values, where)
        if dataset not in sources:
            sources[dataset] = build_dataset(dataset, data_root)
            sources[dataset].check()
        check_serves(type(evaluation), sources[dataset], where)
        evaluation.check_dataset(sources[dataset])
        resolved[name] = {EVAL_DATASET_KEY: dataset, **to_dict(evaluation.settings)}
    return resolved


def evaluate(spec: RunSpec, run: RunDir, name: str) -> dict[str, Any]:
    """Run evaluation ``name`` of ``spec`` on its run and return the result record."""
    stored = spec.evaluations[name]
    settings = {k: v for k, v in stored.items() if k != EVAL_DATASET_KEY}
    evaluation = build_evaluation(name, settings, "evaluations")
    dataset = stored[EVAL_DATASET_KEY]
    inputs = EvalInputs(spec, run, dataset, evaluation.reads, pick_device(spec.runtime.device))
    result = evaluation.run(inputs)
    metrics = result.metrics if dataset == spec.dataset else {f"{dataset}/{k}": v for k, v in result.metrics.items()}
    train_info = json.loads(run.train_summary.read_text()) if run.train_summary.exists() else {}
    return {
        "run_id": spec.run_id, "matrix": spec.matrix, "method": spec.label, "dataset": spec.dataset,
        "backbone": f"vit-{spec.backbone.size}/{spec.backbone.patch_size}", "seed": spec.seed, "eval": name,
        "eval_protocol": result.protocol,
        "probe_hparams": {"settings": stored, "readout": inputs.readout, "eval_dataset": dataset,
                          "resolution": inputs.resolution, **result.probe_hparams},
        "selection_rule": result.selection_rule,
        "epoch": inputs.encoder.epoch,
        "metrics": metrics,
        "collapsed": train_info.get("collapsed"),
        "cost": {k: train_info.get(k) for k in COST_KEYS},
        "provenance": provenance(),
    }
