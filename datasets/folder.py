"""``folder``: any image classification set in the ImageFolder layout under ``<data root>/folder``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from .base import DatasetError, DatasetSource, ImageSet, Split, register_dataset
from .images import ImageFiles


def class_names(directory: Path) -> list[str]:
    """Sorted names of the sub-folders of ``directory`` (none if it is absent), as torchvision's find_classes."""
    return sorted(entry.name for entry in directory.iterdir() if entry.is_dir()) if directory.is_dir() else []


SHOWN = 3  # problems listed by name; the rest are counted


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def unreadable_images(paths: tuple[str, ...]) -> list[str]:
    """The files PIL cannot identify as images (it reads each file's header only, not its pixels)."""
    bad = []
    for path in paths:
        try:
            with Image.open(path):
                pass
        except (OSError, UnidentifiedImageError, ValueError):
            bad.append(path)
    return bad


@register_dataset
class FolderSource(DatasetSource):
    """Images under ``<root>/folder/{train,test}/<class>/``, decoded lazily and resized to ``image_size`` squares
    (64 px unless a matrix sets ``fixed.image_size``).

    The aspect ratio is not kept (a plain resize to image_size × image_size, as Patch-Wise's official code does with
    ``Resize((256, 256))``). Labels are the indices of the sorted train class names (torchvision ImageFolder).
    ``classes`` and ``num_classes`` are read from the train folder when the source is built and again on each load
    (``[]`` and 0 while it is absent).
    """

    name: ClassVar[str] = "folder"
    num_classes = 0  # data-dependent: set on each instance from its train folder
    image_size = 64
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)  # ImageNet
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)
    embedded: ClassVar[bool] = False
    resizable: ClassVar[bool] = True
    description: ClassVar[str] = "your images in the ImageFolder layout (folder/{train,test}/<class>/), resized square"
    layout: ClassVar[str] = (
        "<data root>/folder/\n"
        "    train/<class name>/<image files>   (one folder per class; subfolders are searched too)\n"
        "    test/<class name>/<image files>    (the train class names, or some of them)\n"
        f"image files: {' '.join(IMG_EXTENSIONS)}; labels are the sorted train class names' indices")

    def __init__(self, root: str | Path | None = None, image_size: int | None = None):
        super().__init__(root, image_size)
        self._read_classes()

    def _read_classes(self) -> None:
        self.classes = class_names(self.expected_path() / "train")
        self.num_classes = len(self.classes)

    def expected_path(self) -> Path:
        return self.root / "folder"

    def files_present(self) -> bool:
        return bool(class_names(self.expected_path() / "train")) and (self.expected_path() / "test").is_dir()

    def load(self, split: Split) -> ImageSet:
        self.check()
        self._read_classes()
        directory = self.expected_path() / split
        unknown = sorted(set(class_names(directory)) - set(self.classes))
        if unknown:
            raise DatasetError(f"dataset 'folder': test classes {unknown} have no train folder in "
                               f"{self.expected_path() / 'train'}")
        try:
            samples = make_dataset(directory, {c: i for i, c in enumerate(self.classes)}, extensions=IMG_EXTENSIONS,
                                   allow_empty=True)
        except FileNotFoundError as err:
            raise DatasetError(f"dataset 'folder', split {split} ({directory}): {err}") from None
        if not samples:
            raise DatasetError(f"dataset 'folder': no image files in {directory}.\nExpected layout:\n{self.layout}")
        if split == "train":
            counts = np.bincount([label for _, label in samples], minlength=len(self.classes))
            empty = [str(directory / c) for c, n in zip(self.classes, counts) if n == 0]
            if empty:
                raise DatasetError(f"dataset 'folder': {len(empty)} class folder(s) hold no image files: "
                                   f"{_listing(empty)}; add images or remove the folder(s)")
        paths = tuple(path for path, _ in samples)
        bad = unreadable_images(paths)
        if bad:
            raise DatasetError(f"dataset 'folder': {len(bad)} unreadable image file(s): {_listing(bad)}; "
                               "replace or remove them")
        labels = np.array([label for _, label in samples], dtype=np.int64)
        files = ImageFiles("", np.array([p.encode() for p in paths]), self.image_size, centre_crop=False)
        return ImageSet(labels, loader=files)
