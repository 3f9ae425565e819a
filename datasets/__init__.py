"""Dataset sources: importing this package registers every built-in source in :data:`DATASETS`.

Embedded: ``digits`` and ``shapes``. On disk, under the data root (``$PATCHBENCH_DATA`` or ``./data``):
``cifar10``, ``cifar100``, ``folder``, ``imagenet``, ``imagenet100``, ``coco``, ``stl10``, ``stl10-unlabeled``; for
the dense evaluations ``voc2012`` and ``ade20k``; for copy detection ``copydays``; for retrieval ``roxford5k`` and
``rparis6k``. The embedded sources also serve copy-detection and retrieval sets built from their test split
(``edits``).
"""

from . import cifar, coco, copydays, digits, edits, folder, imagenet, revisited, segmentation, shapes, stl10
from .base import (
    DATA_ROOT_ENV,
    DATASETS,
    NO_LABEL,
    CopyDetectionSet,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    RetrievalSet,
    Segmentation,
    Split,
    build_dataset,
    default_data_root,
    register_dataset,
)
from .cifar import Cifar10Source, Cifar100Source
from .coco import CocoSource
from .copydays import CopydaysSource
from .digits import DigitsSource
from .folder import FolderSource
from .imagenet import ImageNet100Source, ImageNetSource
from .revisited import ROxford5kSource, RParis6kSource
from .segmentation import ADE20KSource, VOC2012Source
from .shapes import ShapesSource
from .stl10 import Stl10Source, Stl10UnlabeledSource

__all__ = [
    "DATA_ROOT_ENV", "DATASETS", "NO_LABEL", "CopyDetectionSet", "DatasetError", "DatasetFilesMissing",
    "DatasetSource", "ImageSet", "RetrievalSet", "Segmentation", "Split", "build_dataset", "default_data_root",
    "register_dataset", "Cifar10Source", "Cifar100Source", "CocoSource", "CopydaysSource", "DigitsSource",
    "FolderSource", "ImageNetSource", "ImageNet100Source", "ROxford5kSource", "RParis6kSource", "ShapesSource",
    "Stl10Source", "Stl10UnlabeledSource", "ADE20KSource", "VOC2012Source", "cifar", "coco", "copydays", "digits",
    "edits", "folder", "imagenet", "revisited", "segmentation", "shapes", "stl10",
]
