"""The one-shot GPU check of every method (README, "GPU check"; run through benchmark/gpu_check.sh).

    python -m patchbench.benchmark.gpu_check --out gpu-check [--budget-s 390]

For each of the six methods at ViT-S/16, 224 px with its paper's crops (multi-crop methods 2 × 224 + their paper's
local crops at 96 px; APS two 224 px views), on synthetic uint8 images, it runs the trainer's step
(``benchmark/train.py::optimizer_step``: bf16 autocast, backward, clipping, AdamW, EMA) and records

- eager and ``torch.compile``-d step time, images/s, FLOPs per step (``speed.count_flops``), MFU against the
  device's dense bf16 peak (``speed.DENSE_BF16_PEAK_FLOPS``) and peak memory; the compiled run compiles the student
  and teacher backbones (``nn.Module.compile``), the part every method shares;
- whether a step synchronises the host: one step under ``torch.cuda.set_sync_debug_mode("error")``, the first
  synchronising call named when there is one;

plus Patch-Wise at its official CIFAR profiling setting (``speed.PRESETS["cifar-official"]``), whose logs record
0.217 s/iteration. Methods run one after another with a shared time budget: a compiled run that would not fit is
skipped and marked so. Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``. Without a CUDA device it
stops at once with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tabulate import tabulate

from patchbench.benchmark.optim import param_groups
from patchbench.benchmark.speed import IMAGENET_MEAN, IMAGENET_STD, PRESETS, count_flops, dense_bf16_peak
from patchbench.benchmark.train import optimizer_step, view_generator
from patchbench.methods import BackboneConfig, MethodChoice, Progress, SSLMethod, build_method

VIT_S16 = BackboneConfig(size="small", patch_size=16, img_size=224)
PAPER_LOCAL_SIZE = {"local_size": 96}  # DINO, iBOT, SelfPatch, Patch-Wise and GTSA crop locals to 96 px at 224


@dataclass(frozen=True)
class Case:
    """One row of the check: a method with its settings, the backbone and the batch size."""

    label: str
    method: str
    backbone: BackboneConfig = VIT_S16
    batch_size: int = 64  # DINO's 1024 over 16 GPUs
    view_kwargs: dict = field(default_factory=dict)
    objective_kwargs: dict = field(default_factory=dict)


def cases() -> list[Case]:
    """The six methods at their paper defaults (view and objective), ViT-S/16, and Patch-Wise's CIFAR profile."""
    backbone, batch, view_kwargs, objective_kwargs = PRESETS["cifar-official"]
    return [*(Case(name, name, view_kwargs=PAPER_LOCAL_SIZE) for name in ("dino", "patchwise", "ibot", "selfpatch",
                                                                           "gtsa")),
            Case("aps", "aps"),
            Case("patchwise-cifar-official", "patchwise", backbone, batch, view_kwargs, objective_kwargs)]


def no_cuda_message() -> str | None:
    """One line naming why there is no CUDA device to check, or None when there is one."""
    if not torch.cuda.is_available():
        return (f"gpu_check: no CUDA device is present (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU")
    return None


class Stepper:
    """A method, its optimiser and a batch of synthetic uint8 images on the GPU; ``step(i)`` is one trainer step."""

    def __init__(self, case: Case, device: torch.device):
        torch.manual_seed(0)
        choice = MethodChoice(case.method, view_kwargs=case.view_kwargs, objective_kwargs=case.objective_kwargs)
        self.method: SSLMethod = build_method(choice, case.backbone, IMAGENET_MEAN, IMAGENET_STD).to(device)
        self.params = self.method.student_parameters()
        self.optimizer = torch.optim.AdamW(param_groups(self.params))
        size = case.backbone.img_size
        self.images = torch.randint(0, 256, (case.batch_size, 3, size, size), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0)).to(device)
        self.progress = Progress(epoch=1, step=0, total_epochs=2, steps_per_epoch=100)

    def step(self, i: int) -> None:
        views = self.method.make_views(self.images, view_generator(0, i))
        for substep in range(self.method.steps_per_batch):
            optimizer_step(self.method, self.optimizer, self.params, views, self.progress, substep, lr=1e-4,
                           weight_decay=0.04, momentum=0.996, clip_grad=3.0)

    def compile_backbones(self) -> None:
        for backbone in (self.method.student, self.method.teacher):
            if backbone is not None:
                backbone.compile()


