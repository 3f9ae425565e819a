"""``voc2012`` and ``ade20k``: semantic-segmentation sets on disk, for the dense evaluations (masks, no image labels).

Both are read lazily, one image at a time, and brought to one fixed evaluation resolution so that a split batches
like any other source; the resolution is the source's ``image_size`` and is recorded with every dense figure.

- Pascal VOC 2012 (``VOCdevkit/VOC2012``): palette PNGs under ``SegmentationClass`` hold the class index of each
  pixel (0 background, 1–20 the object classes, 255 the unlabelled borders); the ``train`` and ``val`` lists of
  ``ImageSets/Segmentation`` are the train and test splits. Images and masks are resized to 448 × 448 (bilinear for
  images, nearest for masks), as Leopart's linear probe (``data/VOCdevkit`` transforms in ``leopart``) does.
- ADE20K (``ADEChallengeData2016``, the SceneParsing release): grey PNGs under ``annotations`` hold 0 for "other"
  and 1–150 for the classes; 0 becomes the ignore index 255 and k becomes k − 1 (mmsegmentation's
  ``reduce_zero_label``). The shorter side is resized to 512 and the centre 512 × 512 crop kept; iBOT's and DINOv2's
  linear segmentation train on 512 crops and test with a sliding window over the whole image, which this
  centre crop does not do (a deviation recorded in the README).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from .base import NO_LABEL, DatasetError, DatasetSource, ImageSet, Segmentation, Split, register_dataset
from .images import IMAGENET_MEAN, IMAGENET_STD, fit

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
ADE20K_NUM_CLASSES = 150
IGNORE_INDEX = 255


def read_image(paths: tuple[Path, ...], size: int, centre_crop: bool, index: int) -> torch.Tensor:
    """uint8 (3, size, size) RGB image ``paths[index]``, bilinearly resized."""
    with Image.open(paths[index]) as image:
        fitted = fit(image.convert("RGB"), size, centre_crop, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(fitted)).permute(2, 0, 1).contiguous()


def read_mask(paths: tuple[Path, ...], size: int, centre_crop: bool, reduce_zero_label: bool,
              index: int) -> torch.Tensor:
    """uint8 (size, size) class mask of ``paths[index]`` (palette indices or grey levels), nearest-resized."""
    with Image.open(paths[index]) as mask:
        if mask.mode not in ("P", "L"):
            raise DatasetError(f"{paths[index]}: a mask must be a palette or grey PNG, got mode {mask.mode}")
        values = np.array(fit(mask, size, centre_crop, Image.Resampling.NEAREST))
    if reduce_zero_label:
        values = np.where(values == 0, IGNORE_INDEX, values.astype(np.int16) - 1).astype(np.uint8)
    return torch.from_numpy(values)


class _SegmentationSource(DatasetSource):
    """A folder of images and per-pixel masks under the data root; see the module docstring."""

    embedded: ClassVar[bool] = False
    provides: ClassVar[frozenset[str]] = frozenset({"masks"})
    num_classes = 0  # no image labels
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    folder: ClassVar[str]
    centre_crop: ClassVar[bool]
    reduce_zero_label: ClassVar[bool]

    def expected_path(self) -> Path:
        return self.root / self.folder

    def required_paths(self) -> list[Path]:
        raise NotImplementedError

    def pairs(self, split: Split) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        """(image paths, mask paths) of a split, in a fixed order."""
        raise NotImplementedError

    def files_present(self) -> bool:
        return all(path.exists() for path in self.required_paths())

    def load(self, split: Split) -> ImageSet:
        self.check()
        images, masks = self.pairs(split)
        if not images:
            raise DatasetError(f"dataset '{self.name}': split {split} lists no images.\n"
                               f"Expected layout:\n{self.layout}")
        missing = [str(p) for p in (*images, *masks) if not p.is_file()]
        if missing:
            raise DatasetError(f"dataset '{self.name}': {len(missing)} files of split {split} are missing, e.g. "
                               f"{', '.join(missing[:3])}.\nExpected layout:\n{self.layout}")
        return ImageSet(np.full(len(images), NO_LABEL),
                        loader=partial(read_image, images, self.image_size, self.centre_crop),
                        mask_loader=partial(read_mask, masks, self.image_size, self.centre_crop,
                                            self.reduce_zero_label))


@register_dataset
class VOC2012Source(_SegmentationSource):
    """Pascal VOC 2012 segmentation: 1464 train / 1449 val images, 21 classes, 255 ignored, at 448 px."""

    name: ClassVar[str] = "voc2012"
    image_size = 448
    description: ClassVar[str] = "Pascal VOC 2012 segmentation (train/val lists), 21 classes, masks only, 448 px"
    segmentation: ClassVar[Segmentation] = Segmentation(VOC_CLASSES, IGNORE_INDEX)
    folder: ClassVar[str] = "VOCdevkit/VOC2012"
    centre_crop: ClassVar[bool] = False
    reduce_zero_label: ClassVar[bool] = False
    layout: ClassVar[str] = (
        "<data root>/VOCdevkit/VOC2012/\n"
        "    JPEGImages/<id>.jpg\n"
        "    SegmentationClass/<id>.png          (palette PNGs: 0 background, 1-20 classes, 255 ignored)\n"
        "    ImageSets/Segmentation/train.txt    (one id per line: the train split)\n"
        "    ImageSets/Segmentation/val.txt      (the test split)\n"
        "(the VOCtrainval_11-May-2012.tar archive, extracted)")
    split_lists: ClassVar[dict[str, str]] = {"train": "train.txt", "test": "val.txt"}

    def required_paths(self) -> list[Path]:
        base = self.expected_path()
        return [base / "JPEGImages", base / "SegmentationClass",
                *(base / "ImageSets" / "Segmentation" / name for name in self.split_lists.values())]

    def pairs(self, split: Split) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        base = self.expected_path()
        listing = base / "ImageSets" / "Segmentation" / self.split_lists[split]
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        return (tuple(base / "JPEGImages" / f"{i}.jpg" for i in ids),
                tuple(base / "SegmentationClass" / f"{i}.png" for i in ids))


@register_dataset
class ADE20KSource(_SegmentationSource):
    """ADE20K SceneParsing: 20210 train / 2000 validation images, 150 classes ("other" ignored), 512 px centre crops."""

    name: ClassVar[str] = "ade20k"
    image_size = 512
    description: ClassVar[str] = "ADE20K SceneParsing (training/validation), 150 classes, masks only, 512 px"
    # classes named by their annotation id (the order of the release's objectInfo150 table)
    segmentation: ClassVar[Segmentation] = Segmentation(tuple(str(k) for k in range(1, ADE20K_NUM_CLASSES + 1)),
                                                        IGNORE_INDEX)
    folder: ClassVar[str] = "ADEChallengeData2016"
    centre_crop: ClassVar[bool] = True
    reduce_zero_label: ClassVar[bool] = True
    layout: ClassVar[str] = (
        "<data root>/ADEChallengeData2016/\n"
        "    images/training/<name>.jpg          images/validation/<name>.jpg\n"
        "    annotations/training/<name>.png     annotations/validation/<name>.png\n"
        "                                        (grey PNGs: 0 other (ignored), 1-150 classes)\n"
        "(the ADEChallengeData2016.zip archive, extracted)")
    split_folders: ClassVar[dict[str, str]] = {"train": "training", "test": "validation"}

    def required_paths(self) -> list[Path]:
        base = self.expected_path()
        return [base / kind / folder for kind in ("images", "annotations") for folder in self.split_folders.values()]

    def pairs(self, split: Split) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        base = self.expected_path()
        images = tuple(sorted((base / "images" / self.split_folders[split]).glob("*.jpg")))
        masks = tuple(base / "annotations" / self.split_folders[split] / f"{p.stem}.png" for p in images)
        return images, masks
