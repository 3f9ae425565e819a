"""``digits``: scikit-learn's handwritten digits (real 8×8 scans), upsampled to 32 px RGB; embedded, no files."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .base import DatasetSource, ImageSet, Split, register_dataset
from .edits import EditedTestSplit

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, np.ndarray, dict[str, np.ndarray]]:
    """(uint8 images (N,3,32,32), labels, split -> indices), computed once per process."""
    bunch = load_digits()
    grey = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (N,1,8,8), values 0..16
    grey = F.interpolate(grey, size=DigitsSource.image_size, mode="bilinear", align_corners=False)
    images = (grey * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=labels)
    return images, labels, {"train": np.sort(train), "test": np.sort(test)}


def split_indices(split: Split) -> np.ndarray:
    """Indices into ``load_digits()`` of a split: a fixed stratified 75/25 split (random_state 0)."""
    return _digits()[2][split]


@register_dataset
class DigitsSource(EditedTestSplit, DatasetSource):
    """1797 handwritten digits (1347 train / 450 test), grey replicated to RGB, bilinearly upsampled 8 → 32 px."""

    name: ClassVar[str] = "digits"
    num_classes = 10
    image_size = 32
    mean: ClassVar[tuple[float, float, float]] = (0.3052, 0.3052, 0.3052)  # of the train split
    std: ClassVar[tuple[float, float, float]] = (0.3236, 0.3236, 0.3236)
    embedded: ClassVar[bool] = True
    description: ClassVar[str] = "scikit-learn digits, 8x8 scans upsampled to 32 px RGB, 10 classes (embedded)"
    provides: ClassVar[frozenset[str]] = frozenset({"labels", "copies", "retrieval"})  # copies: datasets/edits.py

    def load(self, split: Split) -> ImageSet:
        images, labels, splits = _digits()
        index = splits[split]
        return ImageSet(labels[index], images=images[torch.from_numpy(index)])
