"""Training throughput of a method on synthetic images: images/s, step time and peak memory.

    python -m patchbench.benchmark.throughput --method dino --size small --img-size 224 --patch-size 16 \
        --batch-size 64 --steps 20

Runs the trainer's own ``optimizer_step`` (bf16 autocast on CUDA) on random uint8 images, after a few warm-up
steps; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from patchbench.benchmark.optim import param_groups
from patchbench.benchmark.train import optimizer_step, pick_device, view_generator
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def measure(method_name: str, backbone: BackboneConfig, batch_size: int, steps: int, warmup: int,
            device: torch.device, view_kwargs: dict, objective_kwargs: dict) -> dict:
    torch.manual_seed(0)
    method = build_method(MethodChoice(method_name, view_kwargs=view_kwargs, objective_kwargs=objective_kwargs),
                          backbone, IMAGENET_MEAN, IMAGENET_STD).to(device)
    params = method.student_parameters()
    optimizer = torch.optim.AdamW(param_groups(params))
    images = torch.randint(0, 256, (batch_size, 3, backbone.img_size, backbone.img_size), dtype=torch.uint8,
                           device=device)

    def one(step: int) -> None:
        views = method.make_views(images, view_generator(0, step))
        for substep in range(method.steps_per_batch):
            optimizer_step(method, optimizer, params, views, Progress(1, step, 2, steps), substep, lr=1e-4,
                           weight_decay=0.04, momentum=0.996, clip_grad=3.0)

    for step in range(warmup):
        one(step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for step in range(steps):
        one(warmup + step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"method": method_name, "backbone": f"vit-{backbone.size}/{backbone.patch_size}",
            "img_size": backbone.img_size, "batch_size": batch_size, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "step_s": seconds / steps, "images_per_s": batch_size * steps / seconds,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="dino")
    p.add_argument("--size", default="small")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--view-kwargs", type=json.loads, default={}, help='JSON, e.g. \'{"n_local": 8}\'')
    p.add_argument("--objective-kwargs", type=json.loads, default={})
    a = p.parse_args()
    backbone = BackboneConfig(size=a.size, patch_size=a.patch_size, img_size=a.img_size)
    result = measure(a.method, backbone, a.batch_size, a.steps, a.warmup, pick_device(a.device), a.view_kwargs,
                     a.objective_kwargs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
