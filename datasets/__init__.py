"""Dataset sources: importing this package registers every built-in source in :data:`DATASETS`.

Embedded: ``digits`` and ``shapes``. On disk, under the data root (``$PATCHBENCH_DATA`` or ``./data``):
``cifar10``, ``cifar100`` and ``folder``.
"""

from . import cifar, digits, folder, shapes
from .base import (
    DATA_ROOT_ENV,
    DATASETS,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    Split,
    build_dataset,
    default_data_root,
    register_dataset,
)
from .cifar import Cifar10Source, Cifar100Source
from .digits import DigitsSource
from .folder import FolderSource
from .shapes import ShapesSource

__all__ = [
    "DATA_ROOT_ENV", "DATASETS", "DatasetError", "DatasetFilesMissing", "DatasetSource", "ImageSet", "Split",
    "build_dataset", "default_data_root", "register_dataset",
    "Cifar10Source", "Cifar100Source", "DigitsSource", "FolderSource", "ShapesSource",
    "cifar", "digits", "folder", "shapes",
]
