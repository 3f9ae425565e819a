"""Paper-style tables from the long results table, each rendered as Markdown (tabulate), LaTeX (booktabs) and CSV.

Four kinds (:data:`.layout.KINDS`): ``main`` (methods × (dataset, eval, metric), mean ± std over seeds), ``deltas``
(paired differences against a baseline), ``ablation`` (each ablation against its method's ``base``) and ``cost``
(throughput, wall time, device-hours, peak memory, time per image against the baseline). Reference rows
(:data:`.schema.REFERENCES`) come last, below a rule, and never compete for best / second best.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TypeVar

import pandas as pd
from tabulate import tabulate

from .layout import TableLayout
from .schema import REFERENCES
from .stats import CELL_KEYS, MIN_PAIRS_FOR_TEST, PAIRED_TEST, aggregate, paired_deltas, significance_mark

REFERENCE_ORDER = REFERENCES  # the reference rows, last, in this order
PERCENT = 100.0  # metrics are fractions; tables show percent (and deltas percentage points)
COLLAPSED, UNFAIR = "†", "‡"
BASE_ABLATION = "base"
LATEX_MARKS = {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "**": r"$^{**}$", "*": r"$^{*}$"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "Δ": r"$\Delta$", "−": r"$-$",
                 "–": "--", "<": r"$<$", ">": r"$>$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$"}


@dataclass
class ReportData:
    """What every table reads: the records (of the current runs), the runs, the cells without a record and why,
    the train summaries, the runs outside a fair comparison, and the row and column order."""

    long: pd.DataFrame
    runs: pd.DataFrame
    states: pd.DataFrame  # reports.collect.cell_states
    summaries: pd.DataFrame  # reports.collect.train_summaries
    unfair: dict[str, str]  # run_id → why it is outside the fair comparison
    rows: list[str]
    columns: list[tuple[str, str, str]]  # (dataset, eval, metric)
    matrix: str

    @classmethod
    def from_long(cls, long: pd.DataFrame) -> "ReportData":
        """Records only (no run folders): every row and column of the records, nothing failed or unfair."""
        return prepare(long, pd.DataFrame(columns=["run_id", "label", "dataset", "seed", "evaluations"]),
                       pd.DataFrame(columns=["label", "dataset", "seed", "run_id", "eval", "state", "reason"]),
                       pd.DataFrame(columns=["label", "dataset", "seed", "run_id"]), {})


def prepare(long: pd.DataFrame, runs: pd.DataFrame, states: pd.DataFrame, summaries: pd.DataFrame,
            unfair: dict[str, str], run_order: list[str] | None = None) -> ReportData:
    """Row order: the order of the runs in ``run_order`` (the matrix's run ids), else alphabetical, references
    last; column order: datasets and evaluations as the runs list them, metrics alphabetical."""
    order = {run_id: i for i, run_id in enumerate(run_order or [])}
    runs = runs.assign(_order=[order.get(r, len(order)) for r in runs["run_id"]]).sort_values(
        ["_order", "label", "dataset", "seed"], kind="stable")
    labels = list(dict.fromkeys(runs["label"]))
    labels += sorted(set(long["method"]) - set(labels)) if not long.empty else []
    if not run_order:
        labels = sorted(labels)
    rows = [m for m in labels if m not in REFERENCE_ORDER] + [m for m in REFERENCE_ORDER if m in labels]
    datasets = list(dict.fromkeys(list(runs["dataset"]) + (sorted(long["dataset"].unique()) if not long.empty else [])))
    evals = list(dict.fromkeys([e for evals in runs["evaluations"] for e in evals]
                               + (sorted(long["eval"].unique()) if not long.empty else [])))
    columns = []
    if not long.empty:
        present = set(zip(long["dataset"], long["eval"], long["metric"]))
        metrics = sorted(long["metric"].unique())
        columns = [(d, e, m) for d in datasets for e in evals for m in metrics if (d, e, m) in present]
    matrix = str(long["matrix"].iloc[0]) if not long.empty else ""
    return ReportData(long, runs.drop(columns="_order"), states, summaries, unfair, rows, columns, matrix)


@dataclass
class Cell:
    """One table cell: a number (mean, optional ± std) or a status, with footnote marks and its rank."""

    mean: float | None = None
    std: float | None = None
    precision: int = 1
    signed: bool = False
    marks: str = ""  # footnote marks, e.g. † (collapsed), ‡ (unfair), * / ** (significant)
    suffix: str = ""  # e.g. "(n=1)"
    status: str | None = None  # instead of a number: "failed (pretrain: diverged)", "missing", "running"
    rank: int = 0  # 1: best in its column, 2: second best

    def rounded(self) -> float | None:
        return None if self.mean is None or self.status else round(self.mean, self.precision)

    def _number(self, value: float, signed: bool) -> str:
        value = round(value, self.precision) + 0.0  # + 0.0: no "-0.0"
        return f"{value:+.{self.precision}f}" if signed and value != 0 else f"{value:.{self.precision}f}"

    def markdown(self) -> str:
        """Plain text: Markdown emphasis would collide with the significance marks (``**``)."""
        if self.status is not None:
            return self.status
        assert self.mean is not None, "a cell holds a status or a mean"
        text = self._number(self.mean, self.signed)
        if self.std is not None and not math.isnan(self.std):
            text += f" ± {self._number(self.std, False)}"
        return " ".join(t for t in (text + self.marks, self.suffix) if t)

    def html(self) -> str:
        if self.status is not None:
            return html.escape(self.status)
        text = html.escape(self.markdown().removesuffix(self.suffix).strip().removesuffix(self.marks))
        text = {1: f"<strong>{text}</strong>", 2: f"<u>{text}</u>"}.get(self.rank, text)
        marks = f"<sup>{html.escape(self.marks)}</sup>" if self.marks else ""
        return " ".join(t for t in (text + marks, html.escape(self.suffix)) if t)

    def latex(self) -> str:
        if self.status is not None:
            return latex_escape(self.status)
        assert self.mean is not None, "a cell holds a status or a mean"
        text = self._number(self.mean, self.signed).replace("-", "$-$")
        if self.std is not None and not math.isnan(self.std):
            text += rf" $\pm$ {self._number(self.std, False)}"
        text = {1: rf"\textbf{{{text}}}", 2: rf"\underline{{{text}}}"}.get(self.rank, text)
        marks = "".join(LATEX_MARKS[m] for m in _split_marks(self.marks))
        return " ".join(t for t in (text + marks, latex_escape(self.suffix)) if t)


def _split_marks(marks: str) -> list[str]:
    out, i = [], 0
    while i < len(marks):
        token = "**" if marks.startswith("**", i) else marks[i]
        out.append(token)
        i += len(token)
    return out


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


@dataclass
class Table:
    """A rendered-to-be table: rows × (group, name) columns of cells, lead columns after the row label, notes, and
    the full-precision data for the CSV."""

    name: str
    kind: str
    title: str
    caption: str
    label: str
    rows: list[str]
    columns: list[tuple[str, str]]  # (group, name): the group spans a header row in LaTeX (the dataset)
    cells: dict[tuple[str, tuple[str, str]], Cell]
    lead_header: list[str] = field(default_factory=list)
    lead: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)

    def cell(self, row: str, column: tuple[str, str]) -> Cell:
        return self.cells.get((row, column), Cell(status="–"))

    def markdown(self) -> str:
        headers = ["method", *self.lead_header, *(f"{g} {n}".strip() for g, n in self.columns)]
        body = [[row, *self.lead.get(row, []), *(self.cell(row, c).markdown() for c in self.columns)]
                for row in self.rows]
        table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
        caption = f"**{self.title}.** {self.caption}".rstrip()
        notes = "".join(f"\n{note}" for note in self.notes)
        return f"{caption}\n\n{table}\n" + (f"{notes}\n" if notes else "")

    def latex(self) -> str:
        n_lead = 1 + len(self.lead_header)
        spec = "l" + "r" * len(self.lead_header) + "c" * len(self.columns)
        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(self.caption)}}}",
                 rf"\label{{{self.label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        groups: list[tuple[str, int]] = []
        for group, _ in self.columns:
            if groups and groups[-1][0] == group:
                groups[-1] = (group, groups[-1][1] + 1)
            else:
                groups.append((group, 1))
        if any(g for g, _ in groups):
            spans, rules, start = [""] * n_lead, [], n_lead + 1
            for group, width in groups:
                spans.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
                start += width
            lines += [" & ".join(spans) + r" \\", " ".join(rules)]
        header = ["method", *self.lead_header, *(name for _, name in self.columns)]
        lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
        lines.append(r"\midrule")
        previous_reference = False
        for i, row in enumerate(self.rows):
            is_reference = row in REFERENCE_ORDER
            if is_reference and not previous_reference and i > 0:
                lines.append(r"\midrule")
            previous_reference = is_reference
            cells = [latex_escape(row), *(latex_escape(x) for x in self.lead.get(row, [])),
                     *(self.cell(row, c).latex() for c in self.columns)]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            lines.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(n) for n in self.notes) + "}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        return self.data.to_csv(index=False, lineterminator="\n")

    def html(self) -> str:
        """An HTML table: best in bold, second underlined (as in LaTeX)."""
        headers = [html.escape(h) for h in
                   ["method", *self.lead_header, *(f"{g} {n}".strip() for g, n in self.columns)]]
        body = [[html.escape(row), *map(html.escape, self.lead.get(row, [])),
                 *(self.cell(row, c).html() for c in self.columns)] for row in self.rows]
        return tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)


def rank_columns(table: Table, higher_is_better: dict[tuple[str, str], bool]) -> None:
    """Mark the best (rank 1) and second best (rank 2) value of each column among the non-reference rows, as
    shown (rounded to the cell's precision); ties share a rank."""
    for column, higher in higher_is_better.items():
        cells = [table.cells[(r, column)] for r in table.rows
                 if r not in REFERENCE_ORDER and (r, column) in table.cells]
        values = sorted({v for v in (c.rounded() for c in cells) if v is not None}, reverse=higher)
        if len(values) < 2:  # one value for every row: nothing stands out
            continue
        for cell in cells:
            if values and cell.rounded() == values[0]:
                cell.rank = 1
            elif len(values) > 1 and cell.rounded() == values[1]:
                cell.rank = 2


Column = TypeVar("Column", bound=tuple[str, ...])  # (dataset, evaluation, metric) or (dataset, metric)


def _select_columns(columns: list[Column], patterns: tuple[str, ...] | None) -> list[Column]:
    if patterns is None:
        return list(columns)
    chosen: list[Column] = []
    for pattern in patterns:
        chosen += [c for c in columns if fnmatchcase("/".join(c), pattern) and c not in chosen]
    return chosen


def _select_rows(rows: list[str], wanted: tuple[str, ...] | None) -> list[str]:
    return list(wanted) if wanted is not None else list(rows)


def _display(column: tuple[str, str, str]) -> tuple[str, str]:
    dataset, eval_name, metric = column
    return dataset, f"{eval_name} {metric}"


def _status(data: ReportData, label: str, dataset: str, eval_name: str) -> str:
    states = data.states[(data.states["label"] == label) & (data.states["dataset"] == dataset)
                         & (data.states["eval"] == eval_name)]
    failed = sorted(set(states.loc[states["state"] == "failed", "reason"]))
    if failed:
        return f"failed ({'; '.join(failed)})"
    if (states["state"] == "running").any():
        return "running"
    return "missing"


def _expected_seeds(data: ReportData, label: str, dataset: str) -> int:
    """The seeds a row has on a dataset: its run folders' (failed ones included), else its records'."""
    runs = data.runs[(data.runs["label"] == label) & (data.runs["dataset"] == dataset)]
    if not runs.empty:
        return runs["seed"].nunique()
    long = data.long
    return 0 if long.empty else long[(long["method"] == label) & (long["dataset"] == dataset)]["seed"].nunique()


def _seed_list(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _collapse_notes(data: ReportData, rows: list[str], datasets: set[str]) -> tuple[set[tuple[str, str, str]], str]:
    """The (label, dataset, eval) cells with a collapsed seed, and their footnote."""
    long = data.long
    if long.empty:
        return set(), ""
    hit = long[(long["collapsed"] == True) & long["method"].isin(rows) & long["dataset"].isin(datasets)]  # noqa: E712
    if hit.empty:
        return set(), ""
    parts = [f"{label} on {dataset} ({_seed_list(group['seed'].unique())})"
             for (label, dataset), group in hit.groupby(["method", "dataset"], sort=True)]
    note = (f"{COLLAPSED} collapsed runs (final student–teacher KL < 0.01 nats): " + "; ".join(parts)
            + ". Their values are included in the mean.")
    return set(zip(hit["method"], hit["dataset"], hit["eval"])), note


def _failure_note(data: ReportData, rows: list[str], datasets: set[str], evals: set[str]) -> str:
    states = data.states[data.states["label"].isin(rows) & data.states["dataset"].isin(datasets)
                         & data.states["eval"].isin(evals)]
    if states.empty:
        return ""
    parts = []
    for (label, dataset, seed), group in states.groupby(["label", "dataset", "seed"], sort=True):
        what = sorted({f"{s} ({r})" if r else s for s, r in zip(group["state"], group["reason"])})
        parts.append(f"{label} on {dataset}, seed {seed}: {', '.join(what)} [{', '.join(sorted(group['eval']))}]")
    return "Without a result: " + "; ".join(parts) + "."


def _unfair_note(data: ReportData, run_ids: set[str]) -> str:
    hit = sorted(r for r in run_ids if r in data.unfair)
    if not hit:
        return ""
    return (f"{UNFAIR} UNFAIR: reported with --allow-unfair; these runs differ from the others on a setting held "
            f"fixed: " + "; ".join(f"{r} ({data.unfair[r]})" for r in hit) + ".")


def main_table(data: ReportData, layout: TableLayout) -> Table:
    """Methods × (dataset, eval, metric): mean ± std over seeds in %, the seed count, collapsed and unfair marks,
    cells without a result shown with their state and reason."""
    rows = _select_rows(data.rows, layout.rows)
    columns = _select_columns(data.columns, layout.columns)
    agg = aggregate(data.long[data.long["method"].isin(rows)]) if not data.long.empty else aggregate(data.long)
    by_key = {(r.method, r.dataset, r.eval, r.metric): r for r in agg.itertuples()}
    collapsed, collapse_note = _collapse_notes(data, rows, {c[0] for c in columns})
    cells: dict[tuple[str, tuple[str, str]], Cell] = {}
    csv_rows, used_runs = [], set()
    for row in rows:
        for column in columns:
            dataset, eval_name, metric = column
            stat = by_key.get((row, dataset, eval_name, metric))
            expected = _expected_seeds(data, row, dataset)
            if stat is None:
                status = _status(data, row, dataset, eval_name)
                cells[(row, _display(column))] = Cell(status=status)
                csv_rows.append({"method": row, "dataset": dataset, "eval": eval_name, "metric": metric,
                                 "mean": float("nan"), "std": float("nan"), "n": 0, "seeds": "[]", "values": "[]",
                                 "status": status})
                continue
            sel = data.long[(data.long["method"] == row) & (data.long["dataset"] == dataset)
                            & (data.long["eval"] == eval_name) & (data.long["metric"] == metric)]
            run_ids = set(sel["run_id"])
            used_runs |= run_ids
            marks = (COLLAPSED if (row, dataset, eval_name) in collapsed else "") + \
                    (UNFAIR if run_ids & set(data.unfair) else "")
            suffix = f"(n={stat.n})" if stat.n < expected else ""
            cells[(row, _display(column))] = Cell(stat.mean * PERCENT, stat.std * PERCENT, layout.precision,
                                                  marks=marks, suffix=suffix)
            csv_rows.append({"method": row, "dataset": dataset, "eval": eval_name, "metric": metric,
                             "mean": stat.mean, "std": stat.std, "n": stat.n, "seeds": stat.seeds,
                             "values": stat.values, "status": "partial" if suffix else "ok"})
    display_columns = [_display(c) for c in columns]
    datasets, evals = {c[0] for c in columns}, {c[1] for c in columns}
    seeds = {row: [str(max((_expected_seeds(data, row, d) for d in datasets), default=0))] for row in rows}
    notes = ["Mean ± sample std (ddof = 1) over seeds, in %; (n=k): only k of the row's seeds have a result."]
    notes += [n for n in (collapse_note, _failure_note(data, rows, datasets, evals), _unfair_note(data, used_runs))
              if n]
    csv = pd.DataFrame(csv_rows, columns=["method", "dataset", "eval", "metric", "mean", "std", "n", "seeds",
                                          "values", "status"])
    caption = layout.caption or _default_caption(data, "mean ± std over seeds (%)")
    table = Table(layout.name, "main", "Results", caption, layout.label or f"tab:{layout.name}", rows,
                  display_columns, cells, ["seeds"], seeds, notes, csv)
    rank_columns(table, {c: True for c in display_columns})
    return table


def _default_caption(data: ReportData, what: str) -> str:
    return f"{data.matrix}: {what}." if data.matrix else f"{what[0].upper()}{what[1:]}."


def _delta_cells(deltas: pd.DataFrame, precision: int, unfair: dict[str, str], long: pd.DataFrame
                 ) -> dict[tuple[str, tuple[str, str]], Cell]:
    cells = {}
    for d in deltas.itertuples():
        if d.n_pairs < MIN_PAIRS_FOR_TEST:
            marks, suffix = "", f"(n={d.n_pairs}, untested)"
        else:
            marks, suffix = significance_mark(d.p), ""
        runs = set(long.loc[long["method"].isin([d.method, d.baseline]) & (long["dataset"] == d.dataset), "run_id"])
        if runs & set(unfair):
            marks += UNFAIR
        cells[(d.method, (d.dataset, f"{d.eval} {d.metric}"))] = Cell(
            d.mean_delta * PERCENT, d.std_delta * PERCENT, precision, signed=True, marks=marks, suffix=suffix)
    return cells


def _paired_note(baseline_text: str) -> str:
    return (f"Δ against {baseline_text} in percentage points, paired by dataset and seed: mean ± sample std of the "
            f"per-seed differences; * p < 0.05, ** p < 0.01, {PAIRED_TEST} (marked 'untested').")


def delta_table(data: ReportData, layout: TableLayout, baseline: str) -> Table | None:
    """Every row but the baseline: Δ against the baseline, paired over seeds, with the paired test's mark."""
    if data.long.empty or baseline not in set(data.long["method"]):
        return None
    rows = [r for r in _select_rows(data.rows, layout.rows) if r != baseline]
    columns = _select_columns(data.columns, layout.columns)
    deltas = paired_deltas(data.long, baseline, rows)
    wanted = set(columns)
    deltas = deltas[[(d, e, m) in wanted for d, e, m in zip(deltas["dataset"], deltas["eval"], deltas["metric"])]]
    cells = _delta_cells(deltas, layout.precision, data.unfair, data.long)
    for row in rows:
        for column in columns:
            cells.setdefault((row, _display(column)), Cell(status="no pairs"))
    used = set(data.long.loc[data.long["method"].isin(rows + [baseline]), "run_id"])
    notes = [_paired_note(f"{baseline}")] + [n for n in (_unfair_note(data, used),) if n]
    display_columns = [_display(c) for c in columns]
    table = Table(layout.name, "deltas", f"Paired deltas against {baseline}",
                  layout.caption or _default_caption(data, f"difference to {baseline} (percentage points)"),
                  layout.label or f"tab:{layout.name}", rows, display_columns, cells, notes=notes,
                  data=_order_deltas(deltas, rows, columns))
    rank_columns(table, {c: True for c in display_columns})
    return table


def _order_deltas(deltas: pd.DataFrame, rows: list[str], columns: list[tuple[str, str, str]]) -> pd.DataFrame:
    row_pos = {r: i for i, r in enumerate(rows)}
    col_pos = {c: i for i, c in enumerate(columns)}
    order = sorted(range(len(deltas)), key=lambda i: (row_pos[deltas["method"].iloc[i]],
                                                       col_pos[tuple(deltas[["dataset", "eval", "metric"]].iloc[i])]))
    return deltas.iloc[order].reset_index(drop=True)


def ablation_table(data: ReportData, layout: TableLayout) -> Table | None:
    """Per method with ablations: its ``base`` row (absolute, mean ± std in %) and every other ablation as Δ
    against it, paired over seeds."""
    ablated = data.runs[data.runs["ablation"].notna()] if "ablation" in data.runs else data.runs.iloc[0:0]
    bases = [m for m in dict.fromkeys(ablated["method"]) if f"{m}/{BASE_ABLATION}" in set(data.long.get("method", []))]
    if not bases:
        return None
    columns = _select_columns(data.columns, layout.columns)
    display_columns = [_display(c) for c in columns]
    rows, cells, frames = [], {}, []
    for method in bases:
        base = f"{method}/{BASE_ABLATION}"
        others = [r for r in data.rows if r.startswith(f"{method}/") and r != base]
        if layout.rows is not None:
            others = [r for r in layout.rows if r in others]
        base_table = main_table(data, TableLayout(layout.name, rows=(base,), columns=layout.columns,
                                                  precision=layout.precision))
        for column in display_columns:
            cells[(base, column)] = base_table.cell(base, column)
            cells[(base, column)].rank = 0
        deltas = paired_deltas(data.long, base, others)
        wanted = set(columns)
        deltas = deltas[[(d, e, m) in wanted for d, e, m in zip(deltas["dataset"], deltas["eval"], deltas["metric"])]]
        cells.update(_delta_cells(deltas, layout.precision, data.unfair, data.long))
        for row in others:
            for column in display_columns:
                cells.setdefault((row, column), Cell(status="no pairs"))
        rows += [base] + others
        frames.append(_order_deltas(deltas, others, columns))
    notes = [f"The {BASE_ABLATION} row: mean ± sample std over seeds, in %. The other rows: "
             + _paired_note(f"the {BASE_ABLATION} row of the same method")]
    table = Table(layout.name, "ablation", "Ablations",
                  layout.caption or _default_caption(data, f"ablations against {BASE_ABLATION}"),
                  layout.label or f"tab:{layout.name}", rows, display_columns, cells, notes=notes,
                  data=pd.concat(frames, ignore_index=True))
    rank_columns(table, {c: True for c in display_columns})
    for method in bases:  # the base rows are absolute values, not deltas: they do not compete
        for column in display_columns:
            cells[(f"{method}/{BASE_ABLATION}", column)].rank = 0
    return table


COST_COLUMNS = {  # quantity → (header, precision, higher is better)
    "images_per_s": ("images/s", 0, True),
    "wall_min": ("wall min", 1, False),
    "device_h": ("{device}-h", 3, False),
    "peak_memory_mb": ("peak MB", 0, False),
    "time_ratio": ("time ×{baseline}", 2, False),
}


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def cost_table(data: ReportData, layout: TableLayout, baseline: str | None) -> Table | None:
    """Per trained row and dataset: images/s and wall time (mean ± std over seeds), device-hours per run (wall ×
    processes), peak memory, and the time per training image relative to the baseline."""
    s = data.summaries
    if s.empty:
        return None
    s = s.sort_values(["label", "dataset", "seed"], kind="stable")  # one summation order, whatever the run ids
    rows = [r for r in _select_rows(data.rows, layout.rows) if r in set(s["label"])]
    device = "GPU" if (s["device_name"].fillna("cpu") != "cpu").all() else "CPU"
    datasets = [d for d in dict.fromkeys(c[0] for c in data.columns) if d in set(s["dataset"])] or \
        list(dict.fromkeys(s["dataset"]))
    has_baseline = baseline is not None and baseline in set(s["label"])
    quantities = [q for q in COST_COLUMNS if q != "time_ratio" or has_baseline]
    all_columns = [(d, q) for d in datasets for q in quantities]
    columns = _select_columns(all_columns, layout.columns)
    header = {q: COST_COLUMNS[q][0].format(device=device, baseline=baseline) for q in quantities}
    cells, csv_rows = {}, []
    for dataset in datasets:
        base_ips = s[(s["label"] == baseline) & (s["dataset"] == dataset)]["images_per_s"].mean() if has_baseline \
            else float("nan")
        for row in rows:
            runs = s[(s["label"] == row) & (s["dataset"] == dataset)]
            if runs.empty:
                continue
            ips = runs["images_per_s"].astype(float)
            wall = runs["wall_s"].astype(float)
            hours = wall * runs["world_size"].astype(float) / 3600
            memory = runs["peak_memory_mb"].astype(float)
            values = {"images_per_s": (ips.mean(), _std(ips)), "wall_min": (wall.mean() / 60, _std(wall / 60)),
                      "device_h": (hours.mean(), None), "peak_memory_mb": (memory.mean(), None),
                      "time_ratio": (base_ips / ips.mean(), None)}
            for quantity in quantities:
                if (dataset, quantity) in columns:
                    mean, spread = values[quantity]
                    cells[(row, (dataset, header[quantity]))] = Cell(mean, spread, COST_COLUMNS[quantity][1])
            csv_rows.append({"method": row, "dataset": dataset, "n": len(runs), "device": device,
                             "images_per_s_mean": ips.mean(), "images_per_s_std": _std(ips),
                             "wall_s_mean": wall.mean(), "wall_s_std": _std(wall),
                             "device_hours_mean": hours.mean(), "device_hours_total": hours.sum(),
                             "peak_memory_mb_mean": memory.mean(), "time_ratio": values["time_ratio"][0]})
    display_columns = [(d, header[q]) for d, q in columns]
    notes = [f"Per pretraining run, mean (± sample std) over seeds; {device}-h = wall time × processes; "
             + (f"time ×{baseline} = {baseline}'s images/s over the row's (time per training image, same batch)."
                if has_baseline else "no baseline: no time ratio.")]
    table = Table(layout.name, "cost", "Cost", layout.caption or _default_caption(data, "pretraining cost"),
                  layout.label or f"tab:{layout.name}", rows, display_columns, cells, notes=notes,
                  data=pd.DataFrame(csv_rows))
    rank_columns(table, {(d, header[q]): COST_COLUMNS[q][2] for d, q in columns})
    return table


def build_table(data: ReportData, layout: TableLayout, baseline: str | None) -> Table | None:
    """The table a layout declares, or ``None`` when the results cannot fill it (no baseline, no ablations)."""
    if layout.kind == "main":
        return main_table(data, layout)
    if layout.kind == "deltas":
        chosen = layout.baseline or baseline
        return delta_table(data, layout, chosen) if chosen else None
    if layout.kind == "ablation":
        return ablation_table(data, layout)
    return cost_table(data, layout, layout.baseline or baseline)


def method_table(long: pd.DataFrame, precision: int = 1) -> Table:
    """The main table of records alone (no run folders)."""
    return main_table(ReportData.from_long(long), TableLayout("main", precision=precision))


def write_table(table: Table, out_dir: Path, formats: set[str]) -> list[Path]:
    """Write ``table`` as ``<name>.md``, ``.tex`` and ``.csv`` (those in ``formats``) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, suffix, render in (("md", ".md", table.markdown), ("latex", ".tex", table.latex),
                                ("csv", ".csv", table.csv)):
        if fmt in formats:
            path = out_dir / f"{table.name}{suffix}"
            path.write_text(render())
            written.append(path)
    return written


def write_tables(tables: list[Table], out_dir: str | Path, formats: set[str]) -> list[Path]:
    return [p for t in tables for p in write_table(t, Path(out_dir), formats)]


__all__ = ["CELL_KEYS", "Cell", "ReportData", "Table", "aggregate", "build_table", "cost_table", "delta_table",
           "main_table", "ablation_table", "method_table", "prepare", "write_tables"]
