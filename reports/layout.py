"""The ``report:`` section of a matrix: named paper tables, each one declaration.

```yaml
report:
  baseline: dino                  # the paired-delta baseline (default: dino when present)
  tables:
    main:                         # the name: report/tables/main.{md,tex,csv}
      kind: main                  # main | deltas | ablation | cost
      rows: [dino, patchwise, random-init]          # row labels, in this order (default: every row)
      columns: ["*/knn/top1_k20", "shapes/dense/*"]   # dataset/eval/metric patterns (cost: dataset/quantity)
      caption: k-NN top-1 and dense mIoU on shapes.
      label: tab:main
      precision: 1                # digits after the point
```

Without a ``report:`` section every default table is written (:data:`DEFAULT_TABLES`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

KINDS = ("main", "deltas", "ablation", "cost")
REPORT_KEYS = ("baseline", "tables")
TABLE_KEYS = ("kind", "rows", "columns", "caption", "label", "precision", "baseline")
COST_QUANTITIES = ("images_per_s", "wall_min", "device_h", "peak_memory_mb", "time_ratio")


class LayoutError(ValueError):
    """A ``report:`` section that does not follow :mod:`.layout`'s shape."""


@dataclass(frozen=True)
class TableLayout:
    name: str
    kind: str = "main"
    rows: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    caption: str | None = None
    label: str | None = None
    precision: int = 1
    baseline: str | None = None


@dataclass(frozen=True)
class ReportLayout:
    baseline: str | None
    tables: tuple[TableLayout, ...]
    declared: bool  # False: the default tables of a matrix without a ``report:`` section


DEFAULT_TABLES = tuple(TableLayout(kind, kind) for kind in KINDS)


def _check_keys(section: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise LayoutError(f"{where} must be a mapping, got {type(section).__name__}")
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise LayoutError(f"{where}: unknown key '{key}'.{hint} Valid keys: {', '.join(allowed)}")
    return section


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise LayoutError(f"{where} must be a non-empty list of names, e.g. [dino, patchwise]")
    return tuple(value)


def _known(name: str, labels: set[str] | None, where: str) -> None:
    if labels is not None and name not in labels:
        close = difflib.get_close_matches(name, sorted(labels), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise LayoutError(f"{where}: '{name}' is not a row of this matrix.{hint} Rows: {', '.join(sorted(labels))}")


def parse_layout(section: Any, labels: set[str] | None = None) -> ReportLayout:
    """The validated layout of a ``report:`` section (``None``: the defaults). ``labels``, when given, are the
    matrix's row labels (method, method/ablation, reference), and every row and baseline must be one of them."""
    if section is None:
        return ReportLayout(None, DEFAULT_TABLES, declared=False)
    section = _check_keys(section, REPORT_KEYS, "report")
    baseline = section.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, str):
            raise LayoutError("report.baseline must be a row label, e.g. dino")
        _known(baseline, labels, "report.baseline")
    tables_section = section.get("tables")
    if isinstance(tables_section, list):  # matrix.json's form, which keeps the order through sorted JSON keys
        if not all(isinstance(t, dict) and "name" in t for t in tables_section):
            raise LayoutError("report.tables as a list: every entry needs a 'name'")
        tables_section = {t["name"]: {k: v for k, v in t.items() if k != "name"} for t in tables_section}
    if not isinstance(tables_section, dict) or not tables_section:
        raise LayoutError("report.tables must map table names to their layout, e.g. {main: {kind: main}}")
    tables = []
    for name, raw in tables_section.items():
        where = f"report.tables.{name}"
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise LayoutError(f"{where}: a table name is a file stem of letters, digits, - and _")
        raw = _check_keys(raw if raw is not None else {}, TABLE_KEYS, where)
        kind = raw.get("kind", "main")
        if kind not in KINDS:
            raise LayoutError(f"{where}.kind: '{kind}' is not one of {', '.join(KINDS)}")
        rows = _strings(raw["rows"], f"{where}.rows") if "rows" in raw else None
        for row in rows or ():
            _known(row, labels, f"{where}.rows")
        columns = _strings(raw["columns"], f"{where}.columns") if "columns" in raw else None
        parts = 2 if kind == "cost" else 3
        for pattern in columns or ():
            if pattern.count("/") < parts - 1:  # a metric of another evaluation dataset is "voc2012/miou"
                shape, example = (("dataset/quantity", "shapes/images_per_s") if kind == "cost" else
                                  ("dataset/eval/metric", "shapes/knn/top1_k20"))
                raise LayoutError(f"{where}.columns: '{pattern}' is not a {shape} pattern (* matches anything), "
                                  f"e.g. {example}")
        precision = raw.get("precision", 1)
        if not isinstance(precision, int) or isinstance(precision, bool) or not 0 <= precision <= 4:
            raise LayoutError(f"{where}.precision must be an integer from 0 to 4, got {precision!r}")
        for key in ("caption", "label"):
            if key in raw and not isinstance(raw[key], str):
                raise LayoutError(f"{where}.{key} must be a string")
        table_baseline = raw.get("baseline")
        if table_baseline is not None:
            if not isinstance(table_baseline, str):
                raise LayoutError(f"{where}.baseline must be a row label, e.g. dino")
            _known(table_baseline, labels, f"{where}.baseline")
        tables.append(TableLayout(name, kind, rows, columns, raw.get("caption"), raw.get("label"), precision,
                                  table_baseline))
    return ReportLayout(baseline, tuple(tables), declared=True)


def layout_to_dict(layout: ReportLayout) -> dict[str, Any] | None:
    """The ``report:`` section again, its tables as a list in their declared order (as matrix.json keeps it,
    with sorted keys), or ``None`` for the defaults."""
    if not layout.declared:
        return None
    tables = []
    for t in layout.tables:
        entry: dict[str, Any] = {"name": t.name, "kind": t.kind, "precision": t.precision}
        for key in ("rows", "columns"):
            if getattr(t, key) is not None:
                entry[key] = list(getattr(t, key))
        for key in ("caption", "label", "baseline"):
            if getattr(t, key) is not None:
                entry[key] = getattr(t, key)
        tables.append(entry)
    return {"baseline": layout.baseline, "tables": tables} if layout.baseline else {"tables": tables}