def time_steps(stepper: Stepper, warmup: int, steps: int, device: torch.device) -> dict:
    """Median step time over ``steps`` steps after ``warmup``, and the peak memory of the timed steps."""
    for i in range(warmup):
        stepper.step(i)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        stepper.step(i)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"step_s": float(torch.tensor(times).median()),
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def host_sync(stepper: Stepper, i: int) -> str:
    """'none' when step ``i`` makes no synchronising CUDA call, else the error and the line of ours that made it."""
    try:
        torch.cuda.set_sync_debug_mode("error")
        stepper.step(i)
        return "none"
    except RuntimeError as error:
        ours = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(error.__traceback__)
                if "/patchbench/" in f.filename or "/methods/" in f.filename or "/benchmark/" in f.filename]
        return f"{str(error).splitlines()[0]} at {ours[-1] if ours else 'an unknown line'}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def check_case(case: Case, device: torch.device, peak: float | None, deadline: float, warmup: int,
               steps: int) -> dict:
    """Eager and compiled timings, FLOPs, MFU and the host-sync check of one case."""
    row: dict = {"method": case.method, "backbone": f"vit-{case.backbone.size}/{case.backbone.patch_size}",
                 "img_size": case.backbone.img_size, "batch_size": case.batch_size}
    try:
        stepper = Stepper(case, device)
        row["flops_per_step"] = count_flops(lambda: stepper.step(0))
        row["host_sync"] = host_sync(stepper, 1)
        started = time.perf_counter()
        row["eager"] = time_steps(stepper, warmup, steps, device)
        eager_s = time.perf_counter() - started
        if time.perf_counter() + 6 * eager_s + 60 > deadline:  # compilation takes tens of seconds per method
            row["compiled"] = {"skipped": "not enough of the time budget left"}
        else:
            stepper.compile_backbones()
            row["compiled"] = time_steps(stepper, warmup, steps, device)
        for mode in ("eager", "compiled"):
            if "step_s" in row[mode]:
                run = row[mode]
                run["images_per_s"] = case.batch_size / run["step_s"]
                run["tflop_per_s"] = row["flops_per_step"] / run["step_s"] / 1e12
                run["mfu"] = run["tflop_per_s"] * 1e12 / peak if peak else None
    except Exception as error:  # one failing method must not hide the others' figures
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        row["traceback"] = traceback.format_exc()
    finally:
        torch.cuda.empty_cache()
    return row


def markdown(result: dict) -> str:
    """The rows as one Markdown table."""
    def cell(run: dict | None, key: str, scale: float = 1.0, fmt: str = "{:.3g}") -> str:
        if not run or run.get(key) is None:
            return (run or {}).get("skipped", "—") if key == "step_s" else "—"
        return fmt.format(run[key] * scale)

    rows = []
    for label, row in result["cases"].items():
        if "error" in row:
            rows.append([label, row.get("backbone", ""), row.get("batch_size", ""), f"error: {row['error']}",
                         *[""] * 8])
            continue
        eager, compiled = row["eager"], row["compiled"]
        rows.append([label, row["backbone"], row["batch_size"], f"{row['flops_per_step'] / 1e12:.3g}",
                     cell(eager, "step_s"), cell(eager, "images_per_s", fmt="{:.0f}"),
                     cell(eager, "mfu", 100, "{:.1f} %"), cell(eager, "peak_memory_mb", 1 / 1024, "{:.1f}"),
                     cell(compiled, "step_s"), cell(compiled, "images_per_s", fmt="{:.0f}"),
                     cell(compiled, "mfu", 100, "{:.1f} %"), row["host_sync"]])
    headers = ["case", "backbone", "batch", "TFLOP/step", "eager s/step", "eager img/s", "eager MFU",
               "eager peak GiB", "compiled s/step", "compiled img/s", "compiled MFU", "host sync in a step"]
    head = (f"{result['device_name']}, torch {result['torch']}, bf16 autocast, dense bf16 peak "
            f"{result['dense_bf16_peak_tflops'] or 'unknown'} TFLOP/s; median of {result['timed_steps']} steps "
            f"after {result['warmup']} warm-up steps.\n\n")
    return head + tabulate(rows, headers=headers, tablefmt="github") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--budget-s", type=float, default=390.0, help="wall-clock budget of all cases together")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per case and mode")
    p.add_argument("--only", nargs="*", help="only these case labels")
    a = p.parse_args(argv)
    problem = no_cuda_message()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    deadline = time.perf_counter() + a.budget_s
    device = torch.device("cuda")
    device_name = torch.cuda.get_device_name(device)
    peak = dense_bf16_peak(device_name)
    result = {"device_name": device_name, "torch": torch.__version__, "dense_bf16_peak_tflops": peak and peak / 1e12,
              "warmup": a.warmup, "timed_steps": a.steps, "cases": {}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases():
        if a.only and case.label not in a.only:
            continue
        if time.perf_counter() > deadline:
            result["cases"][case.label] = {"method": case.method, "error": "skipped: the time budget is spent"}
            continue
        print(f"gpu_check: {case.label}", file=sys.stderr, flush=True)
        result["cases"][case.label] = check_case(case, device, peak, deadline, a.warmup, a.steps)
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2))  # what is done survives a kill
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 1 if any("error" in row for row in result["cases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
