"""The ``patchbench`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from patchbench.datasets import DATASETS, DatasetError, build_dataset
from patchbench.methods import METHODS, IncompatiblePairing, RegistryError

from .config import ConfigError

USER_ERRORS = (ConfigError, RegistryError, DatasetError, IncompatiblePairing)


def cmd_methods(args: argparse.Namespace) -> int:
    rows = [(s.name, s.view, s.objective, s.paper) for s in (METHODS.get(n) for n in METHODS.names())]
    print(tabulate(rows, headers=["method", "view strategy", "objective", "paper"], tablefmt="github"))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = []
    for name in sorted(DATASETS):
        source = build_dataset(name, args.data_root)
        where = "embedded" if source.embedded else str(source.expected_path())
        rows.append((name, "yes" if source.files_present() else "no", where, source.description))
    print(tabulate(rows, headers=["dataset", "present", "files", "description"], tablefmt="github"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .matrix import load_matrix
    from .runner import cell_status, run_matrix
    from .store import run_dir

    name, specs = load_matrix(args.matrix, data_root=args.data_root)
    out = Path(args.out) if args.out else Path("results") / name
    if args.dry_run:
        rows = [(s.run_id, s.method, s.dataset, s.seed, cell_status(run_dir(out, s), s)) for s in specs]
        print(tabulate(rows, headers=["run id", "method", "dataset", "seed", "state"], tablefmt="github"))
        return 0
    counts = run_matrix(specs, out, args.executor)
    print(f"{name}: {counts['done']} run, {counts['skipped']} already done, {counts['failed']} failed "
          f"(results in {out}; table: patchbench report {out})")
    return 1 if counts["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from patchbench.reports import collect, write_tables

    results = Path(args.results)
    if not results.is_dir():
        raise ConfigError(f"no results folder at {results}; run a matrix first (patchbench run MATRIX)")
    long = collect(results)
    if long.empty:
        raise ConfigError(f"no result records under {results}; run a matrix first (patchbench run MATRIX)")
    markdown, md_path, csv_path = write_tables(long, results / "tables")
    print(markdown)
    print(f"\nwritten: {md_path}, {csv_path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=cmd_methods)
    d = sub.add_parser("datasets", help="list the datasets and whether their files are present")
    d.add_argument("--data-root", default=None, help="folder holding on-disk datasets (default $PATCHBENCH_DATA or ./data)")
    d.set_defaults(func=cmd_datasets)
    r = sub.add_parser("run", help="run every cell of a matrix that is not done yet")
    r.add_argument("matrix", help="a matrix YAML file, e.g. benchmark/matrices/demo.yaml")
    r.add_argument("--executor", choices=("debug", "local"), default="local")
    r.add_argument("--out", default=None, help="results folder (default results/<matrix name>)")
    r.add_argument("--data-root", default=None)
    r.add_argument("--dry-run", action="store_true", help="print every cell, its run id and state; run nothing")
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="print and write the results table of a results folder")
    rep.add_argument("results", help="e.g. results/demo")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"patchbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
