"""What is learned: the registry, the ViT backbone, view strategies, objectives and the named methods."""

from . import aps, dino, gtsa, ibot, masking, patchwise, selfpatch, views  # noqa: F401  (registration)
from .backbone import VIT_SIZES, BackboneConfig, ViTEncoder
from .base import EvalEncoder, IncompatiblePairing, Objective, Progress, SSLMethod, Views, ViewStrategy
from .build import MethodChoice, build_method, resolve_choice
from .registry import (
                       METHODS,
                       OBJECTIVES,
                       VIEWS,
                       MethodSpec,
                       RegistryError,
                       did_you_mean,
                       load_plugins,
                       register_method,
                       register_objective,
                       register_view,
)

__all__ = [
    "VIT_SIZES", "BackboneConfig", "ViTEncoder", "EvalEncoder", "IncompatiblePairing", "Objective", "Progress",
    "SSLMethod", "Views", "ViewStrategy", "MethodChoice", "build_method", "resolve_choice", "METHODS",
    "OBJECTIVES", "VIEWS", "MethodSpec", "RegistryError", "did_you_mean", "load_plugins", "register_method",
    "register_objective", "register_view",
]
