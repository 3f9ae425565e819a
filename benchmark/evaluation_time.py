"""How long the evaluations of one cell take: every evaluation of a matrix's cells, timed through the harness's own
path (``evaluate``: encoder, feature extraction into the cache, the probe, the record), one cell after another.

    python -m patchbench.benchmark.evaluation_time [--matrix benchmark/matrices/demo-full.yaml] [--dataset digits]
                                                   [--methods dino raw-pixels ...] [--threads 2]

Trained cells are evaluated from a final-epoch checkpoint of freshly initialised weights (an evaluation's cost does
not depend on the values of the weights), so no pretraining is needed. The embedded dataset is generated before the
clock starts (a local job pays that once per process; see docs/benchmarks.md). Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from patchbench.datasets import build_dataset

from .evaluate import evaluate
from .matrix import load_matrix
from .store import atomic_torch_save, run_dir
from .train import build_for_spec

DEMO_FULL = Path(__file__).resolve().parent / "matrices" / "demo-full.yaml"


def time_cell(spec, root: Path) -> dict[str, float]:
    """Seconds per evaluation of one cell, in the order the matrix lists them."""
    run = run_dir(root, spec)
    if not spec.is_reference:
        method, _ = build_for_spec(spec, torch.device("cpu"))
        atomic_torch_save(run.checkpoint, {"epoch": spec.budget.epochs, "method": method.state_dict()})
    seconds = {}
    for name in spec.evaluations:
        started = time.perf_counter()
        evaluate(spec, run, name)
        seconds[name] = time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrix", default=str(DEMO_FULL))
    parser.add_argument("--dataset", default=None, help="the cells of this dataset (default: the first cell's)")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method and reference row")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    matrix = load_matrix(args.matrix)
    args.dataset = args.dataset or matrix.specs[0].dataset
    specs = [s for s in matrix.specs if s.dataset == args.dataset and s.seed == min(x.seed for x in matrix.specs)
             and (args.methods is None or s.method in args.methods)]
    source = build_dataset(args.dataset)
    source.load("train"), source.load("test")  # loaded at matrix load already; a job pays this once per process
    print(f"{args.dataset}, {args.threads} torch threads; the dataset's splits are loaded before the clock starts")
    names = list(specs[0].evaluations)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for spec in specs:
            seconds = time_cell(spec, Path(root))
            rows.append([spec.label, *(f"{seconds[n]:.1f}" for n in names), f"{sum(seconds.values()):.1f}"])
    print(tabulate(rows, headers=["cell", *(f"{n} (s)" for n in names), "all (s)"], tablefmt="github"))


if __name__ == "__main__":
    main()
