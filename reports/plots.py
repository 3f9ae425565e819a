"""Seaborn figures (PNG and PDF) for a report: per (evaluation, metric) every row with its seeds as dots and
mean ± std; ablation deltas as bars with error bars; accuracy against throughput; training curves per method with
seeds as bands. One colour per row label, the same in every figure (:func:`palette`); sized for a paper column.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .schema import REFERENCES  # noqa: E402
from .stats import paired_deltas  # noqa: E402
from .tables import BASE_ABLATION, PERCENT, ReportData  # noqa: E402

COLUMN_WIDTH_IN = 3.4  # one column of a two-column paper
CURVE_QUANTITIES = (("loss", "loss"), ("teacher_entropy", "teacher entropy (nats)"),
                    ("kl", "student–teacher KL (nats)"), ("lr", "learning rate"))
REFERENCE_GREYS = ("#7f7f7f", "#a6a6a6", "#4d4d4d")
PNG_DPI = 200


def palette(rows: list[str]) -> dict[str, str]:
    """One colour per row label: the colour-blind palette for methods (in row order), greys for references."""
    methods = [r for r in rows if r not in REFERENCES]
    colours = sns.color_palette("colorblind" if len(methods) <= 10 else "husl", max(len(methods), 1)).as_hex()
    mapping = dict(zip(methods, colours))
    mapping.update({r: REFERENCE_GREYS[REFERENCES.index(r) % len(REFERENCE_GREYS)] for r in rows if r in REFERENCES})
    return mapping


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    fig.savefig(png, dpi=PNG_DPI, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return [png, pdf]


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.9):
        yield


def _slug(*parts: str) -> str:
    return "_".join(p.replace("/", "-").replace(" ", "-") for p in parts)


def point_plots(data: ReportData, colours: dict[str, str], out_dir: Path) -> list[Path]:
    """Per (eval, metric): one panel per dataset, a row per label, seeds as dots (× collapsed), mean ± std."""
    written: list[Path] = []
    if data.long.empty:
        return written
    evals_metrics = list(dict.fromkeys((e, m) for _, e, m in data.columns))
    datasets = list(dict.fromkeys(d for d, _, _ in data.columns))
    for eval_name, metric in evals_metrics:
        sel = data.long[(data.long["eval"] == eval_name) & (data.long["metric"] == metric)].copy()
        sel["value %"] = sel["value"] * PERCENT
        rows = [r for r in data.rows if r in set(sel["method"])]
        panels = [d for d in datasets if d in set(sel["dataset"])]
        with _style():
            fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=True,
                                     figsize=(COLUMN_WIDTH_IN * min(len(panels), 2) / (1 if len(panels) == 1 else 1.15),
                                              0.8 + 0.28 * len(rows)))
            for ax, dataset in zip(axes[0], panels):
                part = sel[sel["dataset"] == dataset]
                sns.stripplot(data=part, x="value %", y="method", hue="method", order=rows, hue_order=rows,
                              palette=colours, size=3.5, alpha=0.6, jitter=0.15, legend=False, ax=ax)
                sns.pointplot(data=part, x="value %", y="method", hue="method", order=rows, hue_order=rows,
                              palette=colours, errorbar="sd", markers="D", markersize=4, linestyle="none",
                              err_kws={"linewidth": 1.2}, legend=False, ax=ax)
                collapsed = part[part["collapsed"] == True]  # noqa: E712
                if not collapsed.empty:
                    ax.scatter(collapsed["value %"], [rows.index(m) for m in collapsed["method"]], marker="x",
                               color="black", s=18, linewidths=0.8, zorder=5, label="collapsed seed")
                ax.set_title(dataset)
                ax.set_xlabel(f"{eval_name} {metric} (%)")
                ax.set_ylabel("")
            handles = [h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]][:1]
            if handles:
                fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize="x-small",
                           frameon=False)
            fig.tight_layout()
            written += _save(fig, out_dir, _slug("points", eval_name, metric))
    return written


def ablation_plots(data: ReportData, colours: dict[str, str], out_dir: Path) -> list[Path]:
    """Per (eval, metric): Δ of every ablation against its method's base, mean ± std over seeds, as bars."""
    written: list[Path] = []
    if data.long.empty:
        return written
    bases = sorted({r.split("/")[0] for r in data.rows if r.endswith(f"/{BASE_ABLATION}")})
    frames = []
    for method in bases:
        others = [r for r in data.rows if r.startswith(f"{method}/") and r != f"{method}/{BASE_ABLATION}"]
        deltas = paired_deltas(data.long, f"{method}/{BASE_ABLATION}", others)
        for d in deltas.itertuples():
            for seed, delta in zip(json.loads(d.seeds), json.loads(d.deltas)):
                frames.append({"method": d.method, "dataset": d.dataset, "eval": d.eval, "metric": d.metric,
                               "seed": seed, "Δ (points)": delta * PERCENT})
    if not frames:
        return written
    per_seed = pd.DataFrame(frames)
    for (eval_name, metric), part in per_seed.groupby(["eval", "metric"], sort=False):
        rows = [r for r in data.rows if r in set(part["method"])]
        panels = [d for d in dict.fromkeys(c[0] for c in data.columns) if d in set(part["dataset"])]
        with _style():
            fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=True,
                                     figsize=(COLUMN_WIDTH_IN * min(len(panels), 2) / (1 if len(panels) == 1 else 1.15),
                                              0.8 + 0.3 * len(rows)))
            for ax, dataset in zip(axes[0], panels):
                sns.barplot(data=part[part["dataset"] == dataset], x="Δ (points)", y="method", hue="method",
                            order=rows, hue_order=rows, palette=colours, errorbar="sd", capsize=0.2,
                            err_kws={"linewidth": 1.0}, legend=False, ax=ax)
                ax.axvline(0, color="black", linewidth=0.8)
                ax.set_title(dataset)
                ax.set_xlabel(f"Δ {eval_name} {metric} vs base (points)")
                ax.set_ylabel("")
            fig.tight_layout()
            written += _save(fig, out_dir, _slug("ablation", eval_name, metric))
    return written


