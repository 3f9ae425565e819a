"""``imagenet`` and ``imagenet100``: ILSVRC-2012 in the class-folder layout, decoded lazily in DataLoader workers.

Both read ``<data root>/imagenet/{train,val}/<wnid>/*.JPEG`` (validation images sorted into class folders, as
torchvision's ImageFolder and every SSL repository expect). ``imagenet`` has the 1000 ILSVRC-2012 classes in wnid
order (the list timm ships, ``timm.data.ImageNetInfo``); ``imagenet100`` the 100-class subset of CMC
(``HobbitLong/CMC``, ``imagenet100.txt``, shipped here as ``datasets/imagenet100.txt``), labelled in sorted wnid
order as an ImageFolder of those 100 folders would be, and read from the same root (the other 900 folders are
ignored).

Images are brought to ``image_size`` (224 unless a matrix sets ``fixed.image_size``) by resizing the shorter side
and keeping the centre square (``images.fit``); the crops and photometrics of the method then run on that square on
the device. DINO's pipeline crops the full-size image instead (``RandomResizedCrop`` on the decoded file) and
evaluates at ``Resize(256)`` + ``CenterCrop(224)``; here both read the same centre square (README, "Datasets").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from .base import DatasetError, DatasetSource, ImageSet, Split, register_dataset
from .folder import _listing, class_names
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, image_names, is_image_file

IMAGENET100_LIST = "imagenet100.txt"


def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids in class-index order (timm's ``imagenet_synsets.txt``)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


def imagenet100_wnids() -> tuple[str, ...]:
    """The 100 wnids of ``datasets/imagenet100.txt``, in the file's (CMC's) order."""
    text = resources.files(__package__).joinpath(IMAGENET100_LIST).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _list_split(directory: Path, wnids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(relative paths as bytes, labels, class folders without images) of the ``wnids`` folders of ``directory``
    (one ``os.scandir`` per class folder: about 1.28 M names for the full train split)."""
    names: list[bytes] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, wnid in enumerate(wnids):
        files = image_names(directory / wnid)
        if not files:
            empty.append(wnid)
        names.extend(f"{wnid}/{name}".encode() for name in files)
        labels.extend([label] * len(files))
    return np.array(names), np.array(labels, dtype=np.int64), tuple(empty)


class _ImageNetSource(DatasetSource):
    """ILSVRC-2012 class folders under ``<root>/imagenet``; ``wnids()`` says which classes, in label order."""

    image_size = 224
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    embedded: ClassVar[bool] = False
    resizable: ClassVar[bool] = True
    split_folders: ClassVar[dict[str, str]] = {"train": "train", "test": "val"}
    only_known_folders: ClassVar[bool]  # refuse class folders outside wnids()
    layout: ClassVar[str] = (
        "<data root>/imagenet/\n"
        "    train/<wnid>/*.JPEG   (ILSVRC2012_img_train.tar: one folder per class, e.g. train/n01440764/)\n"
        "    val/<wnid>/*.JPEG     (ILSVRC2012_img_val.tar sorted into the same class folders)")

    def wnids(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def classes(self) -> tuple[str, ...]:
        return self.wnids()

    def expected_path(self) -> Path:
        return self.root / "imagenet"

    def files_present(self) -> bool:
        return all((self.expected_path() / folder).is_dir() for folder in self.split_folders.values())

    def load(self, split: Split) -> ImageSet:
        self.check()
        directory = self.expected_path() / self.split_folders[split]
        wnids = self.wnids()
        present = set(class_names(directory))
        missing = [w for w in wnids if w not in present]
        if missing and not present and any(is_image_file(p.name) for p in directory.iterdir()):
            raise DatasetError(f"dataset '{self.name}': {directory} holds image files but no class folders; sort "
                               "the validation images into <wnid>/ folders (e.g. with the ILSVRC2012 devkit's "
                               "LOC_val_solution.csv), as the layout expects")
        unknown = sorted(present - set(wnids))
        if unknown and self.only_known_folders:
            raise DatasetError(f"dataset '{self.name}': {len(unknown)} folder(s) of {directory} are not ILSVRC-2012 "
                               f"classes: {_listing(unknown)}; remove them (the 1000 classes are in "
                               "timm.data.ImageNetInfo)")
        if missing:
            raise DatasetError(f"dataset '{self.name}': {len(missing)} of its {len(wnids)} class folders are missing "
                               f"from {directory}: {_listing(missing)}; extract every class of ILSVRC-2012 there")
        names, labels, empty = _list_split(directory, wnids)
        if empty:
            raise DatasetError(f"dataset '{self.name}': {len(empty)} class folder(s) of {directory} hold no image "
                               f"files: {_listing(list(empty))}; extract the images again")
        return ImageSet(labels, loader=ImageFiles(str(directory), names, self.image_size, centre_crop=True))


@register_dataset
class ImageNetSource(_ImageNetSource):
    """ImageNet-1k (ILSVRC-2012): 1 281 167 train / 50 000 val images, 1000 classes."""

    name: ClassVar[str] = "imagenet"
    num_classes = 1000
    description: ClassVar[str] = "ImageNet-1k (ILSVRC-2012) class folders, 1000 classes, read at 224 px"
    only_known_folders: ClassVar[bool] = True

    def wnids(self) -> tuple[str, ...]:
        return imagenet1k_wnids()


@register_dataset
class ImageNet100Source(_ImageNetSource):
    """ImageNet-100 (CMC's subset): about 126 700 train / 5000 val images, 100 classes, read from the ImageNet root."""

    name: ClassVar[str] = "imagenet100"
    num_classes = 100
    description: ClassVar[str] = "ImageNet-100 (CMC's 100 classes) from the ImageNet root, read at 224 px"
    only_known_folders: ClassVar[bool] = False

    def wnids(self) -> tuple[str, ...]:
        return tuple(sorted(imagenet100_wnids()))
