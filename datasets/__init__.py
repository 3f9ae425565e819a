"""Dataset sources: importing this package registers every built-in source in :data:`DATASETS`.

Embedded: ``digits`` and ``shapes``. On disk, under the data root (``$PATCHBENCH_DATA`` or ``./data``):
``cifar10``, ``cifar100``, ``folder`` and, for the dense evaluations, ``voc2012`` and ``ade20k``.
"""

from . import cifar, digits, folder, segmentation, shapes
from .base import (
    DATA_ROOT_ENV,
    DATASETS,
    NO_LABEL,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    Segmentation,
    Split,
    build_dataset,
    default_data_root,
    register_dataset,
)
from .cifar import Cifar10Source, Cifar100Source
from .digits import DigitsSource
from .folder import FolderSource
from .segmentation import ADE20KSource, VOC2012Source
from .shapes import ShapesSource

__all__ = [
    "DATA_ROOT_ENV", "DATASETS", "NO_LABEL", "DatasetError", "DatasetFilesMissing", "DatasetSource", "ImageSet",
    "Segmentation", "Split", "build_dataset", "default_data_root", "register_dataset",
    "Cifar10Source", "Cifar100Source", "DigitsSource", "FolderSource", "ShapesSource", "ADE20KSource",
    "VOC2012Source", "cifar", "digits", "folder", "segmentation", "shapes",
]
