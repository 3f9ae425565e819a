"""``coco``: the unlabelled COCO 2017 images, the pretraining set of GTSA (and of SelfPatch's scene-centric runs).

``<data root>/coco/train2017/*.jpg`` is the train split and ``val2017/`` the test split; no labels are read (the
annotations are not needed), so the set provides nothing to evaluations: a matrix pretraining on ``coco`` evaluates
elsewhere through an evaluation's ``dataset:`` key. Images are read as ImageNet's (``imagenet.py``): the shorter side
resized to ``image_size`` (224 unless a matrix sets ``fixed.image_size``) and the centre square kept, in the
DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from .base import NO_LABEL, DatasetError, DatasetSource, ImageSet, Split, register_dataset
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, image_names


@register_dataset
class CocoSource(DatasetSource):
    """COCO 2017 images without annotations: 118 287 train / 5000 val."""

    name: ClassVar[str] = "coco"
    num_classes = 0
    image_size = 224
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    embedded: ClassVar[bool] = False
    resizable: ClassVar[bool] = True
    provides: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = "COCO 2017 images (train2017/val2017), unlabelled, for pretraining, read at 224 px"
    split_folders: ClassVar[dict[str, str]] = {"train": "train2017", "test": "val2017"}
    layout: ClassVar[str] = (
        "<data root>/coco/\n"
        "    train2017/*.jpg   (train2017.zip, extracted: the pretraining images)\n"
        "    val2017/*.jpg     (val2017.zip, extracted)\n"
        "(annotations are not read)")

    def expected_path(self) -> Path:
        return self.root / "coco"

    def files_present(self) -> bool:
        return all((self.expected_path() / folder).is_dir() for folder in self.split_folders.values())

    def load(self, split: Split) -> ImageSet:
        self.check()
        directory = self.expected_path() / self.split_folders[split]
        names = image_names(directory)
        if not names:
            raise DatasetError(f"dataset 'coco': no image files directly in {directory}; extract "
                               f"{self.split_folders[split]}.zip there (the images, not a nested folder)")
        files = ImageFiles(str(directory), np.array([n.encode() for n in names]), self.image_size, centre_crop=True)
        return ImageSet(np.full(len(names), NO_LABEL), loader=files)
