"""``cifar10`` and ``cifar100``: the CIFAR python-pickle releases, read from the data root (never downloaded)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import DatasetError, DatasetSource, ImageSet, Split, register_dataset


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N,3,32,32), int64 labels) of one pickled CIFAR batch (rows: R, G, B planes of 1024 bytes).

    A file that is truncated, not a pickle, or not a CIFAR batch raises :class:`DatasetError` naming it and why."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except Exception as err:  # unpickling reports a damaged file with many exception types
        raise DatasetError(f"{path} ({type(err).__name__}: {err})") from None
    if len(labels) != len(images):
        raise DatasetError(f"{path} ({len(images)} images but {len(labels)} labels)")
    return images, labels


@dataclass(frozen=True)
class Upsampled:
    """Image ``index`` of in-memory 32 px images, bilinearly resized to ``size`` when it is read (in a DataLoader
    worker): the upsampled CIFAR of Patch-Wise's ``QCRI_Cifar10`` branch, whose DINO pipeline crops 224/96 views from
    ``Resize((256, 256))`` of each image, without holding the enlarged set in memory."""

    images: torch.Tensor
    size: int

    def __call__(self, index: int) -> torch.Tensor:
        resized = F.interpolate(self.images[index][None].float(), size=(self.size, self.size), mode="bilinear",
                                align_corners=False)
        return resized[0].round_().clamp_(0, 255).to(torch.uint8)


class _CifarSource(DatasetSource):
    """A CIFAR release: the folder under the root, the batch files of each split and the label key. Read at 32 px,
    or upsampled to ``fixed.image_size`` (:class:`Upsampled`)."""

    folder: ClassVar[str]
    split_files: ClassVar[dict[str, tuple[str, ...]]]
    meta_file: ClassVar[str]
    label_key: ClassVar[bytes]
    image_size = 32
    embedded: ClassVar[bool] = False
    resizable: ClassVar[bool] = True

    def expected_path(self) -> Path:
        return self.root / self.folder

    def files_present(self) -> bool:
        names = [name for files in self.split_files.values() for name in files] + [self.meta_file]
        return all((self.expected_path() / name).is_file() for name in names)

    def load(self, split: Split) -> ImageSet:
        self.check()
        parts, unreadable = [], []
        for name in self.split_files[split]:
            try:
                parts.append(read_batch(self.expected_path() / name, self.label_key))
            except DatasetError as err:
                unreadable.append(str(err))
        if unreadable:
            raise DatasetError(f"dataset '{self.name}': unreadable CIFAR batch file(s): {'; '.join(unreadable)}; "
                               "extract the python-version archive again")
        images = torch.from_numpy(np.concatenate([images for images, _ in parts]))
        labels = np.concatenate([labels for _, labels in parts])
        if self.image_size == 32:
            return ImageSet(labels, images=images)
        return ImageSet(labels, loader=Upsampled(images, self.image_size))


@register_dataset
class Cifar10Source(_CifarSource):
    """CIFAR-10: 50000 train / 10000 test 32 px images, 10 classes."""

    name: ClassVar[str] = "cifar10"
    num_classes = 10
    mean: ClassVar[tuple[float, float, float]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, float, float]] = (0.2470, 0.2435, 0.2616)
    description: ClassVar[str] = "CIFAR-10, python pickle release, 10 classes, 32 px"
    folder: ClassVar[str] = "cifar-10-batches-py"
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    meta_file: ClassVar[str] = "batches.meta"
    label_key: ClassVar[bytes] = b"labels"
    layout: ClassVar[str] = (
        "<data root>/cifar-10-batches-py/\n"
        "    data_batch_1 ... data_batch_5   (train, pickled dicts: b'data' (N,3072) uint8, b'labels')\n"
        "    test_batch                      (test)\n"
        "    batches.meta\n"
        "(the 'CIFAR-10 python version' archive, cifar-10-python.tar.gz, extracted)")


@register_dataset
class Cifar100Source(_CifarSource):
    """CIFAR-100: 50000 train / 10000 test 32 px images, 100 fine classes."""

    name: ClassVar[str] = "cifar100"
    num_classes = 100
    mean: ClassVar[tuple[float, float, float]] = (0.5071, 0.4865, 0.4409)
    std: ClassVar[tuple[float, float, float]] = (0.2673, 0.2564, 0.2762)
    description: ClassVar[str] = "CIFAR-100, python pickle release, 100 fine classes, 32 px"
    folder: ClassVar[str] = "cifar-100-python"
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("train",), "test": ("test",)}
    meta_file: ClassVar[str] = "meta"
    label_key: ClassVar[bytes] = b"fine_labels"
    layout: ClassVar[str] = (
        "<data root>/cifar-100-python/\n"
        "    train   (pickled dict: b'data' (N,3072) uint8, b'fine_labels')\n"
        "    test\n"
        "    meta\n"
        "(the 'CIFAR-100 python version' archive, cifar-100-python.tar.gz, extracted)")
