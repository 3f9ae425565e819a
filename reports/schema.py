"""The one thing ``reports`` knows about the run store: the layout and the schema of result records.

``results/<matrix>/<run_id>/results/<eval>.json`` holds one record per evaluation of a run: the run's identity
columns, the protocol, the probe hyper-parameters and how they were selected, the metrics, and the run's cost and
provenance. The writer is ``patchbench.benchmark``; the reader is :func:`patchbench.reports.collect`.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

IDENTITY_COLUMNS = ("run_id", "matrix", "method", "dataset", "backbone", "seed")
RECORD_KEYS = IDENTITY_COLUMNS + ("schema", "eval", "eval_protocol", "probe_hparams", "selection_rule", "epoch",
                                  "metrics", "collapsed", "cost", "provenance")

RUN_RESULTS_DIR = "results"  # inside a run folder


class RecordError(ValueError):
    """A result record that does not follow the schema."""


def validate_record(record: Any) -> dict[str, Any]:
    """Return ``record`` if it follows the schema, else raise :class:`RecordError` saying what is wrong."""
    if not isinstance(record, dict):
        raise RecordError(f"a record is a JSON object, got {type(record).__name__}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise RecordError(f"missing keys {missing}")
    if record["schema"] != SCHEMA_VERSION:
        raise RecordError(f"schema version {record['schema']} (this patchbench reads {SCHEMA_VERSION})")
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
