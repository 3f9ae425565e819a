"""The dataset contract: a registry of image sources, each able to say where its files are expected.

A source yields ``ImageSet`` splits of fixed-size uint8 RGB images, so that a view strategy can crop a whole batch
at once on the training device. Embedded sources need no files; on-disk sources read a real on-disk format under a
data root and fail with :class:`DatasetFilesMissing` (naming the expected layout) when the files are absent.

What a source can serve an evaluation is declared in ``provides``: ``labels`` (one class per image), ``masks``
(one class per pixel, described by ``segmentation``), ``copies`` (a copy-detection set, :meth:`DatasetSource.copies`)
and ``retrieval`` (a retrieval set with ground truth, :meth:`DatasetSource.retrieval`). An evaluation declares what it
needs; a matrix that pairs an evaluation with a dataset that cannot serve it is refused when it is loaded.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

Split = Literal["train", "test"]

DATA_ROOT_ENV = "PATCHBENCH_DATA"


def default_data_root() -> Path:
    """The data root: ``$PATCHBENCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


class DatasetError(ValueError):
    """A user error about a dataset (unknown name, missing files); the CLI prints it without a traceback."""


class DatasetFilesMissing(DatasetError):
    """The files of an on-disk dataset are not where they are expected."""


NO_LABEL = -1  # the label of every image of a source without image labels (segmentation-only sets)


@dataclass(frozen=True)
class Segmentation:
    """The per-pixel masks of a source: class ids 0 .. num_classes - 1, ``ignore_index`` for unlabelled pixels."""

    classes: tuple[str, ...]
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ImageSet(Dataset):
    """One split: uint8 images of shape (3, S, S), integer labels and, for sources with masks, uint8 (S, S) masks.

    ``images`` (and ``masks``) hold the whole split in memory when it fits (embedded sets, CIFAR); on-disk sets load
    lazily through ``__getitem__`` (and :meth:`mask`) and leave them as None.
    """

    def __init__(self, labels: np.ndarray, images: torch.Tensor | None = None,
                 loader: Callable[[int], torch.Tensor] | None = None, masks: torch.Tensor | None = None,
                 mask_loader: Callable[[int], torch.Tensor] | None = None):
        if (images is None) == (loader is None):
            raise ValueError("give exactly one of images or loader")
        if masks is not None and mask_loader is not None:
            raise ValueError("give at most one of masks or mask_loader")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.images = images
        self.masks = masks
        self._loader = loader
        self._mask_loader = mask_loader

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[index], int(self.labels[index])
        assert self._loader is not None  # the constructor takes exactly one of images or loader
        return self._loader(index), int(self.labels[index])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None or self._mask_loader is not None

    def mask(self, index: int) -> torch.Tensor:
        """The uint8 (S, S) class mask of image ``index``."""
        if self.masks is not None:
            return self.masks[index]
        if self._mask_loader is None:
            raise ValueError("this split has no masks")
        return self._mask_loader(index)


@dataclass(frozen=True)
class CopyDetectionSet:
    """A copy-detection benchmark: ``originals`` (the database), ``distractors`` (added to the database, and the set
    the whitening is learned on), ``queries`` (edited copies), ``subsets`` (the block each query belongs to, e.g.
    ``strong``) and ``positives`` (per query, the indices of the originals it is a copy of)."""

    originals: ImageSet
    distractors: ImageSet
    queries: ImageSet
    subsets: tuple[str, ...]
    positives: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class RetrievalSet:
    """An instance-retrieval benchmark in the revisited Oxford / Paris form: ``database`` images, ``queries``
    (already cropped to their region of interest) and, per query, the database indices that are ``easy`` and
    ``hard`` positives and ``junk`` (ignored); ``multiscale``: whether the protocol averages three scales."""

    database: ImageSet
    queries: ImageSet
    easy: tuple[np.ndarray, ...]
    hard: tuple[np.ndarray, ...]
    junk: tuple[np.ndarray, ...]
    multiscale: bool = False


class DatasetSource(ABC):
    """A registered dataset: its identity, its image statistics, and how to load a split."""

    name: ClassVar[str]
    num_classes: int  # per class; a source that reads its classes from disk sets it per instance (``folder``)
    image_size: int  # per class; a ``resizable`` source may be read at another size, set per instance
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    embedded: ClassVar[bool]
    description: ClassVar[str]
    layout: ClassVar[str] = ""  # the expected on-disk layout, shown when files are missing
    provides: ClassVar[frozenset[str]] = frozenset({"labels"})  # labels, masks, copies, retrieval
    segmentation: ClassVar[Segmentation | None] = None  # set by sources that provide masks
    resizable: ClassVar[bool] = False  # whether a matrix may set the size the images are read at (fixed.image_size)

    def __init__(self, root: str | Path | None = None, image_size: int | None = None):
        self.root = Path(root) if root is not None else default_data_root()
        if image_size is not None and image_size != type(self).image_size:
            if not self.resizable:
                raise DatasetError(f"dataset '{self.name}' is read at a fixed {type(self).image_size} px; remove "
                                   f"image_size ({image_size}) or use a dataset read from image files")
            self.image_size = image_size

    def expected_path(self) -> Path | None:
        """Where the files are expected (None for embedded sources)."""
        return None

    def files_present(self) -> bool:
        return True

    def check(self) -> None:
        """Raise :class:`DatasetFilesMissing` naming the expected layout unless the files are present."""
        if not self.files_present():
            raise DatasetFilesMissing(
                f"dataset '{self.name}': files not found at {self.expected_path()}.\n"
                f"Expected layout:\n{self.layout}\n"
                f"Put the files there, or point --data-root / ${DATA_ROOT_ENV} at the folder that holds them.")

    @abstractmethod
    def load(self, split: Split) -> ImageSet:
        """The split as an :class:`ImageSet`; raises :class:`DatasetFilesMissing` if files are absent."""

    def copies(self) -> CopyDetectionSet:
        """The copy-detection set of a source that ``provides`` ``copies``."""
        raise DatasetError(f"dataset '{self.name}' provides no copy-detection set")

    def retrieval(self) -> RetrievalSet:
        """The retrieval set of a source that ``provides`` ``retrieval``."""
        raise DatasetError(f"dataset '{self.name}' provides no retrieval set")


DATASETS: dict[str, type[DatasetSource]] = {}


def register_dataset(cls: type[DatasetSource]) -> type[DatasetSource]:
    """Class decorator: register a dataset source under ``cls.name``; duplicate names are errors."""
    if cls.name in DATASETS:
        raise ValueError(f"dataset '{cls.name}' is already registered by {DATASETS[cls.name].__module__}")
    DATASETS[cls.name] = cls
    return cls


def build_dataset(name: str, root: str | Path | None = None, image_size: int | None = None) -> DatasetSource:
    """Instantiate a registered source by name, with a did-you-mean for unknown names; ``image_size`` (None: the
    source's default) is the side its images are read at."""
    if name not in DATASETS:
        import difflib
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DatasetError(f"unknown dataset '{name}'.{hint} Known datasets: {', '.join(sorted(DATASETS))}"
                           " (run `patchbench datasets`).")
    return DATASETS[name](root, image_size)
