"""``patchbench report``: read a results folder, write its tables, figures and HTML page under ``report/``.

Reads only (the run store is never written); the same results give byte-identical tables on a rerun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .collect import cell_states, read_results, train_logs, train_summaries
from .html import render_html
from .layout import LayoutError, parse_layout
from .plots import write_plots
from .tables import UNFAIR, Table, build_table, prepare, write_tables

FORMATS = ("md", "latex", "csv", "html", "plots")
REPORT_DIR = "report"  # inside the results folder
DEFAULT_BASELINE = "dino"


class ReportError(ValueError):
    """Nothing to report, or a report that cannot be made as asked; the message says what to do."""


@dataclass
class Report:
    out_dir: Path
    tables: list[Table]
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def main(self) -> Table | None:
        return next((t for t in self.tables if t.kind == "main"), self.tables[0] if self.tables else None)


def parse_formats(text: str) -> set[str]:
    formats = {f.strip() for f in text.split(",") if f.strip()}
    unknown = sorted(formats - set(FORMATS))
    if unknown or not formats:
        raise ReportError(f"unknown report format {', '.join(unknown) or repr(text)}; choose among "
                          f"{','.join(FORMATS)}")
    return formats


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, baseline: str | None = None,
                 formats: set[str] | frozenset[str] = frozenset(FORMATS), unfair: dict[str, str] | None = None
                 ) -> Report:
    """Write the report of ``results_dir`` (tables in ``formats``; ``html`` embeds the figures, so it writes them
    too) under ``out_dir`` (default ``results_dir/report``). ``unfair``: run_id → why, for runs outside the fair
    comparison that the caller chose to report (their cells are marked)."""
    results = read_results(results_dir)
    unfair = dict(unfair or {})
    out = Path(out_dir) if out_dir is not None else results.folder / REPORT_DIR
    warnings = [f"unreadable record, skipped: {p}" for p in results.problems]
    if results.old_schema:
        warnings += [f"record of another schema version, skipped: {p}" for p in results.old_schema]
    long = results.long
    if long.empty:
        detail = ("; ".join(results.old_schema[:3]) if results.old_schema else
                  "; ".join(results.problems[:3]) if results.problems else "run a matrix first (patchbench run MATRIX)")
        raise ReportError(f"no readable result records under {results.folder}: {detail}")
    current = results.declaration.get("run_ids")
    runs = results.runs
    if current:
        stale = sorted(set(long["run_id"]) - set(current))
        if stale:
            warnings.append(f"{len(stale)} runs with records are not in the matrix's current run list (left by an "
                            f"earlier version of the matrix), not reported: {', '.join(stale)}")
            long = long[long["run_id"].isin(current)]
            runs = runs[runs["run_id"].isin(current)]
    try:
        labels = set(runs["label"]) | set(long["method"])
        layout = parse_layout(results.declaration.get("report"), labels)
    except LayoutError as err:
        raise ReportError(f"{results.folder / 'matrix.json'}: {err}") from None
    data_states = cell_states(results)
    data_states = data_states[data_states["run_id"].isin(runs["run_id"])]
    summaries = train_summaries(results)
    summaries = summaries[summaries["run_id"].isin(runs["run_id"])]
    data = prepare(long, runs, data_states, summaries, unfair, current)
    if baseline is not None and baseline not in set(long["method"]):
        raise ReportError(f"--baseline {baseline}: no results for that row; rows with results: "
                          f"{', '.join(r for r in data.rows if r in set(long['method']))}")
    chosen = baseline or layout.baseline or (DEFAULT_BASELINE if DEFAULT_BASELINE in set(long["method"]) else None)

    tables = []
    for table_layout in layout.tables:
        table = build_table(data, table_layout, chosen)
        if table is None:
            if layout.declared or table_layout.kind in ("main", "cost"):
                warnings.append(f"table '{table_layout.name}' ({table_layout.kind}) not written: the results have no "
                                + ("ablations with a 'base'" if table_layout.kind == "ablation" else
                                   "train summaries" if table_layout.kind == "cost" else
                                   f"baseline {table_layout.baseline or chosen or '(none: pass --baseline)'}"))
            continue
        if any(note.startswith(UNFAIR) for note in table.notes):
            table.caption = f"[UNFAIR MIX, see {UNFAIR}] {table.caption}"
        tables.append(table)
    for _, state in data_states.iterrows():
        warnings.append(f"{state['state']}: {state['label']} on {state['dataset']}, seed {state['seed']}, "
                        f"{state['eval']}" + (f" ({state['reason']})" if state["reason"] else ""))
    collapsed = long[long["collapsed"] == True][["method", "dataset", "seed"]].drop_duplicates()  # noqa: E712
    warnings += [f"collapsed: {r.method} on {r.dataset}, seed {r.seed}" for r in collapsed.itertuples()]
    warnings += [f"unfair (reported with --allow-unfair): run {r}: {why}" for r, why in sorted(unfair.items())]

    report = Report(out, tables, warnings=warnings)
    report.written += write_tables(tables, out / "tables", set(formats))
    figures: list[Path] = []
    if {"plots", "html"} & set(formats):
        figures = write_plots(data, train_logs(results), out / "figures")
        report.written += figures
    if "html" in formats:
        page = out / "report.html"
        page.write_text(render_html(matrix=data.matrix or results.folder.name, declaration=results.declaration,
                                    specs={r: s for r, s in results.specs.items() if r in set(runs["run_id"])},
                                    tables=tables, figures=figures, warnings=warnings, unfair=unfair, long=long,
                                    summaries=summaries))
        report.written.append(page)
    return report
