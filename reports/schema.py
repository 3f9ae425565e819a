"""The one thing ``reports`` knows about the run store: its layout and the schema of result records.

Layout (written by ``patchbench.benchmark.store``; ``reports`` only reads it)::

    results/<matrix>/matrix.json                   the declaration: name, ablations, run ids, report layout
    results/<matrix>/<run_id>/spec.yaml            the resolved cell: method, ablation, dataset, seed, evaluations, …
    results/<matrix>/<run_id>/state/<stage>.json   per stage (pretrain, each evaluation): state, reason when failed
    results/<matrix>/<run_id>/train_log.jsonl      one JSON line per optimiser step: step, epoch, lr, wd, momentum,
                                                   loss, the objective's parts and diagnostics (teacher_entropy, kl)
    results/<matrix>/<run_id>/train_summary.json   last-epoch means (final), collapsed, images_per_s, wall_s,
                                                   peak_memory_mb, device, device_name, world_size
    results/<matrix>/<run_id>/results/<eval>.json  one result record per evaluation (schema below)

A record holds the run's identity columns (``method`` is the row label: the method, or ``method/ablation``), the
evaluation and its protocol, the probe hyper-parameters and how they were selected, the metrics (fractions in
[0, 1]), the epoch of the weights, the collapse flag, the run's cost (``images_per_s``, ``wall_s``,
``peak_memory_mb``, ``device_name``) and provenance. The writer is ``patchbench.benchmark``; the reader is
:func:`patchbench.reports.collect`.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

IDENTITY_COLUMNS = ("run_id", "matrix", "method", "dataset", "backbone", "seed")
RECORD_KEYS = IDENTITY_COLUMNS + ("schema", "eval", "eval_protocol", "probe_hparams", "selection_rule", "epoch",
                                  "metrics", "collapsed", "cost", "provenance")

MATRIX_DECLARATION = "matrix.json"  # in the results folder
SPEC_FILE = "spec.yaml"  # inside a run folder, like the names below
STATE_DIR = "state"
TRAIN_LOG = "train_log.jsonl"
TRAIN_SUMMARY = "train_summary.json"
RUN_RESULTS_DIR = "results"
PRETRAIN_STAGE = "pretrain"
REFERENCES = ("random-init", "random-init-patches", "raw-pixels")  # evaluation-only rows: no pretrain stage


class RecordError(ValueError):
    """A result record that does not follow the schema."""


class OldSchemaError(RecordError):
    """A record written by another version of the schema: readable JSON, but not comparable with this one."""


def validate_record(record: Any) -> dict[str, Any]:
    """Return ``record`` if it follows the schema, else raise :class:`RecordError` saying what is wrong."""
    if not isinstance(record, dict):
        raise RecordError(f"a record is a JSON object, got {type(record).__name__}")
    if "schema" in record and record["schema"] != SCHEMA_VERSION:
        raise OldSchemaError(f"written by record schema version {record['schema']}, this patchbench reads version "
                             f"{SCHEMA_VERSION}; evaluate the run again with this version (delete the record and "
                             f"its state/<eval>.json, then patchbench resubmit MATRIX --missing)")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise RecordError(f"missing keys {missing}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise RecordError("'metrics' must be a non-empty object of metric → number")
    for name, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RecordError(f"metric '{name}' is not a number: {value!r}")
    return record


def record_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The long-format rows of one record: one per metric, cost and provenance flattened into columns."""
    base = {k: record[k] for k in IDENTITY_COLUMNS}
    base.update(eval=record["eval"], eval_protocol=record["eval_protocol"], selection_rule=record["selection_rule"],
                probe_hparams=record["probe_hparams"], epoch=record["epoch"], collapsed=record["collapsed"])
    base.update({f"cost_{k}": v for k, v in (record["cost"] or {}).items()})
    base.update({f"prov_{k}": v for k, v in (record["provenance"] or {}).items()})
    return [{**base, "metric": name, "value": float(value)} for name, value in record["metrics"].items()]
