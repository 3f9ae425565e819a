"""Read a results folder (layout: :mod:`.schema`) into pandas tables: the records, the runs and their states, the
train logs and summaries. Reading never stops at a bad file, and never writes into the folder."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .schema import (
    MATRIX_DECLARATION,
    PRETRAIN_STAGE,
    REFERENCES,
    RUN_RESULTS_DIR,
    SPEC_FILE,
    STATE_DIR,
    TRAIN_LOG,
    TRAIN_SUMMARY,
    OldSchemaError,
    RecordError,
    record_rows,
    validate_record,
)

RUN_COLUMNS = ["run_id", "method", "ablation", "label", "dataset", "seed", "evaluations", "is_trained"]
STEP_COLUMNS = ("step", "epoch")  # the train log's position columns; every other column is a logged quantity


@dataclass
class Results:
    """Everything a report reads from one results folder."""

    folder: Path
    long: pd.DataFrame  # one row per (run, eval, metric): see :func:`.schema.record_rows`
    runs: pd.DataFrame  # one row per run folder with a spec (RUN_COLUMNS)
    declaration: dict[str, Any]  # matrix.json, or {} for a folder without one
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id → its spec.yaml
    problems: list[str] = field(default_factory=list)  # records that could not be read, with why
    old_schema: list[str] = field(default_factory=list)  # records of another schema version, with the message

    def stage_state(self, run_id: str, stage: str) -> dict[str, Any]:
        path = self.folder / run_id / STATE_DIR / f"{stage}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}


def _read_records(folder: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    rows, problems, old = [], [], []
    for path in sorted(folder.glob(f"*/{RUN_RESULTS_DIR}/*.json")):
        try:
            rows.extend(record_rows(validate_record(json.loads(path.read_text()))))
        except OldSchemaError as err:
            old.append(f"{path}: {err}")
        except (OSError, json.JSONDecodeError, RecordError) as err:
            problems.append(f"{path}: {err}")
    return rows, problems, old


def _read_runs(folder: Path, problems: list[str]) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    rows, specs = [], {}
    for path in sorted(folder.glob(f"*/{SPEC_FILE}")):
        try:
            spec = yaml.safe_load(path.read_text())
            method, ablation = spec["method"], spec.get("ablation")
            specs[path.parent.name] = spec
            rows.append({"run_id": path.parent.name, "method": method, "ablation": ablation,
                         "label": method if ablation is None else f"{method}/{ablation}",
                         "dataset": spec["dataset"], "seed": int(spec["seed"]),
                         "evaluations": tuple(spec.get("evaluations") or ()), "is_trained": method not in REFERENCES})
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            problems.append(f"{path}: not a readable run spec ({err})")
    return pd.DataFrame(rows, columns=RUN_COLUMNS), specs


def read_results(results_dir: str | Path) -> Results:
    """The records, runs and declaration of ``results_dir``; unreadable files are listed in ``problems``."""
    folder = Path(results_dir)
    rows, problems, old = _read_records(folder)
    runs, specs = _read_runs(folder, problems)
    declaration: dict[str, Any] = {}
    if (folder / MATRIX_DECLARATION).exists():
        try:
            declaration = json.loads((folder / MATRIX_DECLARATION).read_text())
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{folder / MATRIX_DECLARATION}: {err}")
    return Results(folder, pd.DataFrame(rows), runs, declaration, specs, problems, old)


def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row per (run, eval, metric). A record that cannot be read is reported with a warning and skipped:
    collection never stops at a bad record."""
    results = read_results(results_dir)
    for problem in results.problems + results.old_schema:
        warnings.warn(f"skipping {problem}", stacklevel=2)
    return results.long


def cell_states(results: Results) -> pd.DataFrame:
    """Every (run, evaluation) of a run's spec that has no record: its state (failed, running, pending) and, for
    a failure, the stage that failed and its reason. Columns: label, dataset, seed, run_id, eval, state, reason."""
    have = set(zip(results.long["run_id"], results.long["eval"])) if not results.long.empty else set()
    rows = []
    for run in results.runs.itertuples():
        pretrain = results.stage_state(run.run_id, PRETRAIN_STAGE) if run.is_trained else {"state": "done"}
        for eval_name in run.evaluations:
            if (run.run_id, eval_name) in have:
                continue
            stage = results.stage_state(run.run_id, eval_name)
            if pretrain.get("state") == "failed":
                state, reason = "failed", f"{PRETRAIN_STAGE}: {pretrain.get('reason', 'unknown')}"
            elif stage.get("state") == "failed":
                state, reason = "failed", f"{eval_name}: {stage.get('reason', 'unknown')}"
            elif "running" in (pretrain.get("state"), stage.get("state")):
                state, reason = "running", ""
            else:
                state, reason = "missing", ""
            rows.append({"label": run.label, "dataset": run.dataset, "seed": run.seed, "run_id": run.run_id,
                         "eval": eval_name, "state": state, "reason": reason})
    return pd.DataFrame(rows, columns=["label", "dataset", "seed", "run_id", "eval", "state", "reason"])


def train_logs(results: Results) -> pd.DataFrame:
    """The train logs of every trained run, long: label, dataset, seed, run_id, step, epoch, quantity, value."""
    frames = []
    for run in results.runs.itertuples():
        path = results.folder / run.run_id / TRAIN_LOG
        if not path.exists():
            continue
        try:
            log = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        except (OSError, json.JSONDecodeError) as err:
            results.problems.append(f"{path}: {err}")
            continue
        if log.empty or not set(STEP_COLUMNS) <= set(log.columns):
            continue
        long = log.melt(id_vars=list(STEP_COLUMNS), var_name="quantity", value_name="value")
        long.insert(0, "run_id", run.run_id)
        long.insert(0, "seed", run.seed)
        long.insert(0, "dataset", run.dataset)
        long.insert(0, "label", run.label)
        frames.append(long)
    columns = ["label", "dataset", "seed", "run_id", *STEP_COLUMNS, "quantity", "value"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def train_summaries(results: Results) -> pd.DataFrame:
    """One row per trained run with a train summary: label, dataset, seed, run_id and the summary's cost fields."""
    rows = []
    for run in results.runs.itertuples():
        path = results.folder / run.run_id / TRAIN_SUMMARY
        if not path.exists():
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            results.problems.append(f"{path}: {err}")
            continue
        rows.append({"label": run.label, "dataset": run.dataset, "seed": run.seed, "run_id": run.run_id,
                     "images_per_s": summary.get("images_per_s"), "wall_s": summary.get("wall_s"),
                     "peak_memory_mb": summary.get("peak_memory_mb"), "device_name": summary.get("device_name"),
                     "world_size": summary.get("world_size") or 1, "steps": summary.get("steps"),
                     "collapsed": summary.get("collapsed")})
    return pd.DataFrame(rows, columns=["label", "dataset", "seed", "run_id", "images_per_s", "wall_s",
                                       "peak_memory_mb", "device_name", "world_size", "steps", "collapsed"])
