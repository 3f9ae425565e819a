"""The reporting stage on its own: collect, aggregate, the paired statistics, the tables and their renderings, the
layouts, the figures and the ``report`` command, on hand-written records (tests/reports/fixtures/results/, written by
tests/reports/fixtures/write_results.py) and on records written inline below."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from patchbench.benchmark.cli import main
from patchbench.benchmark.config import ConfigError
from patchbench.benchmark.matrix import load_matrix
from patchbench.reports import (
    LayoutError,
    OldSchemaError,
    RecordError,
    aggregate,
    build_report,
    cell_states,
    collect,
    method_table,
    paired_deltas,
    paired_test,
    parse_layout,
    read_results,
    validate_record,
)
from patchbench.reports.layout import TableLayout
from patchbench.reports.plots import palette
from patchbench.reports.schema import RUN_RESULTS_DIR, SCHEMA_VERSION, SPEC_FILE, STATE_DIR, TRAIN_LOG, TRAIN_SUMMARY
from patchbench.reports.tables import Cell, ReportData, main_table

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = FIXTURES / "results"
EXPECTED = FIXTURES / "expected"
# PATCHBENCH_UPDATE_GOLDEN=1 rewrites tests/reports/fixtures/expected/ (then review!)
UPDATE_GOLDEN = os.environ.get("PATCHBENCH_UPDATE_GOLDEN") == "1"


def record(method: str, seed: int, metrics: dict[str, float], eval_name: str = "knn", dataset: str = "shapes",
           collapsed: bool | None = False, **extra) -> dict:
    return {"schema": SCHEMA_VERSION, "run_id": f"{method.replace('/', '-')}-{dataset}-{seed}", "matrix": "m",
            "method": method, "dataset": dataset, "backbone": "vit-pico/4", "seed": seed, "eval": eval_name,
            "eval_protocol": "p", "probe_hparams": {}, "selection_rule": "none", "epoch": 1, "metrics": metrics,
            "collapsed": collapsed, "cost": {"images_per_s": 10.0, "wall_s": 1.0, "peak_memory_mb": 1.0,
                                             "device_name": "cpu"},
            "provenance": {"git_sha": "abc"}, **extra}


def write_records(folder: Path, records: list[dict]) -> None:
    for rec in records:
        path = folder / rec["run_id"] / RUN_RESULTS_DIR / f"{rec['eval']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))


def copy_fixture(tmp_path: Path, name: str = "comparison") -> Path:
    return Path(shutil.copytree(RESULTS / name, tmp_path / name))


def runs_by(folder: Path) -> dict[tuple[str, str, int], Path]:
    """(label, dataset, seed) → run folder, read from the spec files."""
    out = {}
    for spec_path in folder.glob(f"*/{SPEC_FILE}"):
        spec = yaml.safe_load(spec_path.read_text())
        label = spec["method"] if spec["ablation"] is None else f"{spec['method']}/{spec['ablation']}"
        out[(label, spec["dataset"], spec["seed"])] = spec_path.parent
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- collect -----------------------------------------------------------------------------------------------------

def test_collect_reads_one_row_per_metric_and_skips_bad_records_with_a_warning(tmp_path):
    write_records(tmp_path, [record("dino", 0, {"top1_k10": 0.5, "top1_k20": 0.25}),
                             record("dino", 1, {"top1_k10": 0.75, "top1_k20": 0.5})])
    bad = tmp_path / "broken" / RUN_RESULTS_DIR / "knn.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.warns(UserWarning, match="skipping .*broken.*knn.json"):
        long = collect(tmp_path)
    assert len(long) == 4
    row = long[(long["seed"] == 1) & (long["metric"] == "top1_k20")].iloc[0]
    assert (row["method"], row["eval"], row["value"], row["cost_images_per_s"], row["prov_git_sha"]) == \
        ("dino", "knn", 0.5, 10.0, "abc")


def test_a_record_of_another_schema_version_gets_a_message_saying_what_to_do(tmp_path):
    with pytest.raises(OldSchemaError, match=r"schema version 0, this patchbench reads version 1; evaluate the run "
                                             r"again"):
        validate_record({**record("dino", 0, {"a": 0.1}), "schema": 0})
    with pytest.raises(RecordError, match=r"missing keys \['cost'\]"):
        validate_record({k: v for k, v in record("dino", 0, {"a": 0.1}).items() if k != "cost"})
    with pytest.raises(RecordError, match="metric 'a' is not a number"):
        validate_record(record("dino", 0, {"a": "high"}))
    write_records(tmp_path, [{**record("dino", 0, {"a": 0.1}), "schema": 0}, record("dino", 1, {"a": 0.2})])
    results = read_results(tmp_path)
    assert len(results.long) == 1 and len(results.old_schema) == 1 and "dino-shapes-0" in results.old_schema[0]


def test_cell_states_name_the_failed_stage_and_its_reason():
    states = cell_states(read_results(RESULTS / "comparison"))
    got = sorted(zip(states["label"], states["seed"], states["eval"], states["state"], states["reason"]))
    assert got == [("ibot", 1, "dense", "failed", "pretrain: diverged"),
                   ("ibot", 1, "knn", "failed", "pretrain: diverged"),
                   ("ibot", 1, "linear", "failed", "pretrain: diverged"),
                   ("ibot", 2, "dense", "failed", "dense: oom")]


def test_the_store_layout_in_reports_schema_is_the_one_the_store_writes(tmp_path):
    from patchbench.benchmark.store import RunDir

    run = RunDir(tmp_path / "r")
    assert run.spec_file.name == SPEC_FILE and run.train_log.name == TRAIN_LOG
    assert run.train_summary.name == TRAIN_SUMMARY and run.state_file("knn").parent.name == STATE_DIR
    assert run.results.name == RUN_RESULTS_DIR


# --- aggregate and the paired statistics ---------------------------------------------------------------------------

def test_aggregate_is_the_mean_and_sample_std_over_seeds():
    long = pd.DataFrame([r for s, v in enumerate([0.5, 0.6, 0.8]) for r in
                         [dict(dataset="d", method="m", eval="knn", metric="top1", seed=s, value=v)]])
    row = aggregate(long).iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.6333333333)
    assert row["std"] == pytest.approx(math.sqrt(((0.5 - 0.19 / 0.3) ** 2 + (0.6 - 0.19 / 0.3) ** 2
                                                  + (0.8 - 0.19 / 0.3) ** 2) / 2))  # ddof = 1: 0.152753
    assert row["std"] == pytest.approx(0.1527525, abs=1e-7)
    assert json.loads(row["values"]) == [0.5, 0.6, 0.8] and json.loads(row["seeds"]) == [0, 1, 2]
    single = aggregate(long.iloc[:1]).iloc[0]
    assert single["n"] == 1 and math.isnan(single["std"])


def test_paired_deltas_and_the_t_test_equal_hand_computed_values():
    long = read_results(RESULTS / "comparison").long
    deltas = paired_deltas(long, "dino", ["patchwise"])
    row = deltas[(deltas["eval"] == "knn") & (deltas["metric"] == "top1_k20")].iloc[0]
    # patchwise − dino per seed: 51 − 50, 54 − 52, 55 − 51 = +1, +2, +4 points
    assert json.loads(row["deltas"]) == pytest.approx([0.01, 0.02, 0.04])
    assert row["mean_delta"] == pytest.approx(7 / 300)
    assert row["std_delta"] == pytest.approx(math.sqrt(7 / 3) / 100)  # deviations −4/3, −1/3, 5/3 points
    # t = mean / (std / √3) = √7; with 2 degrees of freedom the two-sided p is 1 − |t| / √(t² + 2) = 1 − √7 / 3
    assert row["t"] == pytest.approx(math.sqrt(7))
    assert row["p"] == pytest.approx(1 - math.sqrt(7) / 3)
    assert row["n_pairs"] == 3


def test_the_paired_test_needs_three_pairs_and_handles_identical_differences():
    assert all(math.isnan(x) for x in paired_test(np.array([0.01, 0.03])))
    t, p = paired_test(np.array([0.1, 0.1, 0.1]))
    assert t == math.inf and p == 0.0
    t, p = paired_test(np.array([0.0, 0.0, 0.0]))
    assert math.isnan(t) and p == 1.0


def test_pairs_are_matched_on_seeds_only_where_both_rows_have_them():
    long = read_results(RESULTS / "comparison").long
    deltas = paired_deltas(long, "dino", ["ibot"])
    knn = deltas[(deltas["eval"] == "knn") & (deltas["metric"] == "top1_k10")].iloc[0]
    assert json.loads(knn["seeds"]) == [0, 2] and knn["n_pairs"] == 2 and math.isnan(knn["p"])  # seed 1 diverged
    assert json.loads(knn["deltas"]) == pytest.approx([0.200 - 0.480, 0.495 - 0.490])


# --- tables ------------------------------------------------------------------------------------------------------

def test_method_table_of_records_alone():
    long = pd.DataFrame(sum((validate_record_rows(r) for r in [
        record("dino", 0, {"top1": 0.50}), record("dino", 1, {"top1": 0.54}),
        record("ibot", 0, {"top1": 0.40}), record("ibot", 1, {"top1": 0.41}, collapsed=True),
        record("random-init", 0, {"top1": 0.90}), record("random-init", 1, {"top1": 0.90})]), []))
    table = method_table(long)
    assert table.rows == ["dino", "ibot", "random-init"]  # references last
    column = ("shapes", "knn top1")
    assert table.cell("dino", column).markdown() == "52.0 ± 2.8"
    assert table.cell("dino", column).html() == "<strong>52.0 ± 2.8</strong>"  # best of the methods: bold
    assert table.cell("ibot", column).markdown() == "40.5 ± 0.7†"  # a collapsed seed
    assert table.cell("random-init", column).markdown() == "90.0 ± 0.0"  # a reference never competes
    assert table.cell("ibot", column).latex() == r"\underline{40.5 $\pm$ 0.7}$^\dagger$"
    assert table.cell("ibot", column).html() == "<u>40.5 ± 0.7</u><sup>†</sup>"
    assert table.lead == {"dino": ["2"], "ibot": ["2"], "random-init": ["2"]}


def validate_record_rows(rec: dict) -> list[dict]:
    from patchbench.reports import record_rows

    return record_rows(validate_record(rec))


def test_cells_round_to_their_precision_and_never_print_minus_zero():
    assert Cell(-0.04, 0.5, 1, signed=True).markdown() == "0.0 ± 0.5"
    assert Cell(1.25, None, 1, signed=True).markdown() == "+1.2"  # round half to even, as Python
    assert Cell(-3.0, 0.25, 2, signed=True, marks="**").latex() == r"$-$3.00 $\pm$ 0.25$^{**}$"
    assert Cell(status="failed (pretrain: diverged)").latex() == "failed (pretrain: diverged)"


def test_a_table_layout_picks_rows_and_columns_by_pattern():
    results = read_results(RESULTS / "comparison")
    data = ReportData.from_long(results.long)
    table = main_table(data, TableLayout("t", rows=("patchwise", "dino"),
                                         columns=("*/dense/miou", "*/knn/*"), precision=2))
    assert table.rows == ["patchwise", "dino"]
    assert table.columns == [("shapes", "dense miou"), ("shapes", "knn top1_k10"), ("shapes", "knn top1_k20")]
    assert table.cell("dino", ("shapes", "dense miou")).markdown() == "31.00 ± 1.00"


def golden(name: str, folder: Path) -> list[str]:
    """Compare every table file under ``folder`` with tests/reports/fixtures/expected/<name>/; return the files
    compared."""
    expected_dir = EXPECTED / name
    produced = sorted(p.name for p in folder.iterdir())
    if UPDATE_GOLDEN:
        shutil.rmtree(expected_dir, ignore_errors=True)
        shutil.copytree(folder, expected_dir)
    assert produced == sorted(p.name for p in expected_dir.iterdir())
    for file in produced:
        assert (folder / file).read_text() == (expected_dir / file).read_text(), f"{name}/{file} differs"
    return produced


@pytest.mark.parametrize("name", ["comparison", "ablation"])
def test_tables_equal_the_checked_in_files_and_are_byte_identical_on_a_rerun(tmp_path, name):
    first = build_report(RESULTS / name, tmp_path / "a", formats={"md", "latex", "csv"})
    second = build_report(RESULTS / name, tmp_path / "b", formats={"md", "latex", "csv"})
    files = golden(name, tmp_path / "a" / "tables")
    expected = {"comparison": ["cost", "deltas", "main"], "ablation": ["ablation", "cost", "main"]}[name]
    assert files == sorted(f"{t}.{ext}" for t in expected for ext in ("csv", "md", "tex"))
    assert tree_digest(tmp_path / "a" / "tables") == tree_digest(tmp_path / "b" / "tables")
    assert [t.name for t in first.tables] == [t.name for t in second.tables]


def test_the_main_table_shows_collapsed_failed_and_partial_cells():
    text = (EXPECTED / "comparison" / "main.md").read_text()
    assert "| ibot        | 3       | 34.8 ± 20.9† (n=2)" in text  # seeds 0 (collapsed) and 2; seed 1 diverged
    assert "10.0† (n=1)" in text  # dense: seed 2 ran out of memory
    assert "ibot on shapes, seed 1: failed (pretrain: diverged) [dense, knn, linear]" in text
    assert "ibot on shapes, seed 2: failed (dense: oom) [dense]" in text
    assert "† collapsed runs (final student–teacher KL < 0.01 nats): ibot on shapes (seed 0)" in text


def test_deltas_mark_significance_and_say_when_there_are_too_few_pairs():
    text = (EXPECTED / "comparison" / "deltas.md").read_text()
    assert "two-sided paired t-test over seeds (scipy.stats.ttest_rel)" in text
    row = next(line for line in text.splitlines() if line.startswith("| patchwise"))
    assert "+2.3 ± 1.5 " in row and "+2.3 ± 1.5*" not in row  # p = 0.118: no mark
    assert "+4.2 ± 0.8*" in row  # dense mIoU: +5, +3.5, +4 points, p = 0.013
    assert "(n=2, untested)" in next(line for line in text.splitlines() if line.startswith("| ibot"))
    ablation = (EXPECTED / "ablation" / "ablation.md").read_text()
    no_aug = next(line for line in ablation.splitlines() if line.startswith("| patchwise/no-patch-aug"))
    assert "-1.5 ± 0.5*" in no_aug  # −1, −1.5, −2 points: t = −3√3, p = 1 − 3√3/√29 = 0.035


LATEX_ENVIRONMENTS = re.compile(r"\\(begin|end)\{(\w+)\}")


def check_latex(text: str) -> None:
    depth = 0
    for ch in text.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0, "unbalanced braces"
    stack = []
    for kind, env in LATEX_ENVIRONMENTS.findall(text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack.pop() == env
    assert not stack
    assert text.count(r"\toprule") == 1 and text.count(r"\bottomrule") == 1 and r"\midrule" in text
    for forbidden in (r"\hline", r"\cline", "|"):
        assert forbidden not in text, f"{forbidden} in a booktabs table"
    assert "±" not in text and "†" not in text


def test_latex_is_balanced_booktabs_only_with_references_below_a_rule(tmp_path):
    for name in ("comparison", "ablation"):
        build_report(RESULTS / name, tmp_path / name, formats={"latex"})
    for path in sorted(tmp_path.glob("*/tables/*.tex")):
        check_latex(path.read_text())
    main_tex = (tmp_path / "comparison" / "tables" / "main.tex").read_text().splitlines()
    ibot = next(i for i, line in enumerate(main_tex) if line.startswith("ibot &"))
    assert main_tex[ibot + 1] == r"\midrule" and main_tex[ibot + 2].startswith("random-init &")
    patchwise = next(line for line in main_tex if line.startswith("patchwise &"))
    dino = next(line for line in main_tex if line.startswith("dino &"))
    assert r"\textbf{53.3 $\pm$ 2.1}" in patchwise and r"\underline{51.0 $\pm$ 1.0}" in dino


def test_latex_compiles_with_pdflatex(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    for name in ("comparison", "ablation"):
        tables = sorted((EXPECTED / name).glob("*.tex"))
        for table in tables:
            shutil.copy(table, tmp_path / f"{name}-{table.name}")
        body = "\n".join(rf"\input{{{name}-{t.name}}}" for t in tables)
        (tmp_path / f"{name}.tex").write_text(
            "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\n\\end{document}\n")
        result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:]
        assert (tmp_path / f"{name}.pdf").stat().st_size > 1000


def test_csv_keeps_full_precision_and_the_per_seed_values():
    main_csv = pd.read_csv(EXPECTED / "comparison" / "main.csv")
    patchwise = main_csv[(main_csv["method"] == "patchwise") & (main_csv["metric"] == "top1_k10")].iloc[0]
    assert patchwise["mean"] == pytest.approx((0.490 + 0.515 + 0.520) / 3, abs=1e-15)
    assert json.loads(patchwise["values"]) == [0.49, 0.515, 0.52] and patchwise["n"] == 3
    failed = main_csv[(main_csv["method"] == "ibot") & (main_csv["metric"] == "miou")].iloc[0]
    assert failed["n"] == 1 and failed["status"] == "partial"
    cost = pd.read_csv(EXPECTED / "comparison" / "cost.csv")
    ibot = cost[cost["method"] == "ibot"].iloc[0]
    assert ibot["n"] == 2 and ibot["images_per_s_mean"] == pytest.approx((400 + 440) / 2)  # seed 1 diverged
    assert ibot["time_ratio"] == pytest.approx(630 / 420)  # dino: 600, 630, 660 images/s
    assert ibot["device_hours_mean"] == pytest.approx((8000 / 400 + 8000 / 440) / 2 / 3600)


# --- layouts -----------------------------------------------------------------------------------------------------

def test_layout_errors_name_the_key_and_the_fix():
    with pytest.raises(LayoutError, match=r"report.tables.main: unknown key 'colums'. Did you mean 'columns'\?"):
        parse_layout({"tables": {"main": {"colums": ["*/knn/*"]}}})
    with pytest.raises(LayoutError, match=r"'dinp' is not a row of this matrix. Did you mean 'dino'\?"):
        parse_layout({"tables": {"main": {"rows": ["dinp"]}}}, {"dino", "ibot"})
    with pytest.raises(LayoutError, match="is not one of main, deltas, ablation, cost"):
        parse_layout({"tables": {"t": {"kind": "scatter"}}})
    with pytest.raises(LayoutError, match="not a dataset/eval/metric pattern"):
        parse_layout({"tables": {"t": {"columns": ["knn/top1"]}}})
    with pytest.raises(LayoutError, match="precision must be an integer from 0 to 4"):
        parse_layout({"tables": {"t": {"precision": 9}}})
    assert not parse_layout(None).declared


def test_the_matrix_loader_accepts_validates_and_keeps_the_report_section(tmp_path):
    matrix = load_matrix("benchmark/matrices/demo.yaml")
    kept = json.loads(json.dumps(matrix.declaration(), sort_keys=True))  # as run writes matrix.json
    assert [t.name for t in parse_layout(kept["report"]).tables] == ["main", "all-metrics", "deltas", "cost"]
    ablation = load_matrix("benchmark/matrices/ablation-patchwise.yaml").declaration()["report"]
    assert [(t["name"], t["kind"]) for t in ablation["tables"]] == [("ablation", "ablation"), ("main", "main"),
                                                                   ("cost", "cost")]
    text = Path("benchmark/matrices/demo.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("baseline: dino", "baseline: dinoo"))
    with pytest.raises(ConfigError, match=r"report.baseline: 'dinoo' is not a row of this matrix. Did you mean"):
        load_matrix(bad)
    bad.write_text(text.replace("    main:\n", "    main:\n      kinds: main\n"))
    with pytest.raises(ConfigError, match="report.tables.main: unknown key 'kinds'. Did you mean 'kind'"):
        load_matrix(bad)


def test_a_declared_layout_is_what_report_writes(tmp_path):
    folder = copy_fixture(tmp_path)
    declaration = json.loads((folder / "matrix.json").read_text())
    declaration["report"] = {"baseline": "patchwise", "tables": {
        "paper": {"kind": "main", "rows": ["patchwise", "dino", "random-init"], "columns": ["*/dense/miou"],
                  "caption": "Dense probe.", "label": "tab:dense", "precision": 2},
        "versus": {"kind": "deltas", "columns": ["*/knn/top1_k20"]}}}
    (folder / "matrix.json").write_text(json.dumps(declaration))
    report = build_report(folder, formats={"md", "latex", "csv"})
    assert [t.name for t in report.tables] == ["paper", "versus"]
    paper = (folder / "report" / "tables" / "paper.tex").read_text()
    assert r"\caption{Dense probe.}" in paper and r"\label{tab:dense}" in paper
    assert r"patchwise & 3 & \textbf{35.17 $\pm$ 0.76} \\" in paper
    versus = (folder / "report" / "tables" / "versus.md").read_text()
    assert "Δ against patchwise" in versus and "| dino " in versus  # the layout's baseline


# --- robustness ----------------------------------------------------------------------------------------------------

def test_report_never_touches_the_run_store(tmp_path, capsys):
    folder = copy_fixture(tmp_path)
    before = tree_digest(folder)
    assert main(["report", str(folder), "--format", "md,latex,csv"]) == 0
    after = tree_digest(folder)
    assert {k: v for k, v in after.items() if not k.startswith("report/")} == before


def test_an_unfair_mix_is_refused_naming_the_runs_unless_allowed_and_then_marked(tmp_path, capsys):
    folder = copy_fixture(tmp_path)
    run = runs_by(folder)[("dino", "shapes", 2)]
    spec = yaml.safe_load((run / SPEC_FILE).read_text())
    spec["budget"]["epochs"] = 3
    (run / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchbench: error: unfair comparison") and "Traceback" not in err
    assert f"run {run.name} (dino, shapes, seed 2: 'budget.epochs' is 3, 7 other runs have 2)" in err
    assert "--allow-unfair" in err
    assert not (folder / "report").exists()
    assert main(["report", str(folder), "--allow-unfair", "--format", "md,latex,csv"]) == 0
    text = (folder / "report" / "tables" / "main.md").read_text()
    assert "[UNFAIR MIX, see ‡]" in text and "51.0 ± 1.0‡" in text and f"{run.name} (dino, shapes, seed 2" in text
    assert r"$^\ddagger$" in (folder / "report" / "tables" / "main.tex").read_text()
    assert "| patchwise   | 3       | 50.8 ± 1.6            |" in text  # patchwise's runs are all fair


def test_old_schema_records_are_skipped_with_a_message_and_a_folder_of_them_is_refused(tmp_path, capsys):
    folder = copy_fixture(tmp_path)
    paths = sorted(folder.glob(f"*/{RUN_RESULTS_DIR}/*.json"))
    first = json.loads(paths[0].read_text())
    paths[0].write_text(json.dumps({**first, "schema": 0}))
    assert main(["report", str(folder), "--format", "md"]) == 0
    err = capsys.readouterr().err
    assert f"record of another schema version, skipped: {paths[0]}: written by record schema version 0" in err
    for path in paths:
        path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 0}))
    assert main(["report", str(folder), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert "no readable result records" in err and "written by record schema version 0" in err
    assert json.loads(paths[0].read_text())["schema"] == 0  # nothing rewritten


def test_partial_results_show_running_cells(tmp_path, capsys):
    folder = copy_fixture(tmp_path)
    run = runs_by(folder)[("dino", "shapes", 2)]
    (run / RUN_RESULTS_DIR / "knn.json").unlink()
    (run / STATE_DIR / "knn.json").write_text(json.dumps({"state": "running", "attempt": 1, "time": 0}))
    assert main(["report", str(folder), "--format", "md"]) == 0
    out = capsys.readouterr()
    assert "| dino        | 3       | 49.0 ± 1.4 (n=2)" in out.out
    assert "dino on shapes, seed 2: running [knn]" in out.out
    assert "warning: running: dino on shapes, seed 2, knn" in out.err


def test_bad_cli_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no results folder at" in capsys.readouterr().err
    assert main(["report", str(RESULTS / "comparison"), "--format", "md,docx", "--out", str(tmp_path)]) == 2
    assert "unknown report format docx; choose among md,latex,csv,html,plots" in capsys.readouterr().err
    assert main(["report", str(RESULTS / "comparison"), "--baseline", "simclr", "--out", str(tmp_path)]) == 2
    assert "--baseline simclr: no results for that row" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no readable result records" in capsys.readouterr().err


# --- figures -----------------------------------------------------------------------------------------------------

def test_palette_gives_each_method_its_own_colour_and_references_greys():
    colours = palette(["dino", "patchwise", "ibot", "random-init", "raw-pixels"])
    methods = [colours[m] for m in ("dino", "patchwise", "ibot")]
    assert len(set(methods)) == 3
    for ref in ("random-init", "raw-pixels"):
        r, g, b = (int(colours[ref][i:i + 2], 16) for i in (1, 3, 5))
        assert r == g == b
    assert palette(["dino", "patchwise"])["patchwise"] == colours["patchwise"]  # stable in row order


@pytest.mark.slow
def test_figures_are_written_as_png_and_pdf_for_every_kind(tmp_path):
    from PIL import Image

    report = build_report(RESULTS / "ablation", tmp_path, formats={"plots"})
    stems = sorted({p.stem for p in report.written})
    assert stems == ["ablation_knn_top1_k10", "ablation_knn_top1_k20", "cost_knn_top1_k10", "cost_knn_top1_k20",
                     "curves_digits", "curves_shapes", "points_knn_top1_k10", "points_knn_top1_k20"]
    for path in report.written:
        if path.suffix == ".png":
            width, height = Image.open(path).size
            assert 400 < width < 2000 and 200 < height < 1500, (path.name, width, height)
        else:
            assert path.read_bytes().startswith(b"%PDF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rerun is quiet
        build_report(RESULTS / "ablation", tmp_path / "again", formats={"plots"})


def test_runs_left_by_an_earlier_version_of_the_matrix_are_left_out_with_a_warning(tmp_path):
    folder = copy_fixture(tmp_path)
    stale = runs_by(folder)[("dino", "shapes", 2)].name
    declaration = json.loads((folder / "matrix.json").read_text())
    declaration["run_ids"].remove(stale)
    (folder / "matrix.json").write_text(json.dumps(declaration))
    report = build_report(folder, formats={"md"})
    assert any(w.startswith("1 runs with records are not in the matrix's current run list") and stale in w
               for w in report.warnings)
    text = (folder / "report" / "tables" / "main.md").read_text()
    assert "| dino        | 2       | 49.0 ± 1.4" in text  # seeds 0 and 1: 48.0 and 50.0


def test_the_html_report_names_the_matrix_file_and_the_machines(tmp_path):
    results = copy_fixture(tmp_path)
    declaration = json.loads((results / "matrix.json").read_text())
    (results / "matrix.json").write_text(json.dumps({**declaration, "file": "benchmark/matrices/comparison.yaml"}))
    for path in results.glob(f"*/{RUN_RESULTS_DIR}/*.json"):
        rec = json.loads(path.read_text())
        rec["provenance"] = {**rec["provenance"], "git_sha": "0123abc", "machine": "AMD EPYC, 2 of 2 CPUs"}
        path.write_text(json.dumps(rec))
    build_report(results, tmp_path / "report", formats={"html"})
    page = (tmp_path / "report" / "report.html").read_text()
    assert "file <code>benchmark/matrices/comparison.yaml</code>" in page
    assert "<td><code>git SHA</code></td><td>0123abc</td>" in page
    assert "<td><code>machines</code></td><td>AMD EPYC, 2 of 2 CPUs</td>" in page
