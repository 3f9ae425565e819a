"""Numbers behind the tables: mean ± sample std over seeds, and paired differences over matched seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats

CELL_KEYS = ["dataset", "method", "eval", "metric"]
MIN_PAIRS_FOR_TEST = 3
CONSTANT_TOLERANCE = 1e-9  # metrics are fractions: differences this close are equal
PAIRED_TEST = ("two-sided paired t-test over seeds (scipy.stats.ttest_rel); not run with fewer than "
               f"{MIN_PAIRS_FOR_TEST} pairs")


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof = 1), count and the per-seed values (JSON, by seed) per (dataset, method, eval,
    metric)."""
    rows = []
    for key, group in long.groupby(CELL_KEYS, sort=True):
        group = group.sort_values("seed")
        values = group["value"].to_numpy(dtype=float)
        rows.append({**dict(zip(CELL_KEYS, key)), "mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"), "n": len(values),
                     "seeds": json.dumps([int(s) for s in group["seed"]]),
                     "values": json.dumps([float(v) for v in values])})
    return pd.DataFrame(rows, columns=CELL_KEYS + ["mean", "std", "n", "seeds", "values"])


def paired_test(deltas: np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of a paired t-test on the per-seed differences; NaN below MIN_PAIRS_FOR_TEST pairs."""
    if len(deltas) < MIN_PAIRS_FOR_TEST:
        return float("nan"), float("nan")
    if np.ptp(deltas) <= CONSTANT_TOLERANCE:  # identical differences: the t statistic's limit, without round-off
        mean = float(deltas.mean())
        return (math.copysign(math.inf, mean), 0.0) if abs(mean) > CONSTANT_TOLERANCE else (float("nan"), 1.0)
    result = stats.ttest_rel(deltas, np.zeros_like(deltas))
    return float(result.statistic), float(result.pvalue)


def paired_deltas(long: pd.DataFrame, baseline: str, methods: list[str] | None = None) -> pd.DataFrame:
    """Per (method, dataset, eval, metric): the differences method − ``baseline`` on seeds both have, their mean,
    sample std, count, and the paired test. ``methods`` (default: every method but the baseline) in that order."""
    keys = ["dataset", "eval", "metric", "seed"]
    base = long.loc[long["method"] == baseline, keys + ["value"]]
    others = long[long["method"] != baseline] if methods is None else long[long["method"].isin(methods)]
    merged = others.merge(base, on=keys, suffixes=("", "_base"))
    rows = []
    for (method, dataset, eval_name, metric), group in merged.groupby(["method", "dataset", "eval", "metric"],
                                                                        sort=True):
        group = group.sort_values("seed")
        deltas = (group["value"] - group["value_base"]).to_numpy(dtype=float)
        t, p = paired_test(deltas)
        rows.append({"method": method, "baseline": baseline, "dataset": dataset, "eval": eval_name,
                     "metric": metric, "n_pairs": len(deltas), "mean_delta": float(deltas.mean()),
                     "std_delta": float(deltas.std(ddof=1)) if len(deltas) > 1 else float("nan"),
                     "t": t, "p": p, "seeds": json.dumps([int(s) for s in group["seed"]]),
                     "deltas": json.dumps([float(d) for d in deltas])})
    return pd.DataFrame(rows, columns=["method", "baseline", "dataset", "eval", "metric", "n_pairs", "mean_delta",
                                       "std_delta", "t", "p", "seeds", "deltas"])


def significance_mark(p: float) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, nothing otherwise (or untested)."""
    if np.isnan(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""
