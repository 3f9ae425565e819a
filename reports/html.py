"""The report as one self-contained HTML file: the matrix and its fixed settings, the warnings, the tables, the
figures (PNG as base64 data URIs) and the provenance. No script, no stylesheet or font from the network."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .tables import Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .85em; }
th, td { padding: .25em .6em; text-align: right; border-bottom: 1px solid #e3e3e3; }
th { border-bottom: 2px solid #444; } td:first-child, th:first-child { text-align: left; white-space: nowrap; }
.notes { font-size: .8em; color: #555; max-width: 95ch; }
.warnings li { color: #8a3b00; } .unfair { background: #fff0e0; border: 1px solid #e0a060; padding: .5em 1em; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; width: calc(50% - 1.5em); }
figure.wide { width: calc(100% - 1.5em); }
figure img { max-width: 100%; height: auto; } figcaption { font-size: .8em; color: #555; }
code, pre { font-size: .85em; background: #f6f6f6; } pre { padding: .5em; overflow-x: auto; }
"""


def _list(items: list[str], css: str = "") -> str:
    if not items:
        return "<p>None.</p>"
    cls = f' class="{css}"' if css else ""
    return f"<ul{cls}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(_text(v))}</td></tr>" for k, v in rows)
    return f"<table><thead><tr><th>setting</th><th>value</th></tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


IDENTITY_KEYS = ("method", "dataset", "seed", "ablation")


def settings(specs: dict[str, dict[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, list[Any]]]]:
    """(held fixed, varied) over the runs' spec.yaml files: a setting with one value in every run that has it is
    fixed; the others vary (listed with their values)."""
    flat = [_flatten(s) for s in specs.values()]
    keys = sorted({k for f in flat for k in f})
    fixed, varied = [], []
    for key in keys:
        values = list(dict.fromkeys(_text(f[key]) for f in flat if key in f))
        if key.split(".")[0] in IDENTITY_KEYS or len(values) > 1:
            varied.append((key, values))
        else:
            fixed.append((key, values[0]))
    return fixed, varied


def provenance(long: pd.DataFrame, summaries: pd.DataFrame) -> list[tuple[str, Any]]:
    """The distinct code versions, package versions, hosts and devices behind the records."""
    rows: list[tuple[str, Any]] = []
    for column, name in (("prov_git_sha", "git SHA"), ("prov_git_dirty", "uncommitted changes"),
                         ("prov_python", "python"), ("prov_host", "hosts"),
                         ("prov_machine", "machines")):
        if column in long:
            rows.append((name, ", ".join(sorted({_text(v) for v in long[column].dropna()}))))
    if "prov_versions" in long:
        versions: dict[str, set[str]] = {}
        for entry in long["prov_versions"].dropna():
            for package, version in entry.items():
                versions.setdefault(package, set()).add(str(version))
        rows += [(f"version of {p}", ", ".join(sorted(v))) for p, v in sorted(versions.items())]
    devices = sorted({str(v) for v in summaries.get("device_name", pd.Series(dtype=object)).dropna()})
    if devices:
        rows.append(("pretraining devices", ", ".join(devices)))
    worlds = sorted({int(v) for v in summaries.get("world_size", pd.Series(dtype=object)).dropna()})
    if worlds:
        rows.append(("processes per run", ", ".join(map(str, worlds))))
    return rows


FIGURE_KINDS = (("points", "Every row, seeds as dots, mean ± std"), ("ablation", "Ablations against base"),
                ("cost", "Accuracy against pretraining throughput"), ("curves", "Training curves"))


def _figures(paths: list[Path]) -> list[str]:
    parts = []
    for kind, title in FIGURE_KINDS:
        chosen = [p for p in paths if p.suffix == ".png" and p.stem.split("_")[0] == kind]
        if chosen:
            parts.append(f"<h3>{html.escape(title)}</h3>")
            parts += [_figure(p, wide=kind == "curves") for p in chosen]
    return parts


def _figure(path: Path, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.stem)
    css = ' class="wide"' if wide else ""
    return (f'<figure{css}><img src="data:image/png;base64,{data}" alt="{name}">'
            f"<figcaption>{name} (PDF next to it in figures/)</figcaption></figure>")


def _table(table: Table) -> str:
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in table.notes)
    return (f'<h3 id="table-{html.escape(table.name)}">{html.escape(table.title)} '
            f"<small>({html.escape(table.name)})</small></h3><p>{html.escape(table.caption)}</p>"
            f'{table.html()}<div class="notes">{notes}</div>')


def render_html(*, matrix: str, declaration: dict[str, Any], specs: dict[str, dict[str, Any]],
                tables: list[Table], figures: list[Path], warnings: list[str], unfair: dict[str, str],
                long: pd.DataFrame, summaries: pd.DataFrame) -> str:
    fixed, varied = settings(specs)
    unfair_box = ""
    if unfair:
        unfair_box = ('<div class="unfair"><strong>Unfair mix, reported with --allow-unfair.</strong> These runs '
                      "differ from the others on a setting held fixed; their cells are marked ‡."
                      + _list([f"{r}: {why}" for r, why in sorted(unfair.items())]) + "</div>")
    ablations = declaration.get("ablations") or {}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>patchbench report: {html.escape(matrix)}</title><style>{STYLE}</style></head><body>",
        f"<h1>patchbench report: {html.escape(matrix)}</h1>",
        f"<p>{len(specs)} runs, {long['run_id'].nunique() if not long.empty else 0} with results, "
        f"{len(long)} metric values. Metrics in %, mean ± sample std over seeds.</p>",
        unfair_box,
        '<h2 id="warnings">Warnings</h2>', _list(warnings, "warnings"),
        '<h2 id="tables">Tables</h2>', *(_table(t) for t in tables),
        '<h2 id="figures">Figures</h2>', *_figures(figures),
        '<h2 id="matrix">Matrix</h2>',
        f"<p>Name <code>{html.escape(matrix)}</code>"
        + (f", file <code>{html.escape(str(declaration['file']))}</code>" if declaration.get("file") else "")
        + "; declared ablations:</p>"
        f"<pre>{html.escape(json.dumps(ablations, indent=2, sort_keys=True))}</pre>",
        "<h3>Varied</h3>", _kv_table([(k, ", ".join(v)) for k, v in varied]),
        "<h3>Held fixed</h3>", _kv_table(fixed),
        '<h2 id="provenance">Provenance</h2>', _kv_table(provenance(long, summaries)),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
