"""Image files decoded one at a time, in DataLoader workers: the first (and only) resize of the input pipeline.

A split of an on-disk set is an :class:`ImageFiles`: one directory and the files' paths under it as a single numpy
byte-string array (a list of Python strings would be touched by every worker's reference counting and copied page
by page into each forked worker; pytorch/pytorch#13246). Each access decodes one file and brings it to a fixed
``size`` × ``size`` square, so that a batch stacks and the crops and photometric augmentations run batched on the
training device (``methods/views.py``).

JPEG files are decoded with PIL's ``draft``: libjpeg scales the DCT by 1/2, 1/4 or 1/8 while decoding, to the
smallest scale that is still at least ``size`` on both sides, and the bilinear resize does the rest. torchvision's
``pil_loader`` decodes at full size; the pixels differ slightly from a full decode followed by the same resize.
It only applies to files at least twice the target size on both sides (docs/benchmarks.md, "Loader throughput").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fit(image: Image.Image, size: int, centre_crop: bool, resample: Image.Resampling) -> Image.Image:
    """A ``size`` × ``size`` image: a plain resize, or a resize of the shorter side followed by a centre crop."""
    if not centre_crop:
        return image.resize((size, size), resample)
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode(path: str | Path, size: int, centre_crop: bool, draft: bool = True) -> torch.Tensor:
    """uint8 (3, size, size) RGB tensor of the image file at ``path`` (see the module docstring)."""
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (size, size))
        fitted = fit(image.convert("RGB"), size, centre_crop, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(fitted).copy()).permute(2, 0, 1).contiguous()


def is_image_file(name: str) -> bool:
    """torchvision's ImageFolder rule: the extension, in any case, is one of ``IMG_EXTENSIONS``."""
    return name.lower().endswith(IMG_EXTENSIONS)


def image_names(directory: Path) -> list[str]:
    """Sorted names of the image files directly in ``directory`` (``os.scandir``: one directory read, no stat)."""
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if is_image_file(e.name) and not e.is_dir())


@dataclass(frozen=True)
class ImageFiles:
    """The image files of one split, decoded on access: ``directory / names[i]`` at ``size`` px."""

    directory: str
    names: np.ndarray  # byte strings, paths relative to ``directory``
    size: int
    centre_crop: bool

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int) -> str:
        return os.path.join(self.directory, self.names[index].decode())

    def __call__(self, index: int) -> torch.Tensor:
        return decode(self.path(index), self.size, self.centre_crop)
