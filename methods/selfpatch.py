"""SelfPatch (Yun et al., CVPR 2022): DINO plus a patch loss against the teacher's aggregate of each patch's
most similar neighbours.

Follows alinlab/SelfPatch at 81aef14 (docs/methods.md, SelfPatch):
- backbone: no CLS token and no final norm (``backbone_overrides``; ``selfpatch_vision_transformer.py``);
- aggregator: ``SelfPatchAggregator`` (methods/selfpatch_head.py, ``SelfPatchHead``), then two separate DINO
  heads (lightly's ``DINOProjectionHead``; ``main_selfpatch.py::MultiCropWrapper``): ``cls`` on the image token
  (65536 outputs), ``patch`` on every patch token (4096);
- student (``loc=False``): the image token and the LN-ed patch tokens of every view; teacher (``loc=True``):
  the image token and, per patch, the class-attention aggregate of its top-k (4) neighbours, on **all** views;
- loss (``main_selfpatch.py::DINOLoss``): DINO's CLS term between the 2 teacher globals and every other student
  view (lightly's ``DINOLoss``, teacher first) + λ (0.1) · the patch term within each view (the student's token i
  against the teacher's aggregate of i's neighbours, CE averaged over tokens, then over the views); teacher
  temperature 0.04 for both; CLS centre (1, K) = EMA of the teacher image logits of **all** views (DINO: the
  globals), so ``DINOLoss`` runs with centre momentum 1 (a no-op) and the centre is updated here; patch centre
  (1, K2) = EMA of the mean teacher patch logit over every token of every view (token-weighted, as upstream);
- the aggregator learns only through the CLS term (the student never takes the neighbour path), and the
  teacher's aggregator is its EMA, as upstream; last layers of both heads frozen in the first epoch.

Deviations: none in the loss. The patch grids must be square with side ≥ 3 (checked when the method is built);
upstream accepts only 14×14 and 6×6. Evaluation readout: the teacher's image token after the aggregator's LN
(``eval_readout = "aggregator"``), the analogue of DINO's CLS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.modules.center import center_mean, center_momentum
from torch import Tensor, nn

from .backbone import VIT_SIZES, ViTEncoder
from .base import IncompatiblePairing, Progress, Views, ViewStrategy, equal_size_runs
from .dino import DistillationObjective, distillation_diagnostics
from .registry import MethodSpec, register_method, register_objective
from .selfpatch_head import MIN_GRID_SIDE, SelfPatchAggregator


def backbone_heads(embed_dim: int) -> int:
    """The head count of the backbone size of this width: upstream's aggregator uses the backbone's."""
    heads = {dim: n for dim, _, n in VIT_SIZES.values()}
    if embed_dim not in heads:
        raise ValueError(f"no backbone size is {embed_dim} wide; set the objective's num_heads explicitly")
    return heads[embed_dim]


def neighbour_patch_loss(teacher_patch: list[Tensor], student_patch: list[Tensor], patch_center: Tensor,
                         teacher_temp: float, student_temp: float) -> Tensor:
    """The patch term (``main_selfpatch.py::DINOLoss``, the ``v == iq`` branch): per view, the cross-entropy between
    the centred, sharpened teacher aggregate of each patch's neighbours and the student's token, averaged over the
    view's tokens and samples, then over the views.

    teacher_patch, student_patch: per view (B, N_v, K2); patch_center: (1, K2).
    """
    return torch.stack([
        -(F.softmax((t - patch_center) / teacher_temp, dim=-1) * F.log_softmax(s / student_temp, dim=-1))
        .sum(-1).mean() for t, s in zip(teacher_patch, student_patch)]).mean()


@torch.no_grad()
def updated_centers(cls_center: Tensor, patch_center: Tensor, teacher_cls: list[Tensor], teacher_patch: list[Tensor],
                    momentum: float) -> tuple[Tensor, Tensor]:
    """The EMA of the CLS centre over the teacher image logits of all views (B, K) and of the patch centre over all
    their patch tokens (B, N_v, K2), token-weighted (``main_selfpatch.py::DINOLoss.update_center``), each mean over
    every rank's shard (lightly's ``center_mean``)."""
    cls_mean = center_mean(torch.cat(teacher_cls).float(), dim=(0,)).view_as(cls_center)
    patch_mean = center_mean(torch.cat([t.flatten(0, 1) for t in teacher_patch]).float(), dim=(0,))
    return center_momentum(cls_center, cls_mean, momentum), center_momentum(patch_center, patch_mean, momentum)


@register_objective("selfpatch")
class SelfPatchObjective(DistillationObjective):
    """DINO's image-level loss on the aggregator's token + the same-view neighbour-aggregate patch loss.

    Args:
        num_heads: attention heads of the class-attention aggregator; default the backbone's (SelfPatch: 6 at
            ViT-S).
        k_num: neighbours aggregated per patch, the top-k of its 8 by the teacher's cosine (SelfPatch: 4).
        patch_out_dim: K2, the patch head's output dimension (SelfPatch: 4096).
        patch_loss_weight: λ, the patch term's weight next to the image-level term (SelfPatch: 0.1).
    """

    min_global_views = 2
    backbone_overrides = {"class_token": False, "final_norm": False}
    eval_readout = "aggregator"
    frozen_heads = ("cls", "patch")
    patch_center: Tensor  # a buffer, registered in __init__

    def __init__(self, embed_dim: int, *, num_heads: int | None = None, k_num: int = 4, patch_out_dim: int = 4096,
                 patch_loss_weight: float = 0.1, **kwargs):
        super().__init__(embed_dim, **kwargs)
        num_heads = num_heads or backbone_heads(embed_dim)
        if embed_dim % num_heads:
            raise ValueError(f"the aggregator's num_heads ({num_heads}) must divide the embedding width ({embed_dim})")
        aggregators = SelfPatchAggregator(embed_dim, num_heads, k_num), SelfPatchAggregator(embed_dim, num_heads, k_num)
        aggregators[1].load_state_dict(aggregators[0].state_dict())
        cls_heads, patch_heads = self.head_pair(), self.head_pair(patch_out_dim)
        self.student_heads, self.teacher_heads = (nn.ModuleDict({"aggregator": a, "cls": c, "patch": p})
                                                  for a, c, p in zip(aggregators, cls_heads, patch_heads))
        self.cls_criterion = DINOLoss(output_dim=self.out_dim, student_temp=self.student_temp, center_momentum=1.0)
        self.register_buffer("patch_center", torch.zeros(1, patch_out_dim))
        self.patch_loss_weight = patch_loss_weight

    @classmethod
    def check_views(cls, view: ViewStrategy) -> None:
        """Also refuse views whose patch grids are not square grids of side ≥ 3 (the neighbour table's domain)."""
        super().check_views(view)
        for size in sorted(set(getattr(view, "view_sizes", lambda: [])())):
            side = size // view.patch_size
            if side < MIN_GRID_SIDE:
                raise IncompatiblePairing(
                    f"objective 'selfpatch' cannot use view strategy '{view.name}': its {size} px crops give a "
                    f"{side}×{side} patch grid at patch size {view.patch_size}, but the neighbour table needs a side "
                    f"of at least {MIN_GRID_SIDE} (8 distinct neighbours per patch). Raise global_size/local_size "
                    "or lower the patch size.")

    def forward_views(self, backbone: ViTEncoder, heads: nn.ModuleDict, crops: list[Tensor],
                      neighbours: bool) -> tuple[list[Tensor], list[Tensor]]:
        """Per view: image logits (B, K) and patch logits (B, N_v, K2), one forward per run of equal sizes."""
        cls_out, patch_out = [], []
        for start, end in equal_size_runs(crops):
            patches = backbone(torch.cat(crops[start:end]))  # (n·B, N, C): no CLS token, no final norm
            aggregator = heads["aggregator"]
            assert isinstance(aggregator, SelfPatchAggregator)  # built in __init__
            aggregate = aggregator.aggregate_neighbours if neighbours else aggregator
            tokens = aggregate(patches)
            cls_out.extend(heads["cls"](tokens[:, 0]).chunk(end - start))
            patch_out.extend(heads["patch"](tokens[:, 1:]).chunk(end - start))
        return cls_out, patch_out

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        assert teacher is not None
        with torch.no_grad():
            teacher_cls, teacher_patch = self.forward_views(teacher, self.teacher_heads, views.crops, neighbours=True)
        student_cls, student_patch = self.forward_views(student, self.student_heads, views.crops, neighbours=False)
        temp = self.temperature(progress)
        center = self.cls_criterion.center.clone()
        teacher_globals = teacher_cls[:views.n_global]
        cls_loss = self.cls_criterion(teacher_globals, student_cls, teacher_temp=temp)
        patch_term = neighbour_patch_loss(teacher_patch, student_patch, self.patch_center, temp, self.student_temp)
        cls_center, patch_center = updated_centers(self.cls_criterion.center, self.patch_center, teacher_cls,
                                                   teacher_patch, self.center_momentum)
        self.cls_criterion.center.copy_(cls_center)
        self.patch_center.copy_(patch_center)
        loss = cls_loss + self.patch_loss_weight * patch_term
        diagnostics = distillation_diagnostics(torch.stack(teacher_globals), center, temp, cls_loss)
        return {"loss": loss, "cls_loss": cls_loss.detach(), "patch_loss": patch_term.detach(), **diagnostics}

    def embed(self, backbone: ViTEncoder, heads: nn.ModuleDict | None, images: Tensor) -> Tensor:
        """The image token after the aggregator's LN (the teacher's, in evaluation)."""
        assert heads is not None
        return heads["aggregator"](backbone(images))[:, 0]


register_method(MethodSpec(
    name="selfpatch", view="multicrop", objective="selfpatch",
    paper="Yun et al., Patch-level Representation Learning for Self-supervised Vision Transformers, CVPR 2022",
    view_defaults=dict(global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)),
))
