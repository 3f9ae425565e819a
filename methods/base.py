"""The method contract: views, view strategies, objectives, and the method the trainer drives.

A *view strategy* turns a batch of images into the views a method needs plus their geometry (``Views.meta``).
An *objective* owns heads, centres and the loss, and declares which view metadata it requires. A *method* pairs
the two with a student backbone and, where the objective has one, an EMA teacher. The trainer owns everything
shared (optimiser, schedules, clipping, EMA, checkpoints); see docs/architecture.md for how each of the six
methods maps onto this contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .backbone import BackboneConfig, ViTEncoder


class IncompatiblePairing(ValueError):
    """An objective was paired with a view strategy that lacks what it needs."""


@dataclass
class Views:
    """A batch of augmented views, globals first.

    crops: one normalised tensor (B, 3, S_v, S_v) per view. meta: per-view geometry, e.g. ``boxes`` (B, V, 4)
    float (top, left, height, width) in source-image pixels and ``flips`` (B, V) bool; later strategies add
    ``rotations``, ``masks`` or ``keep`` indices. ``shared_geometry``: one geometry for the whole batch, so
    geometry-derived quantities can be computed once (Patch-Wise's same-batch mode).
    """

    crops: list[Tensor]
    n_global: int
    meta: dict[str, Tensor] = field(default_factory=dict)
    shared_geometry: bool = False  # every sample of the batch has the same view geometry

    @property
    def n_views(self) -> int:
        return len(self.crops)

    @property
    def batch_size(self) -> int:
        return self.crops[0].shape[0]

    @property
    def global_crops(self) -> list[Tensor]:
        return self.crops[:self.n_global]

    @property
    def local_crops(self) -> list[Tensor]:
        return self.crops[self.n_global:]


@dataclass(frozen=True)
class Progress:
    """Where training is: ``step`` counts optimiser steps since the start; ``epoch`` is 0-based."""

    epoch: int
    step: int
    total_epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.total_epochs * self.steps_per_epoch


class ViewStrategy(ABC):
    """Augmentation: a batch of uint8 images → :class:`Views`. Declares the metadata keys it provides.

    Random parameters are drawn from the ``generator`` passed in (a CPU generator the trainer seeds per step),
    so a step's views are a pure function of (seed, step) and a resumed run sees the same views.
    """

    name: ClassVar[str]
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, image_size: int, patch_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.image_size = image_size
        self.patch_size = patch_size
        self.mean = mean
        self.std = std

    n_global: int
    n_local: int

    @abstractmethod
    def __call__(self, images: Tensor, generator: torch.Generator) -> Views:
        """images: uint8 (B, 3, H, W) on the training device."""


class Objective(nn.Module, ABC):
    """Heads, centres and the loss of a method.

    Class attributes declare what the objective needs: view metadata (``requires``), view counts, a teacher,
    backbone options (``backbone_overrides``, e.g. no CLS token), optimiser steps per loaded batch, and the
    readout evaluations use.
    """

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    min_global_views: ClassVar[int] = 1
    min_local_views: ClassVar[int] = 0
    uses_teacher: ClassVar[bool] = True
    backbone_overrides: ClassVar[dict[str, Any]] = {}
    steps_per_batch: int = 1  # an instance may set its own (APS's one-step variant)
    eval_readout: ClassVar[str] = "cls"  # documented per method in docs/architecture.md

    student_heads: nn.ModuleDict
    teacher_heads: nn.ModuleDict | None

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim

    @abstractmethod
    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        """The losses of one optimiser step: ``loss`` (to minimise) plus detached parts and diagnostics."""

    def configure(self, view: ViewStrategy, backbone: BackboneConfig) -> None:
        """Hook called once the view strategy and backbone are known (e.g. to size per-position buffers)."""

    def after_backward(self, progress: Progress) -> None:
        """Hook between backward and the optimiser step (e.g. DINO's frozen last layer)."""

    def head_ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) head pairs to EMA-update; by default the teacher heads mirror the student heads."""
        return [] if self.teacher_heads is None else [(self.student_heads, self.teacher_heads)]

    def embed(self, backbone: ViTEncoder, heads: nn.ModuleDict | None, images: Tensor) -> Tensor:
        """The evaluation embedding (B, D) of normalised images; default: the CLS token after the final norm."""
        return backbone(images)[:, 0]

    def eval_dim(self, backbone: ViTEncoder) -> int:
        """The width of :meth:`embed`'s output."""
        return backbone.embed_dim

    def embed_patches(self, backbone: ViTEncoder, heads: nn.ModuleDict | None, images: Tensor) -> Tensor:
        """The evaluation patch-token map (B, h, w, D) of normalised images; default: the backbone's last-layer
        patch tokens (after the final norm where the backbone has one). Read by the dense evaluations."""
        return backbone.patch_tokens(images)

    @classmethod
    def check_views(cls, view: ViewStrategy) -> None:
        """Refuse a view strategy that lacks what this objective needs, naming what is missing."""
        problems = []
        missing = cls.requires - view.provides
        if missing:
            problems.append(f"view metadata {sorted(missing)} (it provides {sorted(view.provides) or 'none'})")
        if view.n_global < cls.min_global_views:
            problems.append(f"at least {cls.min_global_views} global views (it makes {view.n_global})")
        if view.n_local < cls.min_local_views:
            problems.append(f"at least {cls.min_local_views} local views (it makes {view.n_local})")
        if problems:
            raise IncompatiblePairing(
                f"objective '{cls.name}' cannot be paired with view strategy '{view.name}': it needs "
                + "; ".join(problems) + ". Pick a view strategy that provides them (see `patchbench methods`).")


class EvalEncoder(nn.Module):
    """What evaluations see: normalised images → the global embedding (B, dim) (``forward``) or the patch-token map
    (B, h, w, D) (:meth:`patches`), in eval mode, without gradients."""

    def __init__(self, objective: Objective, backbone: ViTEncoder, heads: nn.ModuleDict | None):
        super().__init__()
        self.objective = objective
        self.backbone = backbone
        self.heads = heads
        self.readout = objective.eval_readout
        self.dim = objective.eval_dim(backbone)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.objective.embed(self.backbone, self.heads, images)

    @torch.no_grad()
    def patches(self, images: Tensor) -> Tensor:
        return self.objective.embed_patches(self.backbone, self.heads, images)


class SSLMethod(nn.Module):
    """A view strategy + an objective + a student backbone (+ an EMA teacher): what the trainer drives."""

    def __init__(self, view: ViewStrategy, objective: Objective, backbone: BackboneConfig):
        super().__init__()
        objective.check_views(view)
        backbone = replace(backbone, **objective.backbone_overrides)
        objective.configure(view, backbone)
        self.view = view
        self.objective = objective
        self.student = ViTEncoder(backbone)
        self.teacher: ViTEncoder | None = None
        if objective.uses_teacher:
            self.teacher = ViTEncoder(replace(backbone, drop_path_rate=0.0))
            self.teacher.load_state_dict(self.student.state_dict())
            self.teacher.requires_grad_(False)
            if objective.teacher_heads is not None:
                objective.teacher_heads.requires_grad_(False)

    @property
    def steps_per_batch(self) -> int:
        return self.objective.steps_per_batch

    def make_views(self, images: Tensor, generator: torch.Generator) -> Views:
        return self.view(images, generator)

    def training_step(self, views: Views, progress: Progress, substep: int = 0) -> dict[str, Tensor]:
        return self.objective.loss(self.student, self.teacher, views, progress, substep)

    def student_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters the optimiser updates: the student backbone and student heads."""
        named = [(f"student.{n}", p) for n, p in self.student.named_parameters()]
        named += [(f"heads.{n}", p) for n, p in self.objective.student_heads.named_parameters()]
        return [(n, p) for n, p in named if p.requires_grad]

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) module pairs the trainer EMA-updates after each optimiser step."""
        if self.teacher is None:
            return []
        return [(self.student, self.teacher), *self.objective.head_ema_pairs()]

    def encoder_for_eval(self) -> EvalEncoder:
        """The teacher where there is one (DINO's ``--checkpoint_key teacher``), else the student."""
        if self.teacher is not None:
            return EvalEncoder(self.objective, self.teacher, self.objective.teacher_heads).eval()
        return EvalEncoder(self.objective, self.student, self.objective.student_heads).eval()


def equal_size_runs(crops: list[Tensor]) -> list[tuple[int, int]]:
    """(start, end) of each run of equal-size crops: one forward per run, as DINO's ``MultiCropWrapper``."""
    runs, start = [], 0
    for end in range(1, len(crops) + 1):
        if end == len(crops) or crops[end].shape[-1] != crops[start].shape[-1]:
            runs.append((start, end))
            start = end
    return runs


def forward_multicrop(backbone: ViTEncoder, crops: list[Tensor]) -> list[Tensor]:
    """All tokens of each crop, one backbone forward per run of equal-size crops (DINO's ``MultiCropWrapper``)."""
    outputs: list[Tensor] = []
    for start, end in equal_size_runs(crops):
        outputs.extend(backbone(torch.cat(crops[start:end])).chunk(end - start))
    return outputs
