"""``stl10`` and ``stl10-unlabeled``: the STL-10 binary release (``stl10_binary/``), read through memory maps.

Each ``*_X.bin`` holds uint8 images of 3 × 96 × 96 bytes, every colour plane stored column-major (the official
reader, ``mttk/STL10`` ``stl10_input.py::read_all_images``, reshapes to (N, 3, 96, 96) and transposes the last two
axes); ``*_y.bin`` holds one uint8 label 1–10 per image (read here as 0–9). ``stl10`` is the labelled set (5000 train,
8000 test); ``stl10-unlabeled`` pretrains on the 100 000 unlabelled images plus the 5000 train images (the usual SSL
split, labels not used) and tests on the 8000 test images, unlabelled too, so its cells evaluate on ``stl10``
through an evaluation's ``dataset:`` key. Images are read one at a time from the memory map, in the DataLoader
workers, and resized there when a matrix sets another ``fixed.image_size`` than 96.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import NO_LABEL, DatasetError, DatasetSource, ImageSet, Split, register_dataset
from .images import IMAGENET_MEAN, IMAGENET_STD

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE


def _count(path: Path) -> int:
    size = path.stat().st_size
    if size % IMAGE_BYTES:
        raise DatasetError(f"dataset STL-10: {path} holds {size} bytes, not a whole number of 96x96x3 images; "
                           "extract stl10_binary.tar.gz again")
    return size // IMAGE_BYTES


@dataclass(frozen=True)
class StlImages:
    """Images ``index`` of the concatenated ``*_X.bin`` files, as uint8 (3, size, size); each process maps the
    files on first use (a memory map does not pickle to the DataLoader workers)."""

    files: tuple[str, ...]
    counts: tuple[int, ...]
    size: int

    def _maps(self) -> list[np.memmap]:
        maps = self.__dict__.get("_cached")
        if maps is None:
            maps = [np.memmap(f, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE)) for f, n in zip(self.files,
                                                                                                  self.counts)]
            object.__setattr__(self, "_cached", maps)
        return maps

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cached"}

    def __call__(self, index: int) -> torch.Tensor:
        for images, count in zip(self._maps(), self.counts):
            if index < count:
                image = torch.from_numpy(np.ascontiguousarray(images[index].transpose(0, 2, 1)))  # column-major
                if self.size == SIDE:
                    return image
                resized = F.interpolate(image[None].float(), size=(self.size, self.size), mode="bilinear",
                                        antialias=True, align_corners=False)
                return resized[0].round_().clamp_(0, 255).to(torch.uint8)
            index -= count
        raise IndexError(index)


class _Stl10Source(DatasetSource):
    num_classes = 10
    image_size = SIDE
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN  # as SSL pipelines normalise STL-10
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    embedded: ClassVar[bool] = False
    resizable: ClassVar[bool] = True
    splits: ClassVar[dict[str, tuple[str, ...]]]  # split -> the file prefixes it concatenates
    labelled: ClassVar[bool]
    layout: ClassVar[str] = (
        "<data root>/stl10_binary/\n"
        "    train_X.bin  train_y.bin      (5000 images, labels 1-10)\n"
        "    test_X.bin   test_y.bin       (8000 images)\n"
        "    unlabeled_X.bin               (100000 images; needed by stl10-unlabeled)\n"
        "    class_names.txt\n"
        "(stl10_binary.tar.gz, extracted; images are 3x96x96 uint8, each plane column-major)")

    def expected_path(self) -> Path:
        return self.root / "stl10_binary"

    def required(self) -> list[Path]:
        prefixes = {p for files in self.splits.values() for p in files}
        return [self.expected_path() / f"{p}_X.bin" for p in sorted(prefixes)] + [
            self.expected_path() / f"{p}_y.bin" for p in ("train", "test")]

    def files_present(self) -> bool:
        return all(path.is_file() for path in self.required())

    def load(self, split: Split) -> ImageSet:
        self.check()
        files = [self.expected_path() / f"{prefix}_X.bin" for prefix in self.splits[split]]
        counts = [_count(f) for f in files]
        if self.labelled:
            labels_file = self.expected_path() / f"{split}_y.bin"
            labels = np.fromfile(labels_file, dtype=np.uint8).astype(np.int64) - 1
            if len(labels) != counts[0] or len(labels) and not (labels.min() >= 0 and labels.max() < 10):
                raise DatasetError(f"dataset '{self.name}': {labels_file} holds {len(labels)} labels for "
                                   f"{counts[0]} images, or labels outside 1-10; extract stl10_binary.tar.gz again")
        else:
            labels = np.full(sum(counts), NO_LABEL)
        return ImageSet(labels, loader=StlImages(tuple(map(str, files)), tuple(counts), self.image_size))


@register_dataset
class Stl10Source(_Stl10Source):
    """STL-10 labelled: 5000 train / 8000 test 96 px images, 10 classes."""

    name: ClassVar[str] = "stl10"
    description: ClassVar[str] = "STL-10 binary release, labelled train/test, 10 classes, 96 px"
    splits: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("train",), "test": ("test",)}
    labelled: ClassVar[bool] = True


@register_dataset
class Stl10UnlabeledSource(_Stl10Source):
    """STL-10 for pretraining: the 100 000 unlabelled + 5000 train images; labels are not read."""

    name: ClassVar[str] = "stl10-unlabeled"
    num_classes = 0
    provides: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = "STL-10 unlabeled + train images for pretraining (no labels), 96 px"
    splits: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("unlabeled", "train"), "test": ("test",)}
    labelled: ClassVar[bool] = False
