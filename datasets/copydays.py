"""``copydays``: the INRIA Copydays copy-detection set on disk, with a folder of distractor images.

The layout and the query blocks are those ``facebookresearch/dino``, ``eval_copy_detection.py`` (``CopydaysDataset``)
reads: ``original/`` (the 157 originals, the database), ``strong/`` (229 strong attacks), and, where present,
``jpegqual/<quality>/`` and ``crops/<percent>/`` (one attacked copy per original, under the original's file name).
A ``strong`` query's positives are the originals whose file names share its first four characters (upstream's
rule); a query of the other blocks is a copy of the original of the same file name (upstream pairs them by position
in the sorted listings, which is the same for the released files). Images are resized to 320 × 320, bicubic, with no
crop (upstream's ``--imsize 320``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from .base import (
    NO_LABEL,
    CopyDetectionSet,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    Split,
    register_dataset,
)
from .segmentation import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # upstream is_image_file
REQUIRED = ("original", "strong", "distractors")
OPTIONAL_BLOCK_FAMILIES = ("jpegqual", "crops")
STRONG_PREFIX = 4  # characters of a file name that name its original


def read_square(paths: tuple[Path, ...], size: int, index: int) -> torch.Tensor:
    """uint8 (3, size, size) RGB image ``paths[index]``, resized bicubically without keeping the aspect ratio."""
    with Image.open(paths[index]) as image:
        square = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(square)).permute(2, 0, 1).contiguous()


def image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file()))


def _numeric_order(folder: Path) -> tuple:
    return (0, int(folder.name)) if folder.name.isdigit() else (1, folder.name)


@register_dataset
class CopydaysSource(DatasetSource):
    """Copydays (originals, strong, JPEG and crop blocks) plus distractors, for the ``copydetect`` evaluation."""

    name: ClassVar[str] = "copydays"
    num_classes = 0
    image_size = 320
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    embedded: ClassVar[bool] = False
    description: ClassVar[str] = "INRIA Copydays + distractor images: copy detection only, 320 px squares"
    provides: ClassVar[frozenset[str]] = frozenset({"copies"})
    layout: ClassVar[str] = (
        "<data root>/copydays/\n"
        "    original/<name>.jpg                 (the 157 originals)\n"
        "    strong/<name>.jpg                   (the 229 strong attacks; <name>[:4] names the original)\n"
        "    jpegqual/<quality>/<name>.jpg       (optional blocks: one copy per original, same file names)\n"
        "    crops/<percent>/<name>.jpg          (optional blocks: one copy per original, same file names)\n"
        "    distractors/<any>.jpg               (e.g. 10k YFCC100M images; the whitening is learned on them)")

    def expected_path(self) -> Path:
        return self.root / "copydays"

    def files_present(self) -> bool:
        return all((self.expected_path() / folder).is_dir() for folder in REQUIRED)

    def check(self) -> None:
        missing = [folder for folder in REQUIRED if not (self.expected_path() / folder).is_dir()]
        if missing:
            raise DatasetFilesMissing(
                f"dataset '{self.name}': no {', '.join(f'{m}/' for m in missing)} folder in {self.expected_path()}; "
                f"it needs original/, strong/ and distractors/ (Copydays and distractor images; `patchbench datasets` "
                f"shows the layout), or point --data-root / $PATCHBENCH_DATA at the folder holding copydays/")

    def load(self, split: Split) -> ImageSet:
        raise DatasetError(f"dataset '{self.name}' serves copy detection only (the copydetect evaluation), not a "
                           f"{split} split; pretrain on another dataset")

    def _images(self, paths: tuple[Path, ...]) -> ImageSet:
        return ImageSet(np.full(len(paths), NO_LABEL), loader=partial(read_square, paths, self.image_size))

    def blocks(self) -> dict[str, tuple[Path, ...]]:
        """Query block name → its sorted .jpg files: ``strong``, then the ``jpegqual/*`` and ``crops/*`` present."""
        base = self.expected_path()
        blocks = {"strong": image_files(base / "strong", (".jpg",))}
        for family in OPTIONAL_BLOCK_FAMILIES:
            if (base / family).is_dir():
                for folder in sorted((p for p in (base / family).iterdir() if p.is_dir()), key=_numeric_order):
                    blocks[f"{family}/{folder.name}"] = image_files(folder, (".jpg",))
        return blocks

    def copies(self) -> CopyDetectionSet:
        self.check()
        base = self.expected_path()
        originals = image_files(base / "original", (".jpg",))
        distractors = image_files(base / "distractors")
        blocks = self.blocks()
        empty = [name for name, files in {"original": originals, "distractors": distractors, **blocks}.items()
                 if not files]
        if empty:
            raise DatasetError(f"dataset '{self.name}': no images in {', '.join(str(base / e) for e in empty)}; "
                               "add them or remove the empty block folder")
        by_name = {p.name: i for i, p in enumerate(originals)}
        queries, subsets, positives, orphans = [], [], [], []
        for block, files in blocks.items():
            for path in files:
                if block == "strong":
                    prefix = path.name[:STRONG_PREFIX]
                    matches = [i for i, p in enumerate(originals) if p.name[:STRONG_PREFIX] == prefix]
                else:
                    matches = [by_name[path.name]] if path.name in by_name else []
                if not matches:
                    orphans.append(str(path))
                queries.append(path)
                subsets.append(block)
                positives.append(np.array(matches, dtype=np.int64))
        if orphans:
            raise DatasetError(f"dataset '{self.name}': {len(orphans)} query image(s) match no original, e.g. "
                               f"{', '.join(orphans[:3])}; a strong query shares its first {STRONG_PREFIX} characters "
                               "with its original, another block's copy has the original's file name")
        return CopyDetectionSet(self._images(originals), self._images(distractors), self._images(tuple(queries)),
                                tuple(subsets), tuple(positives))
