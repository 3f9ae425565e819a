"""Dataset sources: importing this package registers every built-in source in :data:`DATASETS`.

Embedded: ``digits`` and ``shapes``. On disk, under the data root (``$PATCHBENCH_DATA`` or ``./data``):
``cifar10``, ``cifar100``, ``folder``; for the dense evaluations ``voc2012`` and ``ade20k``; for copy detection
``copydays``; for retrieval ``roxford5k`` and ``rparis6k``. The embedded sources also serve copy-detection and
retrieval sets built from their test split (``edits``).
"""

from . import cifar, copydays, digits, edits, folder, revisited, segmentation, shapes
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
from .copydays import CopydaysSource
from .digits import DigitsSource
from .folder import FolderSource
from .revisited import ROxford5kSource, RParis6kSource
from .segmentation import ADE20KSource, VOC2012Source
from .shapes import ShapesSource

__all__ = [
    "DATA_ROOT_ENV", "DATASETS", "NO_LABEL", "CopyDetectionSet", "DatasetError", "DatasetFilesMissing",
    "DatasetSource", "ImageSet", "RetrievalSet", "Segmentation", "Split", "build_dataset", "default_data_root",
    "register_dataset", "Cifar10Source", "Cifar100Source", "CopydaysSource", "DigitsSource", "FolderSource",
    "ROxford5kSource", "RParis6kSource", "ShapesSource", "ADE20KSource", "VOC2012Source", "cifar", "copydays",
    "digits", "edits", "folder", "revisited", "segmentation", "shapes",
]
