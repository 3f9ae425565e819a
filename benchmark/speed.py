"""Speed checks for Patch-Wise (issue 3, item 6), one subcommand each; figures go to docs/benchmarks.md.

    python -m patchbench.benchmark.speed patch-aug [--views 8 --img-size 224 --patch-size 16 --threads 1]

``patch-aug``: the batched per-patch photometric augmentation (methods/patch_photometric.py, specs/patchwise.md
§3.1) against the per-cell torchvision loop kept as its test reference (tests/patch_photometric_reference.py), on
the same images and drawn parameters. It needs a source checkout for that reference. Both run in this process on
``--threads`` intra-op threads (1 by default: the loop's tiny ops only lose from more), timed in alternating rounds;
wall and process-CPU times are the minimum over runs, and the CPU-time ratio is the steadier figure on a shared
machine.

A subcommand is a ``(name, add_arguments, run)`` entry in ``SUBCOMMANDS``; ``run(args)`` returns a JSON-able dict.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from patchbench.benchmark.train import pick_device
from patchbench.methods.patch_photometric import apply_patch_photometric, sample_patch_photometric

CHECKOUT = Path(__file__).resolve().parents[1]


def load_test_module(name: str) -> ModuleType:
    """A module from the checkout's tests/ folder, by path (tests/ is not part of the installed package)."""
    path = CHECKOUT / "tests" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: this benchmark compares against a reference kept in the repository's "
                         "tests/ folder, so run it from a source checkout (git clone …; pip install -e .)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> dict:
    """Minimum wall and process-CPU seconds of ``fn`` over ``repeats`` runs (device work included)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": min(walls), "cpu_s": min(cpus)}


def interleaved(fns: dict[str, tuple[Callable[[], object], int, torch.device]], rounds: int) -> dict:
    """``timed`` for each of ``fns`` (name → (fn, repeats per round, device)), in alternating rounds, minimum over
    rounds: load from other processes then weighs on every candidate alike."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, (fn, repeats, device) in fns.items():
            t = timed(fn, repeats, device)
            best[name] = {k: min(v, best[name][k]) for k, v in t.items()} if name in best else t
    return best


def patch_aug_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--views", type=int, default=8, help="views in the batch")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of loop and batched timings")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the batched op per round")
    p.add_argument("--device", default="cpu", help="device of the batched op (the loop runs on the CPU)")
    p.add_argument("--seed", type=int, default=0)


def patch_aug(a: argparse.Namespace) -> dict:
    """Batched per-patch augmentation against the per-cell reference loop."""
    reference = load_test_module("patch_photometric_reference")
    device = pick_device(a.device)
    generator = torch.Generator().manual_seed(a.seed)
    images = torch.rand(a.views, 3, a.img_size, a.img_size, generator=generator)
    params = sample_patch_photometric(a.views * (a.img_size // a.patch_size) ** 2, generator)
    on_device = images.to(device)
    batched_out = apply_patch_photometric(on_device, a.patch_size, params)  # warm-up
    times = interleaved({
        "reference_loop": (lambda: reference.reference_patch_photometric(images, a.patch_size, params), 1,
                           torch.device("cpu")),
        "batched": (lambda: apply_patch_photometric(on_device, a.patch_size, params), a.repeats, device),
    }, a.rounds)
    batched, loop = times["batched"], times["reference_loop"]
    expected = reference.reference_patch_photometric(images, a.patch_size, params)
    return {"benchmark": "patch-aug", "views": a.views, "img_size": a.img_size, "patch_size": a.patch_size,
            "cells": len(params), "device": str(device), "threads": torch.get_num_threads(),
            "batched": batched, "reference_loop": loop,
            "ratio_wall": loop["wall_s"] / batched["wall_s"], "ratio_cpu": loop["cpu_s"] / batched["cpu_s"],
            "max_abs_diff": (batched_out.cpu() - expected).abs().max().item()}


SUBCOMMANDS = [
    ("patch-aug", patch_aug_arguments, patch_aug),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, add_arguments, run in SUBCOMMANDS:
        add_arguments(sub.add_parser(name, help=run.__doc__, parents=[common]))
        sub.choices[name].set_defaults(run=run)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(json.dumps(a.run(a), indent=2))


if __name__ == "__main__":
    main()
