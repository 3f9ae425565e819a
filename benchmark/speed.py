"""Speed checks, one subcommand each; figures go to docs/benchmarks.md.

    python -m patchbench.benchmark.speed steps [--matrix benchmark/matrices/demo.yaml | --preset vit-s16]
    python -m patchbench.benchmark.speed patch-aug [--views 8 --img-size 224 --patch-size 16 --threads 1]

``steps``: the training step (views + every optimiser step of a batch + EMA, the trainer's ``optimizer_step``) of
every method against DINO, in one process, on the same images and view seeds, methods interleaved step by step.
With ``--matrix`` each method runs with that matrix's settings (backbone, batch size, method section) on its first
dataset; a preset runs paper defaults on synthetic images (``vit-s16``: ViT-S/16, 2×224 + 8×96, batch 64;
``cifar-official``: the official Patch-Wise CIFAR profiling setting, ViT-Ti/16, batch 40, 2×224 + 8×96, K = 1000,
whose logs record 0.217 s/iteration). It reports the median step time, images/s, the ratio to DINO, and the share of
the step spent in Patch-Wise's matching (``match_patches``) and per-patch augmentation (``patch_photometric``).
It also counts the FLOPs of one (untimed) step of each method with ``torch.utils.flop_counter.FlopCounterMode``
(views, forward and backward of every optimiser step; see ``count_flops``) and reports the achieved FLOP/s, the FLOP
ratio to DINO and the efficiency relative to DINO, (FLOP ratio) / (time ratio) = achieved FLOP/s over DINO's: below
1 a method spends time beyond its arithmetic. On CUDA: MFU against the device's dense bf16 peak
(``DENSE_BF16_PEAK_FLOPS``) and the peak memory of a step. ``--table`` prints the rows as Markdown
(docs/benchmarks.md).

``patch-aug``: the batched per-patch photometric augmentation (methods/patch_photometric.py, docs/methods.md
"Patch-Wise SSL") against the per-cell torchvision loop that is also its test reference
(benchmark/patch_photometric_reference.py), on the same images and drawn parameters. Both run in this process on
``--threads`` intra-op threads (1 by default: the loop's tiny ops only lose from more), timed in alternating rounds;
wall and process-CPU times are the minimum over runs, and the CPU-time ratio is the steadier figure on a shared
machine.

A subcommand is a ``(name, add_arguments, run)`` entry in ``SUBCOMMANDS``; ``run(args)`` returns a JSON-able dict.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch
from tabulate import tabulate
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.optim import param_groups
from patchbench.benchmark.train import build_for_spec, optimizer_step, pick_device, view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, SSLMethod, build_method
from patchbench.methods import patchwise as patchwise_module
from patchbench.methods import views as views_module
from patchbench.methods.patch_photometric import apply_patch_photometric, sample_patch_photometric

from .patch_photometric_reference import reference_patch_photometric

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, matched in order as substrings of torch.cuda.get_device_name.
# Sources: NVIDIA H200 datasheet (H200 SXM / NVL: 1,979 / 1,671 TFLOPS "with sparsity", halved); NVIDIA H100
# datasheet (SXM 1,979, NVL 1,671, PCIe 1,513 with sparsity, halved); NVIDIA A100 datasheet (312 dense);
# NVIDIA L40S datasheet (362.05 dense); NVIDIA L4 datasheet (242 with sparsity, halved).
DENSE_BF16_PEAK_FLOPS = (
    ("H200 NVL", 835e12), ("H200", 989e12),
    ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
)


def dense_bf16_peak(device_name: str) -> float | None:
    """The device's dense bf16 peak FLOP/s from ``DENSE_BF16_PEAK_FLOPS``; None for a device not listed."""
    return next((peak for key, peak in DENSE_BF16_PEAK_FLOPS if key in device_name), None)


def cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU's fused attention, by torch's own formula for the CUDA kernels (``sdpa_flop_count``)."""
    return sdpa_flop_count(query, key, value)


def cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode (torch 2.14) counts the CUDA attention kernels but not the CPU's, which timm's ViT runs through
# ``F.scaled_dot_product_attention``; these entries add it.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of running ``fn``, as ``torch.utils.flop_counter.FlopCounterMode`` counts them:
    matrix products, convolutions and attention (2 per multiply-add), forward and backward; element-wise work,
    reductions and the optimiser's updates are not counted."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


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
    p.set_defaults(default_threads=1)  # the loop's tiny ops only lose from more threads


def patch_aug(a: argparse.Namespace) -> dict:
    """Batched per-patch augmentation against the per-cell reference loop."""
    device = pick_device(a.device)
    generator = torch.Generator().manual_seed(a.seed)
    images = torch.rand(a.views, 3, a.img_size, a.img_size, generator=generator)
    params = sample_patch_photometric(a.views * (a.img_size // a.patch_size) ** 2, generator)
    on_device = images.to(device)
    batched_out = apply_patch_photometric(on_device, a.patch_size, params)  # warm-up
    times = interleaved({
        "reference_loop": (lambda: reference_patch_photometric(images, a.patch_size, params), 1,
                           torch.device("cpu")),
        "batched": (lambda: apply_patch_photometric(on_device, a.patch_size, params), a.repeats, device),
    }, a.rounds)
    batched, loop = times["batched"], times["reference_loop"]
    expected = reference_patch_photometric(images, a.patch_size, params)
    return {"benchmark": "patch-aug", "views": a.views, "img_size": a.img_size, "patch_size": a.patch_size,
            "cells": len(params), "device": str(device), "threads": torch.get_num_threads(),
            "batched": batched, "reference_loop": loop,
            "ratio_wall": loop["wall_s"] / batched["wall_s"], "ratio_cpu": loop["cpu_s"] / batched["cpu_s"],
            "max_abs_diff": (batched_out.cpu() - expected).abs().max().item()}


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MULTICROP_224 = {"n_local": 8, "global_size": 224, "local_size": 96}
PRESETS = {  # name: (backbone, batch size, view kwargs, objective kwargs)
    "vit-s16": (BackboneConfig(size="small", patch_size=16, img_size=224), 64, MULTICROP_224, {}),
    "cifar-official": (BackboneConfig(size="tiny", patch_size=16, img_size=224), 40, MULTICROP_224,
                       {"out_dim": 1000}),
}
COMPONENTS = {"matching": (patchwise_module, "match_patches"), "patch_aug": (views_module, "patch_photometric")}


def steps_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matrix", default="benchmark/matrices/demo.yaml", help="take methods and settings from here")
    p.add_argument("--preset", choices=sorted(PRESETS), help="paper defaults on synthetic images instead")
    p.add_argument("--methods", nargs="*", help="only these methods (default: all of the matrix, or dino and "
                                                "patchwise for a preset); dino is always included")
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--table", action="store_true", help="print a Markdown table of the method rows instead of JSON")
    p.set_defaults(default_threads=0)  # torch's default: the step's large matmuls use every core


def methods_to_time(a: argparse.Namespace, device: torch.device) -> tuple[dict[str, SSLMethod], torch.Tensor]:
    """(name → method on ``device``, one uint8 batch of images shared by all)."""
    if a.preset:
        backbone, batch_size, view_kwargs, objective_kwargs = PRESETS[a.preset]
        names = ["dino", *[m for m in (a.methods or ["patchwise"]) if m != "dino"]]
        methods = {}
        for name in names:
            torch.manual_seed(0)
            methods[name] = build_method(MethodChoice(name, view_kwargs=view_kwargs, objective_kwargs=objective_kwargs),
                                         backbone, IMAGENET_MEAN, IMAGENET_STD).to(device)
        images = torch.randint(0, 256, (batch_size, 3, 256, 256), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        return methods, images.to(device)
    specs = load_matrix(a.matrix).specs
    specs = [s for s in specs if not s.is_reference and s.dataset == specs[0].dataset and s.seed == specs[0].seed]
    wanted = set(a.methods or [s.method for s in specs]) | {"dino"}
    methods = {s.method: build_for_spec(s, device)[0] for s in specs if s.method in wanted}
    if "dino" not in methods:
        raise SystemExit(f"{a.matrix} has no dino cell to compare against")
    source = build_dataset(specs[0].dataset, specs[0].runtime.data_root)
    train = source.load("train").images
    if train is None:
        raise SystemExit(f"dataset '{specs[0].dataset}' is read from image files; the speed benchmark needs an "
                         "in-memory (embedded) dataset")
    return methods, train[:specs[0].budget.batch_size].to(device)


def steps(a: argparse.Namespace) -> dict:
    """Training-step time and FLOPs of every method against DINO on the same batches, with Patch-Wise's component
    shares."""
    device = pick_device(a.device)
    methods, images = methods_to_time(a, device)
    optimizers = {n: torch.optim.AdamW(param_groups(m.student_parameters())) for n, m in methods.items()}
    progress = Progress(epoch=1, step=0, total_epochs=2, steps_per_epoch=a.steps + a.warmup)
    times: dict[str, list[float]] = {n: [] for n in methods}
    peak_memory: dict[str, int] = dict.fromkeys(methods, 0)
    components: dict[str, dict[str, float]] = {n: dict.fromkeys(COMPONENTS, 0.0) for n in methods}

    def one_step(name: str, step: int) -> None:
        method = methods[name]
        views = method.make_views(images, view_generator(0, step))
        for substep in range(method.steps_per_batch):
            optimizer_step(method, optimizers[name], method.student_parameters(), views, progress, substep,
                           lr=1e-4, weight_decay=0.04, momentum=0.996, clip_grad=3.0)

    def timed_component(name: str, label: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(device)
            components[name][label] += time.perf_counter() - start
            return out
        return wrapper

    flops = {name: count_flops(lambda: one_step(name, 0)) for name in methods}  # an untimed step of each
    originals = {label: getattr(module, attr) for label, (module, attr) in COMPONENTS.items()}
    try:
        for step in range(a.warmup + a.steps):
            for name in methods:
                for label, (module, attr) in COMPONENTS.items():
                    setattr(module, attr, timed_component(name, label, originals[label]) if step >= a.warmup
                            else originals[label])
                synchronize(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
                one_step(name, step)
                synchronize(device)
                if step >= a.warmup:
                    times[name].append(time.perf_counter() - start)
                if device.type == "cuda":
                    peak_memory[name] = max(peak_memory[name], torch.cuda.max_memory_allocated(device))
    finally:
        for label, (module, attr) in COMPONENTS.items():
            setattr(module, attr, originals[label])
    median = {n: float(torch.tensor(t).median()) for n, t in times.items()}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = dense_bf16_peak(device_name) if device.type == "cuda" else None
    rows: dict[str, dict[str, float | None]] = {}
    for n in methods:
        time_ratio, flop_ratio = median[n] / median["dino"], flops[n] / flops["dino"]
        rows[n] = {"step_s": median[n], "images_per_s": len(images) / median[n], "flops_per_step": flops[n],
                   "flop_per_s": flops[n] / median[n], "ratio_to_dino": time_ratio, "flop_ratio_to_dino": flop_ratio,
                   "efficiency_to_dino": flop_ratio / time_ratio,
                   **{f"{label}_share": seconds / sum(times[n]) for label, seconds in components[n].items()
                      if seconds > 0}}
        if device.type == "cuda":
            rows[n]["mfu"] = flops[n] / median[n] / peak if peak else None
            rows[n]["peak_memory_mb"] = peak_memory[n] / 2**20
    return {"benchmark": "steps", "config": a.preset or a.matrix, "device": str(device), "device_name": device_name,
            "dense_bf16_peak_flops": peak, "threads": torch.get_num_threads(), "batch_size": len(images),
            "timed_steps": a.steps, "methods": rows}


STEP_COLUMNS = {  # JSON key of a method row: its column in the Markdown table
    "flops_per_step": "GFLOP/step", "step_s": "s/step", "flop_per_s": "GFLOP/s", "ratio_to_dino": "time ratio",
    "flop_ratio_to_dino": "FLOP ratio", "efficiency_to_dino": "efficiency", "mfu": "MFU",
    "peak_memory_mb": "peak MiB",
}


def steps_table(result: dict) -> str:
    """The ``steps`` result as a Markdown table, one row per method (GFLOP figures in units of 1e9)."""
    giga = {"flops_per_step", "flop_per_s"}
    keys = [k for k in STEP_COLUMNS if k in result["methods"]["dino"]]
    rows = [[name, *(row[k] / 1e9 if k in giga else row[k] for k in keys)] for name, row in result["methods"].items()]
    return tabulate(rows, headers=["method", *(STEP_COLUMNS[k] for k in keys)], tablefmt="github", floatfmt=".3g")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SUBCOMMANDS = [
    ("steps", steps_arguments, steps),
    ("patch-aug", patch_aug_arguments, patch_aug),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, help="torch intra-op threads (0: torch's default; default: 1 for "
                                                    "patch-aug, torch's default for steps)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, add_arguments, run in SUBCOMMANDS:
        add_arguments(sub.add_parser(name, help=run.__doc__, parents=[common]))
        sub.choices[name].set_defaults(run=run)
    a = p.parse_args(argv)
    threads = a.threads if a.threads is not None else a.default_threads
    if threads:
        torch.set_num_threads(threads)
    result = a.run(a)
    print(steps_table(result) if getattr(a, "table", False) else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
