"""The ``patchbench`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from patchbench.datasets import DATASETS, DatasetError, build_dataset
from patchbench.methods import (
    METHODS,
    OBJECTIVES,
    VIEWS,
    IncompatiblePairing,
    MethodChoice,
    RegistryError,
    resolve_choice,
)
from patchbench.methods.build import setting_docs

from .config import ConfigError
from .orchestrator import RunInterrupted

EXECUTORS = ("debug", "local", "slurm")

USER_ERRORS = (ConfigError, RegistryError, DatasetError, IncompatiblePairing)


def cmd_methods(args: argparse.Namespace) -> int:
    if args.details:
        return method_details(args.details)
    rows = [(s.name, s.view, s.objective, s.paper) for s in (METHODS.get(n) for n in METHODS.names())]
    print(tabulate(rows, headers=["method", "view strategy", "objective", "paper"], tablefmt="github"))
    return 0


def method_details(name: str) -> int:
    """Every setting of the method's view strategy and objective: its value for this method and its ``Args:`` entry."""
    spec = METHODS.get(name)
    view, view_kwargs, objective, objective_kwargs = resolve_choice(MethodChoice(name))
    print(f"{spec.name}: {spec.paper}")
    for kind, component, registry, values in (("view strategy", view, VIEWS, view_kwargs),
                                              ("objective", objective, OBJECTIVES, objective_kwargs)):
        docs = setting_docs(registry.get(component))
        rows = [(key, _as_yaml(value), docs[key]) for key, value in values.items()]
        print(f"\n{kind} '{component}' ({kind.split()[0]}_kwargs in a matrix)")
        print(tabulate(rows, headers=["setting", "value", "meaning"], tablefmt="github", maxcolwidths=[None, 20, 90],
                       disable_numparse=True))
    return 0


