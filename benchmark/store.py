"""The run store: ``results/<matrix>/<run_id>/`` with the spec, checkpoint, train log, state and result records.

Every file is written atomically (write to a temporary file in the same folder, then rename), so a job killed at
any moment leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from patchbench.reports.schema import RUN_RESULTS_DIR, SCHEMA_VERSION, validate_record

from .config import RunSpec, spec_from_dict, to_dict

STATES = ("planned", "submitted", "running", "done", "failed")
FAILURE_REASONS = ("diverged", "oom", "timeout", "cancelled", "error")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunDir:
    """The folder of one run and the files in it."""

    path: Path

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.jsonl"

    @property
    def train_summary(self) -> Path:
        return self.path / "train_summary.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def results(self) -> Path:
        return self.path / RUN_RESULTS_DIR

    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_bytes(self.spec_file, yaml.safe_dump(to_dict(spec), sort_keys=False).encode())

    def read_spec(self) -> RunSpec:
        return spec_from_dict(yaml.safe_load(self.spec_file.read_text()))

    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {"state": "planned"}
        return json.loads(self.state_file.read_text())

    def set_state(self, state: str, **info: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state}")
        if state == "failed" and info.get("reason") not in FAILURE_REASONS:
            raise ValueError(f"a failure needs a reason among {FAILURE_REASONS}")
        atomic_write_json(self.state_file, {"state": state, "time": time.time(), **info})

    def write_record(self, record: dict[str, Any]) -> Path:
        record = validate_record({"schema": SCHEMA_VERSION, **record})
        path = self.results / f"{record['eval']}.json"
        atomic_write_json(path, record)
        return path

    def has_record(self, eval_name: str) -> bool:
        return (self.results / f"{eval_name}.json").exists()


def run_dir(results_root: str | Path, spec: RunSpec) -> RunDir:
    return RunDir(Path(results_root) / spec.run_id)
