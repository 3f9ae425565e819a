"""Tiny segmentation datasets written in their real on-disk formats, shared by the dataset and evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (3 * 251) + [224, 224, 192]  # 0-3, 255 border


def voc_mask(values: np.ndarray) -> Image.Image:
    mask = Image.fromarray(values.astype(np.uint8), mode="P")
    mask.putpalette(VOC_PALETTE)
    return mask


def write_voc(root: Path) -> dict[str, np.ndarray]:
    """Three images (two train, one val) with palette masks: class blocks and a 255 border."""
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True)
    masks = {}
    for i, name in enumerate(("2007_000032", "2007_000039", "2007_000063")):
        values = np.zeros((40, 60), np.uint8)
        values[:, 20:40] = i + 1  # classes 1, 2, 3 in the middle band
        values[:, 19] = 255  # the unlabelled border VOC draws around objects
        rgb = np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(base / "JPEGImages" / f"{name}.jpg", quality=90)
        voc_mask(values).save(base / "SegmentationClass" / f"{name}.png")
        masks[name] = values
    (base / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("2007_000063\n")
    return masks
