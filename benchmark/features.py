"""What an evaluation reads: the run's frozen encoder, and its features cached on disk.

The encoder comes from ``SSLMethod.encoder_for_eval()`` (the teacher where there is one) loaded strictly from the
run's final checkpoint. Reference rows go through the same code: ``random-init`` is the untrained backbone of the
same configuration and seed read at its CLS token, ``random-init-patches`` the same backbone read at its mean-pooled
patch tokens (the fair reference for methods with that readout, e.g. GTSA), ``raw-pixels`` the normalised pixels
(globally: the flattened image; per patch: the patch's pixel vector). Both readouts of each row are listed in
docs/architecture.md ("Evaluation readouts"). Images are read at the evaluation dataset's native size with its
normalisation, as DINO's ``eval_knn.py`` does at 224 px.

Features are extracted once per (run, dataset, split, readout, resolution) and kept in the run folder as ``.npy``
files under ``features/``, named by a key that hashes everything they depend on: the checkpoint's contents (or, for
a reference row, its resolved config), the dataset, split, size and normalisation, and the readout. A changed
checkpoint or setting therefore misses the cache and re-extracts; every evaluation of the run that reads the same
features reuses them. Files are written to a temporary name and renamed (atomic); extraction streams batches (on-disk
sets through DataLoader workers) into a memory-mapped array, so no whole on-disk split is held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from patchbench.datasets import DatasetSource, ImageSet, Split, build_dataset
from patchbench.methods import ViTEncoder

from .config import RunSpec
from .store import RunDir
from .train import build_for_spec, loader_workers

EXTRACT_BATCH = 128  # images per forward (DINO's eval_knn.py per-GPU batch)
PATCH_DTYPE = np.float16  # patch-token maps are large: half precision on disk (global features stay float32)

Embed = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Encoder:
    """A frozen encoder as evaluations see it: normalised images → global features (B, D) or patch maps
    (B, h, w, D). ``identity`` keys the feature cache; ``epoch`` is the epoch of the weights."""

    global_features: Embed
    patch_features: Embed
    global_readout: str
    patch_readout: str
    epoch: int
    identity: str


def pixel_patches(images: Tensor, patch_size: int) -> Tensor:
    """(B, 3, H, W) → (B, H / p, W / p, 3 p²): each patch's pixels, channel-major as in a patch embedding's input."""
    b, c, h, w = images.shape
    grid = images.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(b, h // patch_size, w // patch_size, c * patch_size ** 2)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_encoder(spec: RunSpec, run: RunDir | None, device: torch.device) -> Encoder:
    """The run's evaluation encoder (see the module docstring); refuses a checkpoint that is not the last epoch."""
    reference_identity = f"{spec.method}:{spec.run_id}"
    if spec.method == "raw-pixels":
        patch = spec.backbone.patch_size
        return Encoder(lambda x: x.flatten(1), lambda x: pixel_patches(x, patch), "pixels", "pixel_patches", 0,
                       reference_identity)
    if spec.method in ("random-init", "random-init-patches"):
        torch.manual_seed(spec.seed)
        backbone = ViTEncoder(spec.backbone).to(device).eval()
        if spec.method == "random-init-patches":
            def mean_patch(x: Tensor) -> Tensor:
                return backbone(x)[:, backbone.num_prefix_tokens:].mean(1)

            return Encoder(torch.no_grad()(mean_patch), torch.no_grad()(backbone.patch_tokens), "mean_patch",
                           "patch_tokens", 0, reference_identity)
        return Encoder(torch.no_grad()(lambda x: backbone(x)[:, 0]), torch.no_grad()(backbone.patch_tokens), "cls",
                       "patch_tokens", 0, reference_identity)
    assert run is not None
    method, _ = build_for_spec(spec, device)
    checkpoint = torch.load(run.checkpoint, map_location=device, weights_only=False)
    if checkpoint["epoch"] != spec.budget.epochs:
        raise RuntimeError(f"checkpoint of run {spec.run_id} is at epoch {checkpoint['epoch']}, "
                           f"not the last epoch {spec.budget.epochs}: pretraining has not finished")
    method.load_state_dict(checkpoint["method"])  # strict: every key must match
    encoder = method.encoder_for_eval()
    return Encoder(encoder, encoder.patches, encoder.readout, "patch_tokens", checkpoint["epoch"],
                   f"checkpoint:{_file_digest(run.checkpoint)}")