def cost_plots(data: ReportData, colours: dict[str, str], out_dir: Path) -> list[Path]:
    """Per (eval, metric): the metric (mean ± std over seeds) against pretraining images/s, one point per row."""
    written: list[Path] = []
    s = data.summaries
    if data.long.empty or s.empty:
        return written
    throughput = s.groupby(["label", "dataset"])["images_per_s"].agg(["mean", "std"]).reset_index()
    evals_metrics = list(dict.fromkeys((e, m) for _, e, m in data.columns))
    datasets = [d for d in dict.fromkeys(c[0] for c in data.columns) if d in set(s["dataset"])]
    for eval_name, metric in evals_metrics:
        sel = data.long[(data.long["eval"] == eval_name) & (data.long["metric"] == metric)]
        acc = sel.groupby(["method", "dataset"])["value"].agg(["mean", "std"]).reset_index()
        points = acc.merge(throughput, left_on=["method", "dataset"], right_on=["label", "dataset"],
                           suffixes=("_acc", "_ips"))
        if points.empty:
            continue
        rows = [r for r in data.rows if r in set(points["method"])]
        panels = [d for d in datasets if d in set(points["dataset"])]
        with _style():
            fig, axes = plt.subplots(1, len(panels), squeeze=False,
                                     figsize=(COLUMN_WIDTH_IN * min(len(panels), 2) / (1 if len(panels) == 1 else 1.15),
                                              2.6))
            for ax, dataset in zip(axes[0], panels):
                part = points[points["dataset"] == dataset].set_index("method").loc[[r for r in rows if r in set(
                    points.loc[points["dataset"] == dataset, "method"])]]
                for method, p in part.iterrows():
                    ax.errorbar(p["mean_ips"], p["mean_acc"] * PERCENT, xerr=p["std_ips"] if pd.notna(p["std_ips"])
                                else None, yerr=p["std_acc"] * PERCENT if pd.notna(p["std_acc"]) else None,
                                fmt="o", color=colours[method], markersize=5, capsize=2, linewidth=1, label=method)
                ax.set_title(dataset)
                ax.set_xlabel("pretraining images/s")
                ax.set_ylabel(f"{eval_name} {metric} (%)")
            handles, labels = axes[0][0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 3),
                       fontsize="x-small", frameon=False)
            fig.tight_layout()
            written += _save(fig, out_dir, _slug("cost", eval_name, metric))
    return written


def curve_plots(logs: pd.DataFrame, data: ReportData, colours: dict[str, str], out_dir: Path) -> list[Path]:
    """Per dataset: loss, teacher entropy, student–teacher KL and lr against the optimiser step, one line per row
    (mean over seeds) with a band of ± std over seeds."""
    written: list[Path] = []
    if logs.empty:
        return written
    for dataset in dict.fromkeys(logs["dataset"]):
        part = logs[logs["dataset"] == dataset]
        quantities = [(q, name) for q, name in CURVE_QUANTITIES if q in set(part["quantity"])]
        if not quantities:
            continue
        rows = [r for r in data.rows if r in set(part["label"])] + sorted(set(part["label"]) - set(data.rows))
        with _style():
            fig, axes = plt.subplots(2, 2, squeeze=False, figsize=(2 * COLUMN_WIDTH_IN, 4.2))
            flat = axes.flatten()
            for ax, (quantity, name) in zip(flat, quantities):
                sns.lineplot(data=part[part["quantity"] == quantity], x="step", y="value", hue="label",
                             hue_order=rows, palette=colours, errorbar="sd", linewidth=1.0, legend=False, ax=ax)
                ax.set_ylabel(name)
                ax.set_xlabel("optimiser step")
                if quantity == "lr":
                    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
            for ax in flat[len(quantities):]:
                ax.set_visible(False)
            handles = [plt.Line2D([], [], color=colours.get(r, "black"), label=r) for r in rows]
            fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(rows), 4),
                       fontsize="x-small", frameon=False)
            fig.suptitle(f"training curves on {dataset} (mean ± std over seeds)", fontsize="small")
            fig.tight_layout()
            written += _save(fig, out_dir, _slug("curves", dataset))
    return written


def write_plots(data: ReportData, logs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Every figure of the report, PNG and PDF, under ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    colours = palette(data.rows + sorted(set(logs["label"]) - set(data.rows)) if not logs.empty else data.rows)
    return (point_plots(data, colours, out_dir) + ablation_plots(data, colours, out_dir)
            + cost_plots(data, colours, out_dir) + curve_plots(logs, data, colours, out_dir))
