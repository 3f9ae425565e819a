"""Collect every result record under a results folder into one long-format pandas DataFrame."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from .schema import RUN_RESULTS_DIR, RecordError, record_rows, validate_record


def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row per (run, eval, metric). A record that cannot be read is reported with a warning and skipped:
    collection never stops at a bad record."""
    rows = []
    for path in sorted(Path(results_dir).glob(f"*/{RUN_RESULTS_DIR}/*.json")):
        try:
            rows.extend(record_rows(validate_record(json.loads(path.read_text()))))
        except (OSError, json.JSONDecodeError, RecordError) as err:
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
    return pd.DataFrame(rows)
