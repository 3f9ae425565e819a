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
    def jobs_file(self) -> Path:
        """Submissions, written only by the orchestrator: stage → [{attempt, job_id, executor, folder, time}]."""
        return self.path / "jobs.json"

    def state_file(self, stage: str) -> Path:
        """The state of one stage (``pretrain`` or an evaluation), written by its job (or by the orchestrator for
        a job that died without writing it)."""
        return self.path / "state" / f"{stage}.json"

    @property
    def results(self) -> Path:
        return self.path / RUN_RESULTS_DIR

    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_bytes(self.spec_file, yaml.safe_dump(to_dict(spec), sort_keys=False).encode())

    def read_spec(self) -> RunSpec:
        return spec_from_dict(yaml.safe_load(self.spec_file.read_text()))

    def submissions(self) -> dict[str, list[dict[str, Any]]]:
        return json.loads(self.jobs_file.read_text()) if self.jobs_file.exists() else {}

    def add_submission(self, stage: str, job_id: str, executor: str, folder: str) -> int:
        """Record a submission of ``stage``; return its attempt number (1, 2, ...)."""
        subs = self.submissions()
        attempt = len(subs.get(stage, [])) + 1
        subs.setdefault(stage, []).append({"attempt": attempt, "job_id": job_id, "executor": executor,
                                           "folder": folder, "time": time.time()})
        atomic_write_json(self.jobs_file, subs)
        return attempt

    def next_attempt(self, stage: str) -> int:
        return len(self.submissions().get(stage, [])) + 1

    def stage_state(self, stage: str) -> dict[str, Any]:
        path = self.state_file(stage)
        return json.loads(path.read_text()) if path.exists() else {}

    def set_stage_state(self, stage: str, state: str, attempt: int, **info: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state}")
        if state == "failed" and info.get("reason") not in FAILURE_REASONS:
            raise ValueError(f"a failure needs a reason among {FAILURE_REASONS}")
        atomic_write_json(self.state_file(stage), {"state": state, "attempt": attempt, "time": time.time(), **info})

    def stage_status(self, stage: str) -> dict[str, Any]:
        """The stage's state merged with its latest submission: what the job last wrote if it wrote it for that
        attempt, else ``submitted`` (or ``planned`` when it was never submitted)."""
        subs = self.submissions().get(stage, [])
        state = self.stage_state(stage)
        if not subs:
            return state or {"state": "planned"}
        latest = subs[-1]
        if state.get("attempt") == latest["attempt"]:
            return {**latest, **state}
        return {**latest, "state": "submitted"}

    def write_record(self, record: dict[str, Any]) -> Path:
        record = validate_record({"schema": SCHEMA_VERSION, **record})
        path = self.results / f"{record['eval']}.json"
        atomic_write_json(path, record)
        return path

    def has_record(self, eval_name: str, settings: dict[str, Any] | None = None) -> bool:
        """Whether the evaluation's record exists (and, given ``settings``, was written with those settings)."""
        path = self.results / f"{eval_name}.json"
        if not path.exists():
            return False
        if settings is None:
            return True
        try:
            written = json.loads(path.read_text())["probe_hparams"]["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return written == json.loads(json.dumps(settings))


def run_dir(results_root: str | Path, spec: RunSpec) -> RunDir:
    return RunDir(Path(results_root) / spec.run_id)
