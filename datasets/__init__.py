"""Dataset sources: importing this package registers every built-in source in :data:`DATASETS`.

Embedded: ``digits`` and ``shapes``. On disk, under the data root (``$PATCHBENCH_DATA`` or ``./data``):
``cifar10``, ``cifar100``, ``folder``, ``imagenet``, ``imagenet100``, ``coco``, ``stl10``, ``stl10-unlabeled`` and,
for the dense evaluations, ``voc2012`` and ``ade20k``.
"""

from . import cifar, coco, digits, folder, imagenet, segmentation, shapes, stl10
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
from .coco import CocoSource
from .digits import DigitsSource
from .folder import FolderSource
from .imagenet import ImageNet100Source, ImageNetSource
from .segmentation import ADE20KSource, VOC2012Source
from .shapes import ShapesSource
from .stl10 import Stl10Source, Stl10UnlabeledSource

__all__ = [
    "DATA_ROOT_ENV", "DATASETS", "NO_LABEL", "DatasetError", "DatasetFilesMissing", "DatasetSource", "ImageSet",
    "Segmentation", "Split", "build_dataset", "default_data_root", "register_dataset",
    "Cifar10Source", "Cifar100Source", "CocoSource", "DigitsSource", "FolderSource", "ImageNetSource",
    "ImageNet100Source", "ShapesSource", "Stl10Source", "Stl10UnlabeledSource", "ADE20KSource", "VOC2012Source",
    "cifar", "coco", "digits", "folder", "imagenet", "segmentation", "shapes", "stl10",
]
