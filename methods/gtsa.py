"""GTSA (Kim and Lee, arXiv 2304.08014): a geometric-transformation-sensitive architecture.

Follows ``bok3948/GTSA`` (docs/methods.md, GTSA): the student's patch-token map goes through a conv projector and
predictor (``model_pretrain/gtsa.py::Projector, Predictor``); an EMA teacher (backbone + projector) sees the two
global crops only. For every (teacher global iq, student view v ≠ iq) pair (``GTSA.roi_align``): both maps are
RoIAligned on the overlap box, the teacher RoI is rotated by the rotation difference (``torch.rot90`` in place of
kornia, exact on square maps) and the crop loss is the negative cosine over channels; the patch-correspondence
loss matches tokens by nearest neighbour in feature space both ways and keeps the best half
(``neirest_neighbores_on_l2``, by cosine); a rotation head predicts each view's quarter turns
from its mean-pooled backbone patch tokens (``rot_predict``). Loss: crop + pc_coef·pc + 0.5·rotation, with pc_coef
0.5 once ``epoch > pc_after_epoch`` (``engine_pretrain.py``, 0-based epochs as there).

Port to patchbench (docs/methods.md, GTSA, Deviations): boxes are divided by the backbone's patch size, not 16;
"global student" is a property of the view, not ``h·w > 100``; RoI output sizes (6, 3) for 8×8 / 4×4 maps keep
upstream's (10, 4) on 14 / 6 ratio; the projector and rotation-head widths scale with ``embed_dim`` (384 → 384 / 768
at ViT-S). The trainer EMA-updates the teacher after the optimiser step rather than inside the forward (same
weights, momentum indexed one step earlier). All pairs are batched into 4 ``roi_align`` calls; the NN selection
keeps the cosine of each kept match, which equals upstream's gather-then-cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from .backbone import ViTEncoder
from .base import Objective, Progress, Views, forward_multicrop
from .gtsa_heads import ConvPredictor, ConvProjector, rotation_head, token_map
from .gtsa_views import overlap_in_crop_frame, rotate_quarter_turns
from .registry import MethodSpec, register_method, register_objective


def best_match_cosines(queries: Tensor, candidates: Tensor, n_keep: int) -> tuple[Tensor, Tensor]:
    """Cosines (N, n_keep) of the kept nearest-neighbour matches, in both directions, from one similarity matrix.

    ``neirest_neighbores_on_l2``: each query row's best candidate by cosine; keep the ``n_keep`` rows with the
    highest best cosine. Returns (queries → candidates, candidates → queries). The argmax/top-k selection is
    not differentiable; the gradient flows through the kept cosines.
    """
    sim = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).transpose(1, 2)
    forward = sim.max(dim=2).values.topk(n_keep, dim=1).values
    backward = sim.max(dim=1).values.topk(n_keep, dim=1).values
    return forward, backward


def pc_coefficient(epoch: int, after_epoch: int, weight: float) -> float:
    """The patch-correspondence weight: 0 until ``epoch > after_epoch`` (0-based), then ``weight``."""
    return weight if epoch > after_epoch else 0.0


def aligned_rois(teacher_maps: Tensor, teacher_boxes: Tensor, student_maps: Tensor, student_boxes: Tensor,
                 quarter_turns: Tensor, out_size: int, patch_size: int) -> tuple[Tensor, Tensor]:
    """RoIAlign one box per map (boxes in crop pixels), then rotate each teacher RoI into the student's frame.

    maps: (N, C, h, w); boxes: (N, 4) (x1, y1, x2, y2); quarter_turns: (N,) = k_student − k_teacher.
    """
    index = torch.arange(len(teacher_boxes), device=teacher_maps.device, dtype=teacher_maps.dtype)[:, None]
    t = roi_align(teacher_maps, torch.cat([index, teacher_boxes / patch_size], 1), out_size, aligned=True)
    s = roi_align(student_maps, torch.cat([index, student_boxes / patch_size], 1), out_size, aligned=True)
    return rotate_quarter_turns(t, quarter_turns), s


def pair_losses(teacher_maps: Tensor, student_maps: Tensor, boxes: Tensor, turns: Tensor, pairs: list[tuple[int, int]],
                student_index: list[int], teacher_size: int, student_size: int, out_size: int, patch_size: int,
                match_fraction: float) -> tuple[Tensor, Tensor]:
    """Summed per-pair crop and patch-correspondence losses of ``pairs`` whose students share one map size.

    teacher_maps: (G·B, C, h, w) view-major; student_maps: the maps of the students' size, view-major, student view
    ``pairs[i][1]`` at ``student_index[i]``; boxes: (B, V, 4) (top, left, height, width) in source pixels; turns:
    (B, V) quarter turns; teacher_size, student_size: the crops' sides in pixels.
    """
    batch = boxes.shape[0]
    tq = torch.tensor([iq for iq, _ in pairs], device=boxes.device)
    sv = torch.tensor([v for _, v in pairs], device=boxes.device)
    t_boxes = overlap_in_crop_frame(boxes[:, tq], boxes[:, sv], teacher_size, turns[:, tq])  # (B, P, 4)
    s_boxes = overlap_in_crop_frame(boxes[:, sv], boxes[:, tq], student_size, turns[:, sv])
    delta = (turns[:, sv] - turns[:, tq]) % 4
    def pair_major(x: Tensor) -> Tensor:
        return x.transpose(0, 1).reshape(len(pairs) * batch, *x.shape[2:])

    s_index = torch.tensor(student_index, device=boxes.device)
    t_maps = teacher_maps.view(-1, batch, *teacher_maps.shape[1:])[tq].flatten(0, 1)
    s_maps = student_maps.view(-1, batch, *student_maps.shape[1:])[s_index].flatten(0, 1)
    t_roi, s_roi = aligned_rois(t_maps, pair_major(t_boxes), s_maps, pair_major(s_boxes), pair_major(delta),
                                out_size, patch_size)
    crop = -F.cosine_similarity(s_roi, t_roi, dim=1).view(len(pairs), -1).mean(1).sum()
    s_tokens, t_tokens = s_maps.flatten(2).transpose(1, 2), t_maps.flatten(2).transpose(1, 2)
    n_keep = max(1, int(match_fraction * s_tokens.shape[1]))
    forward, backward = best_match_cosines(s_tokens, t_tokens, n_keep)
    pc = -0.5 * (forward.view(len(pairs), -1).mean(1) + backward.view(len(pairs), -1).mean(1)).sum()
    return crop, pc


def crop_and_pc_losses(teacher_maps: Tensor, global_maps: Tensor, local_maps: Tensor | None, boxes: Tensor,
                       turns: Tensor, crop_sizes: tuple[int, int], roi_out_size: tuple[int, int], patch_size: int,
                       match_fraction: float) -> tuple[Tensor, Tensor]:
    """The crop and patch-correspondence losses averaged over every (teacher global iq, student view v ≠ iq) pair
    (``GTSA.roi_align``).

    teacher_maps, global_maps: (G·B, C, h, w) view-major; local_maps: (L·B, C, h', w') or None; boxes: (B, V, 4)
    (top, left, height, width) in source pixels; turns: (B, V) quarter turns; crop_sizes: (global, local) sides in
    pixels; roi_out_size: the RoI side for global and for local students.
    """
    n_views = boxes.shape[1]
    n_global = len(global_maps) // boxes.shape[0]
    global_pairs = [(iq, v) for iq in range(n_global) for v in range(n_global) if v != iq]
    crop, pc = pair_losses(teacher_maps, global_maps, boxes, turns, global_pairs, [v for _, v in global_pairs],
                           crop_sizes[0], crop_sizes[0], roi_out_size[0], patch_size, match_fraction)
    n_pairs = len(global_pairs)
    if local_maps is not None:
        local_pairs = [(iq, v) for iq in range(n_global) for v in range(n_global, n_views)]
        local_crop, local_pc = pair_losses(teacher_maps, local_maps, boxes, turns, local_pairs,
                                           [v - n_global for _, v in local_pairs], crop_sizes[0], crop_sizes[1],
                                           roi_out_size[1], patch_size, match_fraction)
        crop, pc, n_pairs = crop + local_crop, pc + local_pc, n_pairs + len(local_pairs)
    return crop / n_pairs, pc / n_pairs


@register_objective("gtsa")
class GTSAObjective(Objective):
    """GTSA's crop, patch-correspondence and rotation losses; the teacher sees the global crops only.

    Args:
        projector_dim: channels of the conv projector's blocks; default ``embed_dim`` (GTSA: 384 at ViT-S).
        out_dim: channels of the projector's and predictor's output maps; default 2·``embed_dim`` (GTSA: 768).
        rot_hidden_dim: width of the rotation head's hidden layers; default 2·``embed_dim`` (GTSA: 768).
        rot_bottleneck_dim: width of the rotation head's last hidden layer (GTSA: 128).
        roi_out_size: RoIAlign output side for (global, local) students, in map cells (GTSA: (10, 4) on 14×14 /
            6×6 maps; (6, 3) here on 8×8 / 4×4 maps, docs/methods.md, GTSA, Deviations).
        match_fraction: fraction of the student's tokens kept as nearest-neighbour matches (GTSA: 0.5).
        crop_weight: weight of the crop (RoI cosine) loss (GTSA: 1).
        pc_weight: weight of the patch-correspondence loss once switched on (GTSA: 0.5).
        rot_weight: weight of the rotation-prediction loss (GTSA: 0.5).
        pc_after_epoch: the patch-correspondence loss is on from the epoch after this one, 0-based (GTSA: 10).
    """

    requires = frozenset({"boxes", "rotations"})
    min_global_views = 2
    eval_readout = "mean_patch"
    teacher_heads: nn.ModuleDict  # the projector's EMA copy

    def __init__(self, embed_dim: int, *, projector_dim: int | None = None, out_dim: int | None = None,
                 rot_hidden_dim: int | None = None, rot_bottleneck_dim: int = 128, roi_out_size=(6, 3),
                 match_fraction: float = 0.5, crop_weight: float = 1.0, pc_weight: float = 0.5,
                 rot_weight: float = 0.5, pc_after_epoch: int = 10):
        super().__init__(embed_dim)
        projector_dim, out_dim = projector_dim or embed_dim, out_dim or 2 * embed_dim
        student = ConvProjector(embed_dim, projector_dim, out_dim)
        teacher = ConvProjector(embed_dim, projector_dim, out_dim)
        teacher.load_state_dict(student.state_dict())
        self.student_heads = nn.ModuleDict({
            "projector": student, "predictor": ConvPredictor(out_dim, out_dim, out_dim),
            "rotation": rotation_head(embed_dim, rot_hidden_dim or 2 * embed_dim, rot_bottleneck_dim)})
        self.teacher_heads = nn.ModuleDict({"projector": teacher})
        self.roi_out_size = tuple(roi_out_size)
        self.match_fraction = match_fraction
        self.crop_weight, self.pc_weight, self.rot_weight = crop_weight, pc_weight, rot_weight
        self.pc_after_epoch = pc_after_epoch

    def head_ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Only the projector has a teacher copy; the predictor and rotation head are student-only."""
        return [(self.student_heads["projector"], self.teacher_heads["projector"])]

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        assert teacher is not None
        prefix, n_global, n_views = student.num_prefix_tokens, views.n_global, views.n_views
        tokens = forward_multicrop(student, views.crops)
        heads = self.student_heads
        def predict(group: list[Tensor]) -> Tensor:
            return heads["predictor"](heads["projector"](token_map(torch.cat(group), prefix)))

        global_maps = predict(tokens[:n_global])
        local_maps = predict(tokens[n_global:]) if n_views > n_global else None
        with torch.no_grad():
            teacher_tokens = torch.cat(forward_multicrop(teacher, views.global_crops))
            teacher_maps = self.teacher_heads["projector"](token_map(teacher_tokens, teacher.num_prefix_tokens))
        teacher_maps, global_maps = teacher_maps.float(), global_maps.float()
        crop_sizes = (views.crops[0].shape[-1], views.crops[-1].shape[-1])
        crop, pc = crop_and_pc_losses(teacher_maps, global_maps, None if local_maps is None else local_maps.float(),
                                      views.meta["boxes"].float(), views.meta["rotations"], crop_sizes,
                                      self.roi_out_size, student.patch_size, self.match_fraction)

        pooled = torch.cat([t[:, prefix:].mean(1) for t in tokens])
        labels = views.meta["rotations"].transpose(0, 1).reshape(-1).long()  # view-major, as ``pooled``
        logits = heads["rotation"](pooled).float()
        rotation = F.cross_entropy(logits, labels)
        pc_coef = pc_coefficient(progress.epoch, self.pc_after_epoch, self.pc_weight)
        loss = self.crop_weight * crop + pc_coef * pc + self.rot_weight * rotation
        with torch.no_grad():
            parts = {"crop_loss": crop.detach(), "pc_loss": pc.detach(), "rot_loss": rotation.detach(),
                     "rot_acc": (logits.argmax(1) == labels).float().mean(),
                     "pc_coef": torch.tensor(pc_coef, device=loss.device),
                     "teacher_std": F.normalize(teacher_maps.mean((2, 3)), dim=1).std(0).mean()}
            if "overlap_fallback" in views.meta:
                parts["overlap_fallback"] = views.meta["overlap_fallback"].float().mean()
        return {"loss": loss, **parts}

    def embed(self, backbone: ViTEncoder, heads: nn.ModuleDict | None, images: Tensor) -> Tensor:
        """Mean-pooled final-norm patch tokens, as GTSA's fine-tuning code (its CLS output is never trained)."""
        return backbone(images)[:, backbone.num_prefix_tokens:].mean(1)


register_method(MethodSpec(
    name="gtsa", view="gtsa", objective="gtsa",
    paper="Kim and Lee, Self-Supervised Learning from Non-Object Centric Images with a Geometric Transformation "
          "Sensitive Architecture, arXiv 2304.08014",
    view_defaults=dict(n_local=8, global_scale=(0.3, 1.0), local_scale=(0.1, 0.3)),
    objective_defaults=dict(roi_out_size=(6, 3), match_fraction=0.5, crop_weight=1.0, pc_weight=0.5,
                            rot_weight=0.5, pc_after_epoch=10),
    optim_defaults=dict(lr=5e-4, min_lr=1e-6, warmup_epochs=10, weight_decay=0.04, weight_decay_end=0.4,
                        momentum_teacher=0.996, clip_grad=3.0),
))
