"""Evaluations: one file each, registered in :data:`EVALUATIONS` (k-NN, linear probe, dense segmentation probe, copy
detection, retrieval).

The contract (settings, what an evaluation reads and what its dataset must provide) is in :mod:`.base`; the shared
probe trainer in :mod:`.probe`; what they read (cached features, labels, masks) in ``patchbench.benchmark.features``.
"""

from . import copydetect, dense, knn, linear, retrieval  # noqa: F401  (registration)
from .base import EVALUATIONS, EvalResult, Evaluation, check_serves, register_evaluation, setting_names

__all__ = ["EVALUATIONS", "EvalResult", "Evaluation", "check_serves", "register_evaluation", "setting_names"]
