"""Paper-style tables from the long results table: methods × evaluations, mean ± std over seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

REFERENCE_ORDER = ("random-init", "random-init-patches", "raw-pixels")  # the reference rows, last, in this order


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof = 1) and count over seeds per (dataset, method, eval, metric)."""
    keys = ["dataset", "method", "eval", "metric"]
    grouped = long.groupby(keys, sort=True)["value"]
    return grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()


def _cell(mean: float, std: float, n: int, scale: float) -> str:
    if n < 2 or pd.isna(std):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def method_table(long: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Rows: methods (references last); columns: (dataset, eval metric); cells: 'mean ± std' in percent."""
    agg = aggregate(long)
    agg["column"] = agg["dataset"] + " " + agg["eval"] + " " + agg["metric"]
    agg["cell"] = [_cell(m, s, n, scale) for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]
    table = agg.pivot(index="method", columns="column", values="cell").fillna("–")
    methods = [m for m in table.index if m not in REFERENCE_ORDER] + [m for m in REFERENCE_ORDER if m in table.index]
    table = table.loc[methods]
    seeds = long.groupby("method")["seed"].nunique()
    table.insert(0, "seeds", [int(seeds[m]) for m in table.index])
    return table


def write_tables(long: pd.DataFrame, out_dir: str | Path) -> tuple[str, Path, Path]:
    """Write the method table as Markdown and CSV under ``out_dir``; return (markdown, md path, csv path)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = method_table(long)
    markdown = tabulate(table, headers="keys", tablefmt="github")
    md_path, csv_path = out_dir / "table.md", out_dir / "table.csv"
    md_path.write_text(markdown + "\n")
    aggregate(long).to_csv(csv_path, index=False)
    return markdown, md_path, csv_path