def _image_batches(data: ImageSet, num_workers: int, batch_size: int = EXTRACT_BATCH) -> tuple[int, object]:
    """(number of batches, iterator of uint8 image batches) of a split, in dataset order."""
    n_batches = -(-len(data) // batch_size)
    if data.images is not None:
        return n_batches, (data.images[i:i + batch_size] for i in range(0, len(data), batch_size))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return n_batches, (images for images, _ in loader)


def _atomic_memmap(path: Path, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> None:
    """Write an ``.npy`` of ``shape`` by ``fill``-ing a memory map under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    os.close(fd)
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(array)
        array.flush()
        del array
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EvalInputs:
    """Everything one evaluation of one run reads: the evaluation dataset, its labels and masks, the run's features
    of the readout the evaluation declares (cached), and the encoder itself (for protocols that augment)."""

    def __init__(self, spec: RunSpec, run: RunDir, dataset: str, reads: str, device: torch.device):
        self.spec = spec
        self.run = run
        self.reads = reads
        self.device = device
        self.source: DatasetSource = build_dataset(dataset, spec.runtime.data_root,
                                                   spec.image_size if dataset == spec.dataset else None)
        self._splits: dict[str, ImageSet] = {}
        self.extracted: list[Path] = []  # cache files this evaluation had to write (tests and benchmarks read it)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @cached_property
    def encoder(self) -> Encoder:
        return load_encoder(self.spec, self.run, self.device)

    @property
    def readout(self) -> str:
        """The declared readout's name; ``global+patches``: both names joined by '+'."""
        names = {"global": self.encoder.global_readout, "patches": self.encoder.patch_readout}
        return "+".join(names[part] for part in self.reads.split("+"))

    @property
    def resolution(self) -> int:
        return self.source.image_size

    def split(self, split: Split) -> ImageSet:
        if split not in self._splits:
            self._splits[split] = self.source.load(split)
        return self._splits[split]

    def labels(self, split: Split) -> np.ndarray:
        return self.split(split).labels

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 images (or floats in [0, 1]) → normalised with the dataset's statistics, on the evaluation device."""
        mean = torch.tensor(self.source.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.source.std, device=self.device).view(1, 3, 1, 1)
        images = images.to(self.device)
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return (images - mean) / std

    def embed(self, images: Tensor) -> Tensor:
        """The declared readout of normalised images, as float32."""
        encoder = self.encoder
        return (encoder.global_features if self.reads == "global" else encoder.patch_features)(images).float()

    def features(self, split: Split) -> np.ndarray:
        """The run's features of a split: (N, D) float32 for ``global``, (N, h, w, D) float16 for ``patches``;
        read from the cache (memory-mapped) or extracted into it."""
        return self.cached_features(split, self.split(split), self.readout, self.embed,
                                    np.float32 if self.reads == "global" else PATCH_DTYPE)

    def cached_features(self, part: str, data: ImageSet, descriptor: str, embed: Embed, dtype=np.float32,
                        batch_size: int = EXTRACT_BATCH) -> np.ndarray:
        """``embed`` of normalised images of ``data`` (a split, or a part of a copy-detection or retrieval set named
        ``part``), cached under the name ``descriptor``; ``batch_size`` 1 reads images of different sizes."""
        path = self._cache_path(part, data, descriptor)
        if not path.exists():
            self._extract(data, path, f"{descriptor}-{self.source.name}-{part}-", embed, dtype, batch_size)
        return np.load(path, mmap_mode="r")

    def cache_key(self, split: Split) -> str:
        return self._cache_key(split, self.split(split), self.readout)

    def cache_path(self, split: Split) -> Path:
        return self._cache_path(split, self.split(split), self.readout)

    def _cache_key(self, part: str, data: ImageSet, descriptor: str) -> str:
        identity = {"encoder": self.encoder.identity, "readout": descriptor, "dataset": self.source.name,
                    "split": part, "images": len(data), "resolution": self.resolution,
                    "mean": list(self.source.mean), "std": list(self.source.std)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def _cache_path(self, part: str, data: ImageSet, descriptor: str) -> Path:
        name = f"{descriptor}-{self.source.name}-{part}-{self.resolution}px-{self._cache_key(part, data, descriptor)}"
        return self.run.path / "features" / f"{name}.npy"

    @torch.no_grad()
    def _extract(self, data: ImageSet, path: Path, prefix: str, embed: Embed, dtype, batch_size: int) -> None:
        n_batches, batches = _image_batches(data, loader_workers(self.spec.runtime.num_workers), batch_size)
        first = embed(self.normalise(data[0][0].unsqueeze(0)))

        def fill(array: np.ndarray) -> None:
            start = 0
            for images in tqdm(batches, total=n_batches, desc=f"{prefix.rstrip('-')} features", file=sys.stderr,
                               mininterval=5.0):
                out = embed(self.normalise(images)).cpu().numpy()
                if out.shape[1:] != array.shape[1:]:
                    raise RuntimeError(f"{prefix.rstrip('-')}: image {start} gives features of shape {out.shape[1:]}, "
                                       f"the first gave {array.shape[1:]}; this readout needs images of one size")
                array[start:start + len(out)] = out
                start += len(out)

        for stale in path.parent.glob(f"{prefix}*.npy"):
            stale.unlink()  # features of an earlier checkpoint or setting
        _atomic_memmap(path, (len(data), *first.shape[1:]), dtype, fill)
        self.extracted.append(path)

    def masks(self, split: Split) -> np.ndarray:
        """uint8 (N, S, S) masks of a split: in memory for embedded sets; on-disk sets are decoded once into a cache
        shared by the runs of the results folder (``<results>/cache/``)."""
        data = self.split(split)
        if data.masks is not None:
            return data.masks.numpy()
        path = self.run.path.parent / "cache" / f"masks-{self.source.name}-{split}-{self.resolution}px-{len(data)}.npy"
        if not path.exists():
            def fill(array: np.ndarray) -> None:
                start = 0
                loader = DataLoader(_Masks(data), batch_size=EXTRACT_BATCH,
                                    num_workers=loader_workers(self.spec.runtime.num_workers))
                for batch in tqdm(loader, desc=f"masks of {self.source.name}/{split}", file=sys.stderr,
                                  mininterval=5.0):
                    array[start:start + len(batch)] = batch.numpy()
                    start += len(batch)
            _atomic_memmap(path, (len(data), self.resolution, self.resolution), np.uint8, fill)
        return np.load(path, mmap_mode="r")


class _Masks(torch.utils.data.Dataset):
    """The masks of a split as a dataset, for DataLoader workers."""

    def __init__(self, data: ImageSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tensor:
        return self.data.mask(index)
