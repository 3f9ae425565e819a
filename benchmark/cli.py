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
        row: tuple[str | int, ...] = (s.run_id, s.label, s.dataset, s.seed, cell_state(st), stages)
        if todo is not None:
            row += (" + ".join(todo.stages_of(cell)) or "-",)
        rows.append(row)
    return rows


HEADERS = ["run id", "cell", "dataset", "seed", "state", "stages (job ids)"]


def _estimate(matrix, todo):
    """The cost estimate of a plan's jobs (benchmark/cost.py) and the cluster settings it used."""
    from .cluster import load_cluster_config
    from .cost import estimate, matrix_costs

    cluster = load_cluster_config()
    costs = matrix_costs(todo.pretrain, todo.evaluate, matrix.train_sizes, matrix.decoded)
    num_workers = matrix.cells[0].spec.runtime.num_workers if matrix.cells else None
    return estimate(costs, cluster.gpu, num_workers), cluster


def _gpu_hour_limit(args: argparse.Namespace, cluster) -> float | None:
    limit = args.max_gpu_hours if args.max_gpu_hours is not None else cluster.max_gpu_hours
    if limit is not None and not limit > 0:
        raise ConfigError(f"--max-gpu-hours {limit}: give a number of GPU-hours > 0")
    return limit


def _check_budget(matrix, todo, args: argparse.Namespace) -> None:
    """Refuse to submit a plan estimated above --max-gpu-hours (or the cluster file's max_gpu_hours) without --yes."""
    from .cluster import load_cluster_config

    limit = _gpu_hour_limit(args, load_cluster_config())
    if limit is None or args.yes:
        return
    est, cluster = _estimate(matrix, todo)
    if est.gpu_hours > limit:
        raise ConfigError(f"{matrix.name}: the jobs to submit need an estimated {est.gpu_hours:.1f} GPU-hours "
                          f"(FLOP-based, {cluster.gpu}), above the limit of {limit:g}; see `patchbench run MATRIX "
                          "--dry-run`, then add --yes to submit anyway or raise --max-gpu-hours")


def _print_estimate(matrix, todo, args: argparse.Namespace) -> None:
    from .cluster import GPU_TFLOPS
    from .cost import UTILISATION, hours

    est, cluster = _estimate(matrix, todo)
    print(f"\nEstimated cost of these jobs: FLOP-based, not measured (backbone FLOPs counted on the meta device; "
          f"{cluster.gpu} at {UTILISATION:.0%} of its {GPU_TFLOPS[cluster.gpu]:g} dense bf16 TFLOP/s; heads, views "
          "and probes not counted: benchmark/cost.py)")
    if est.rows:
        print(tabulate(est.rows, headers=est.HEADERS, tablefmt="github"))
    print(f"total: {hours(est.gpu_hours)} GPU-hours; wall time {hours(est.parallel_wall_h)} h with every job running "
          f"at once, {hours(est.serial_wall_h)} h one job after another"
          + (f"; {est.cpu_jobs} CPU jobs not estimated" if est.cpu_jobs else ""))
    limit = _gpu_hour_limit(args, cluster)
    if limit is not None and est.gpu_hours > limit:
        print(f"above the limit of {limit:g} GPU-hours: run refuses to submit without --yes")


def cmd_run(args: argparse.Namespace) -> int:
    from .orchestrator import plan, submit

    workers = _workers(args)
    matrix, out = _load(args)
    if args.dry_run:
        todo, statuses = plan(matrix, out, write=False)
        rows = _status_rows(matrix, statuses, todo)
        print(tabulate(rows, headers=HEADERS + ["would submit"], tablefmt="github"))
        arrays = len({c.pretrain for c in todo.pretrain})
        print(f"\n{todo.n_jobs} jobs would be submitted: {len(todo.pretrain)} pretraining "
              f"({arrays} array{'s' if arrays != 1 else ''} on SLURM), "
              f"{todo.n_jobs - len(todo.pretrain)} evaluations")
        _print_estimate(matrix, todo, args)
        return 0
    _check_budget(matrix, plan(matrix, out, write=False)[0], args)
    todo = submit(matrix, out, args.executor, "missing", wait_for_jobs=args.wait, workers=workers)
    return _summary(matrix, out, todo, args.executor, args.wait)


def _workers(args: argparse.Namespace) -> int | None:
    """``--workers``: an integer >= 1, for the local executor only (None: its default)."""
    if args.workers is None:
        return None
    if args.executor != "local":
        raise ConfigError(f"--workers sets the local executor's worker processes; drop it, or use --executor local "
                          f"instead of {args.executor}")
    if not args.workers.isdigit() or int(args.workers) < 1:
        raise ConfigError(f"--workers {args.workers} is not allowed; give an integer >= 1 (default: one per usable "
                          "CPU)")
    return int(args.workers)


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
    from .orchestrator import plan, submit

    workers = _workers(args)
    matrix, out = _load(args)
    which = "failed" if args.failed else "missing"
    _check_budget(matrix, plan(matrix, out, which, write=False)[0], args)
    todo = submit(matrix, out, args.executor, which, wait_for_jobs=args.wait, workers=workers)
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
                           help="slurm: submit and return (unless --wait); local: run here, cells in parallel on "
                                "warm worker processes; debug: run here, one job at a time in this process")
            c.add_argument("--workers", default=None, metavar="N",
                           help="local executor: worker processes, the usable CPUs split between them as torch "
                                "threads (default: one per usable CPU, at most one per cell)")
            c.add_argument("--wait", action="store_true", help="on SLURM, wait until every job has ended")
            c.add_argument("--max-gpu-hours", type=float, default=None,
                           help="refuse to submit jobs estimated above this many GPU-hours (default: the cluster "
                                "file's max_gpu_hours, else no limit; the estimate is in run --dry-run)")
            c.add_argument("--yes", action="store_true", help="submit even above --max-gpu-hours")
        c.set_defaults(func=func)
        return c

    r = matrix_command("run", "submit every cell of a matrix that is not done, running or failed", cmd_run, True)
    r.add_argument("--dry-run", action="store_true",
                   help="print every cell, its run id, state, the jobs that would be submitted and their estimated "
                        "GPU-hours and wall time; submit nothing")
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