def cmd_evaluations(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .evaluations import EVALUATIONS

    rows = []
    for name in EVALUATIONS.names():
        cls = EVALUATIONS.get(name)
        defaults = ", ".join(f"{f.name}={_plain(f.default)}" for f in fields(cls.settings_class))
        rows.append((name, cls.reads, ", ".join(sorted(cls.needs)), defaults, cls.description))
    print(tabulate(rows, headers=["evaluation", "reads", "dataset needs", "settings (defaults)", "description"],
                   tablefmt="github"))
    return 0


def _as_yaml(value) -> str:
    """A setting's value as it is written in a matrix (YAML flow style): true, null, [0.4, 1.0]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_as_yaml(v) for v in value) + "]"
    return str(value)


def _plain(value) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = []
    for name in sorted(DATASETS):
        source = build_dataset(name, args.data_root)
        where = "embedded" if source.embedded else str(source.expected_path())
        rows.append((name, "yes" if source.files_present() else "no", where, ", ".join(sorted(source.provides)),
                     source.description))
    print(tabulate(rows, headers=["dataset", "present", "files", "provides", "description"], tablefmt="github"))
    return 0


def _load(args: argparse.Namespace):
    from .matrix import load_matrix

    matrix = load_matrix(args.matrix, data_root=getattr(args, "data_root", None))
    return matrix, Path(args.out) if args.out else Path("results") / matrix.name


def _status_rows(matrix, statuses, todo=None) -> list[tuple]:
    from .orchestrator import cell_state

    rows = []
    for cell in matrix.cells:
        s, st = cell.spec, statuses[cell.spec.run_id]
        stages = ", ".join(f"{stage}: {v['state']}" + (f" ({v['reason']})" if v["state"] == "failed" else "")
                           + (f" [{v['job_id']}]" if v.get("job_id") else "") for stage, v in st.items())
        row = (s.run_id, s.label, s.dataset, s.seed, cell_state(st), stages)
        if todo is not None:
            row += (" + ".join(todo.stages_of(cell)) or "-",)
        rows.append(row)
    return rows


HEADERS = ["run id", "cell", "dataset", "seed", "state", "stages (job ids)"]


def cmd_run(args: argparse.Namespace) -> int:
    from .orchestrator import plan, submit

    matrix, out = _load(args)
    if args.dry_run:
        todo, statuses = plan(matrix, out, write=False)
        rows = _status_rows(matrix, statuses, todo)
        print(tabulate(rows, headers=HEADERS + ["would submit"], tablefmt="github"))
        arrays = len({c.pretrain for c in todo.pretrain})
        print(f"\n{todo.n_jobs} jobs would be submitted: {len(todo.pretrain)} pretraining "
              f"({arrays} array{'s' if arrays != 1 else ''} on SLURM), "
              f"{todo.n_jobs - len(todo.pretrain)} evaluations")
        return 0
    todo = submit(matrix, out, args.executor, "missing", wait_for_jobs=args.wait)
    return _summary(matrix, out, todo, args.executor, args.wait)


def _summary(matrix, out: Path, todo, executor: str, waited: bool) -> int:
    from .orchestrator import cell_state, plan

    _, statuses = plan(matrix, out)
    states = [cell_state(st) for st in statuses.values()]
    done = states.count("done")
    failed = [s for s in states if s.startswith("failed")]
    n = todo.submitted
    print(f"{matrix.name}: {n} job{'' if n == 1 else 's'} submitted, {done}/{len(states)} cells done, "
          f"{len(failed)} failed "
          f"(results in {out}; status: patchbench status MATRIX --out {out}; table: patchbench report {out})")
    if failed:
        print("failed cells are not resubmitted by run: patchbench resubmit MATRIX --failed")
    finished = executor != "slurm" or waited
    return 1 if failed and finished else 0


def cmd_status(args: argparse.Namespace) -> int:
    from .orchestrator import cell_state, plan

    matrix, out = _load(args)
    _, statuses = plan(matrix, out)
    print(tabulate(_status_rows(matrix, statuses), headers=HEADERS, tablefmt="github"))
    counts: dict[str, int] = {}
    for st in statuses.values():
        state = cell_state(st)
        counts[state] = counts.get(state, 0) + 1
    print("\n" + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0


def cmd_resubmit(args: argparse.Namespace) -> int:
    from .orchestrator import submit

    matrix, out = _load(args)
    todo = submit(matrix, out, args.executor, "failed" if args.failed else "missing", wait_for_jobs=args.wait)
    return _summary(matrix, out, todo, args.executor, args.wait)


def cmd_cancel(args: argparse.Namespace) -> int:
    from .orchestrator import cancel

    matrix, out = _load(args)
    print(f"{matrix.name}: {cancel(matrix, out)} jobs cancelled")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from patchbench.reports import ReportError, build_report, parse_formats

    from .fairness import check_results_folder

    results = Path(args.results)
    if not results.is_dir():
        raise ConfigError(f"no results folder at {results}; run a matrix first (patchbench run MATRIX)")
    try:
        formats = parse_formats(args.format)
        unfair = check_results_folder(results, allow_unfair=args.allow_unfair)
        report = build_report(results, args.out, args.baseline, formats, unfair)
    except ReportError as err:
        raise ConfigError(str(err)) from None
    main_table = report.main
    if main_table is not None:
        print(main_table.markdown())
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    page = report.out_dir / "report.html"
    print(f"report written to {report.out_dir}/ ({len(report.written)} files"
          + (f"; open {page}" if page in report.written else "") + ")")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list the registered methods; --details NAME: the settings of one")
    m.add_argument("--details", metavar="NAME", default=None,
                   help="print every view-strategy and objective setting of method NAME, its value and meaning")
    m.set_defaults(func=cmd_methods)
    sub.add_parser("evaluations", help="list the registered evaluations, what they read and their settings"
                   ).set_defaults(func=cmd_evaluations)
    d = sub.add_parser("datasets", help="list the datasets and whether their files are present")
    d.add_argument("--data-root", default=None,
                   help="folder holding on-disk datasets (default $PATCHBENCH_DATA or ./data)")
    d.set_defaults(func=cmd_datasets)
    def matrix_command(name: str, help: str, func, executor: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("matrix", help="a matrix YAML file, e.g. benchmark/matrices/demo.yaml")
        c.add_argument("--out", default=None, help="results folder (default results/<matrix name>)")
        c.add_argument("--data-root", default=None)
        if executor:
            c.add_argument("--executor", choices=EXECUTORS, default="local",
                           help="slurm: submit and return (unless --wait); local/debug: run here, in order")
            c.add_argument("--wait", action="store_true", help="on SLURM, wait until every job has ended")
        c.set_defaults(func=func)
        return c

    r = matrix_command("run", "submit every cell of a matrix that is not done, running or failed", cmd_run, True)
    r.add_argument("--dry-run", action="store_true",
                   help="print every cell, its run id, state and the jobs that would be submitted; submit nothing")
    matrix_command("status", "every cell's state, failure reason and job ids", cmd_status)
    rs = matrix_command("resubmit", "submit the failed (or the missing) cells again", cmd_resubmit, True)
    which = rs.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="cells whose pretraining or evaluation failed")
    which.add_argument("--missing", action="store_true", help="cells never submitted or interrupted (as run)")
    matrix_command("cancel", "cancel the matrix's pending and running SLURM jobs", cmd_cancel)
    rep = sub.add_parser("report", help="write the tables, figures and HTML report of a results folder; print its "
                                        "main table")
    rep.add_argument("results", help="e.g. results/demo")
    rep.add_argument("--baseline", default=None,
                     help="row the paired deltas compare against (default: the matrix's report.baseline, else dino)")
    rep.add_argument("--format", default="md,latex,csv,html,plots",
                     help="comma-separated: md, latex, csv (tables), plots (PNG + PDF), html (one self-contained "
                          "page, with the figures); default all")
    rep.add_argument("--out", default=None, help="where to write (default RESULTS/report)")
    rep.add_argument("--allow-unfair", action="store_true",
                     help="report runs that differ on a setting held fixed, marked as such, instead of refusing")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"patchbench: error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(f"patchbench: interrupted: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
