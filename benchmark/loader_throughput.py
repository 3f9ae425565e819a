"""Loader throughput: images/s of the on-disk input pipeline per DataLoader worker, beside the training step's rate.

    python -m patchbench.benchmark.loader_throughput --images 2000 --workers 1 2 --size 224 \
        --view-kwargs '{"local_size": 96}'

Writes a folder of ``--images`` JPEGs at ImageNet-like sizes (sides drawn from 300–640 px, smooth content plus
noise so that files are tens of kB like photographs) into a temporary directory, then times the harness's own
loader (``datasets/images.py::ImageFiles``, as ``imagenet``/``imagenet100``/``coco`` read: decode, shorter side to
``--size``, centre square) through ``torch.utils.data.DataLoader`` with each worker count, and the same decode
without PIL's ``draft`` (a full-size decode, as torchvision's ``pil_loader``) as the side-by-side reference. The
training step's images/s per GPU is the FLOP-based expectation of ``benchmark/cost.py`` for the given method and
GPU model, or, with ``--measure-step``, the trainer's step measured on this machine's device
(``benchmark/throughput.py``). Figures go to docs/benchmarks.md ("Loader throughput").
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from patchbench.datasets import ImageSet
from patchbench.datasets.images import ImageFiles, decode
from patchbench.methods import BackboneConfig, MethodChoice, resolve_choice

from .cluster import GPU_TFLOPS
from .config import make_spec
from .cost import pretrain_flops_per_image, sustained_flops


def write_jpegs(directory: Path, count: int, seed: int = 0) -> np.ndarray:
    """``count`` JPEGs with ImageNet-like sides and content (crops of a few smooth, noisy 640 px textures);
    returns their names (bytes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:640, 0:640]
    textures = []
    for _ in range(8):
        phases, frequency = rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.005, 0.05)
        smooth = np.stack([127 + 100 * np.sin(frequency * (x + 1.3 * y) + p) for p in phases], axis=-1)
        textures.append(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8))
    names = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(300, 641, 2))
        top, left = int(rng.integers(0, 641 - height)), int(rng.integers(0, 641 - width))
        name = f"{i:06d}.JPEG"
        Image.fromarray(textures[i % 8][top:top + height, left:left + width]).save(directory / name, quality=90)
        names.append(name.encode())
    return np.array(names)


class FullDecode(ImageFiles):
    """The same files decoded at full size before the resize (no ``draft``): the reference."""

    def __call__(self, index: int) -> torch.Tensor:
        return decode(self.path(index), self.size, self.centre_crop, draft=False)


def images_per_s(files: ImageFiles, workers: int, batch_size: int) -> float:
    """Images/s of one pass over ``files`` through a DataLoader with ``workers`` worker processes (the workers'
    start-up included, as every epoch of ``train.batches`` pays it)."""
    data = ImageSet(np.zeros(len(files), dtype=np.int64), loader=files)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in loader)
    return seen / (time.perf_counter() - start)


def expected_step_images_per_s(method: str, size: int, gpu: str, view_kwargs: dict) -> float:
    """FLOP-based images/s per GPU of ``method``'s pretraining at ViT-S/16 (``benchmark/cost.py``)."""
    spec = make_spec(matrix="loader", method=method, dataset="imagenet", seed=0, image_size=size,
                     backbone={"size": "small", "patch_size": 16}, view_kwargs=view_kwargs)
    return sustained_flops(gpu) / pretrain_flops_per_image(spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", default="dino")
    p.add_argument("--view-kwargs", type=json.loads, default={}, help='JSON, e.g. \'{"local_size": 96}\'')
    p.add_argument("--gpu", default="a100", choices=tuple(GPU_TFLOPS))
    p.add_argument("--measure-step", action="store_true",
                   help="measure the training step on this machine's device instead of the FLOP-based expectation")
    a = p.parse_args()
    resolve_choice(MethodChoice(a.method))  # an unknown method fails before the images are written
    with tempfile.TemporaryDirectory(prefix="patchbench-loader-") as tmp:
        started = time.perf_counter()
        names = write_jpegs(Path(tmp), a.images)
        sizes = [(Path(tmp) / n.decode()).stat().st_size for n in names]
        print(f"wrote {a.images} JPEGs (median {np.median(sizes) / 1024:.0f} kB) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        fast = ImageFiles(tmp, names, a.size, centre_crop=True)
        full = FullDecode(tmp, names, a.size, centre_crop=True)
        rows = []
        for workers in a.workers:
            # interleaved, so both see the same load from other processes
            draft_rate, full_rate = images_per_s(fast, workers, a.batch_size), images_per_s(full, workers,
                                                                                            a.batch_size)
            rows.append({"workers": workers, "images_per_s": draft_rate,
                         "images_per_s_per_worker": draft_rate / max(workers, 1),
                         "full_decode_images_per_s": full_rate, "draft_speedup": draft_rate / full_rate})
            print(json.dumps(rows[-1]), flush=True)
    if a.measure_step:
        from .throughput import measure
        from .train import pick_device

        backbone = BackboneConfig(size="small", patch_size=16, img_size=a.size)
        step = measure(a.method, backbone, a.batch_size, 5, 2, pick_device("auto"), a.view_kwargs, {})
        train_rate, source = step["images_per_s"], f"measured on {step['device_name']}"
    else:
        train_rate = expected_step_images_per_s(a.method, a.size, a.gpu, a.view_kwargs)
        source = f"FLOP-based, {a.gpu}"
    per_worker = rows[0]["images_per_s_per_worker"]
    print(json.dumps({"method": a.method, "backbone": "vit-small/16", "train_images_per_s_per_gpu": train_rate,
                      "train_rate_source": source, "loader_images_per_s_per_worker": per_worker,
                      "workers_per_gpu_to_keep_up": math.ceil(train_rate / per_worker)}, indent=2))


if __name__ == "__main__":
    main()
