"""Patch-Wise SSL (Javidani et al., arXiv 2310.18651): DINO plus a loss between geometrically matched patches.

Follows ``patch_wise_dino.py::DINOLoss`` of alijavidani/Local_Global_Representation_Learning (docs/methods.md,
Patch-Wise SSL): one DINO head shared by CLS and patch tokens; for every (teacher global v, student view u ≠ v) pair
the cross-entropy between the centred, sharpened teacher distribution and the student's, over the CLS pair and the
patch pairs of the geometric matching (methods/patch_matching.py); the centre has one row per token position of a
global view and follows DINO's EMA. Temperatures, teacher-temperature warm-up and the frozen last layer as DINO.

The released loss (``loss_variant="mean"``) averages the cross-entropies of a pair over all its matched tokens, CLS
included; ``"lambda"`` is the development branches' λ·H_CLS + (1 − λ)·mean over patches (0 without patch matches).
With per-sample geometry each sample's pair is averaged over its own |M_b|, then over samples and pairs.

Efficiency: the student head runs only on the tokens some pair uses (gather, then project), and the loss
is one dense (used tokens × K) target — the weighted sum of teacher distributions each student token is matched to
— built with a sparse matrix product, so no (pair × B × M × K) tensor is ever formed. The teacher head runs on
every global token, because every centre row is updated from the batch mean.

Ablation switches: ``patch_loss=False`` (CLS pairs only: DINO with tracked crops), ``global_local_patches=False``
(patch pairs only between the two globals), ``patch_centre="shared"`` (one centre row for all patch positions).
"""

from __future__ import annotations

import torch
from lightly.models.modules.center import center_mean, center_momentum
from torch import Tensor, nn

from .backbone import BackboneConfig, ViTEncoder
from .base import Progress, Views, ViewStrategy, forward_multicrop
from .dino import DistillationObjective
from .patch_matching import PatchMatches, match_patches
from .registry import MethodSpec, register_method, register_objective

LOSS_VARIANTS = ("mean", "lambda")
CENTRES = ("per_position", "shared")


def token_weights(matches: PatchMatches, variant: str, cls_weight: float) -> Tensor:
    """Per-sample weights (N, M) of each matched token pair's cross-entropy within its view pair."""
    valid = matches.valid.float()
    if variant == "mean":
        return valid / valid.sum(1, keepdim=True)
    n_patch = valid[:, 1:].sum(1, keepdim=True)
    patch = (1 - cls_weight) * valid[:, 1:] / n_patch.clamp_min(1)
    return torch.cat([torch.full_like(valid[:, :1], cls_weight), patch], 1)


def uses_patches(student_view: int, n_global: int, patch_loss: bool, global_local_patches: bool) -> bool:
    """Whether a (teacher global, student view) pair matches patch tokens, or only its CLS pair."""
    return patch_loss and (global_local_patches or student_view < n_global)


def view_pair_matches(boxes: Tensor, flips: Tensor, teacher_views: list[int], student_views: list[int],
                      teacher_grid: int, student_grid: int, *, with_patches: bool, shared_geometry: bool,
                      batch: int) -> PatchMatches:
    """Token pairs of view pairs with equal grid sizes, rows (pair, sample); CLS only without patches.

    boxes: (B, V, 4) (top, left, height, width) in source pixels; flips: (B, V). With ``shared_geometry`` every
    sample has row 0's geometry: the pairs are matched once and the matches shared.
    """
    n_pairs = len(teacher_views)
    if not with_patches:
        zeros = torch.zeros(n_pairs * batch, 1, dtype=torch.long, device=boxes.device)
        return PatchMatches(zeros, zeros, torch.ones_like(zeros, dtype=torch.bool))
    rows = slice(0, 1) if shared_geometry else slice(None)  # same-batch mode: match once, share it
    boxes, flips = boxes[rows], flips[rows]
    t, s = torch.tensor(teacher_views), torch.tensor(student_views)
    m = match_patches(boxes[:, t].transpose(0, 1).flatten(0, 1), flips[:, t].T.flatten(), teacher_grid,
                      boxes[:, s].transpose(0, 1).flatten(0, 1), flips[:, s].T.flatten(), student_grid)
    if shared_geometry:
        m = PatchMatches(*(x.repeat_interleave(batch, 0) for x in (m.teacher, m.student, m.valid)))
    return m


def pair_entries(boxes: Tensor, flips: Tensor, grids: list[int], n_global: int, student_lengths: list[int],
                 teacher_length: int, *, patch_loss: bool, global_local_patches: bool, loss_variant: str,
                 cls_weight: float, shared_geometry: bool = False) -> tuple[Tensor, Tensor, Tensor, int]:
    """Every (teacher v, student u ≠ v) pair's matched tokens as sparse entries: (row of the student token in
    the flattened student tokens, row of the teacher token in the flattened teacher tokens, weight), with the
    weights already divided by the batch size and the number of pairs; and the number of pairs.

    grids: each view's patch-grid side; student_lengths: tokens per student view (1 + grid²); teacher_length:
    tokens per teacher view (1 + grid², or 1 without patch loss). The flattened tokens are view-major, then
    sample, then token, as ``torch.cat([t.flatten(0, 1) for t in tokens])``.
    """
    batch, n_views = boxes.shape[0], len(grids)
    offsets = [0]
    for length in student_lengths:
        offsets.append(offsets[-1] + batch * length)
    pairs = [(v, u) for v in range(n_global) for u in range(n_views) if u != v]
    groups: dict[tuple, list[tuple[int, int]]] = {}  # pairs whose matching is one vectorised call
    for v, u in pairs:
        with_patches = uses_patches(u, n_global, patch_loss, global_local_patches)
        groups.setdefault((grids[v], grids[u], with_patches), []).append((v, u))
    sample = torch.arange(batch, device=boxes.device)[None, :, None]
    student_rows, teacher_rows, weights = [], [], []
    for (teacher_grid, student_grid, with_patches), group in groups.items():
        vs, us = [v for v, _ in group], [u for _, u in group]
        m = view_pair_matches(boxes, flips, vs, us, teacher_grid, student_grid, with_patches=with_patches,
                              shared_geometry=shared_geometry, batch=batch)
        w = (token_weights(m, loss_variant, cls_weight) / (batch * len(pairs))).view(len(group), batch, -1)
        keep = m.valid.view_as(w) & (w > 0)
        student_offset = torch.tensor([offsets[u] for u in us]).view(-1, 1, 1).to(sample.device)
        student_length = torch.tensor([student_lengths[u] for u in us]).view(-1, 1, 1).to(sample.device)
        teacher_view = torch.tensor(vs).view(-1, 1, 1).to(sample.device)
        student_rows.append((student_offset + sample * student_length + m.student.view_as(w))[keep])
        teacher_rows.append(((teacher_view * batch + sample) * teacher_length + m.teacher.view_as(w))[keep])
        weights.append(w[keep])
    return torch.cat(student_rows), torch.cat(teacher_rows), torch.cat(weights), len(pairs)


def center_per_token(center: Tensor, tokens_per_view: int) -> Tensor:
    """(1, T, K): the per-position rows, or the CLS row followed by the shared patch row repeated."""
    if center.shape[1] == tokens_per_view:
        return center
    return torch.cat([center[:, :1], center[:, 1:2].expand(-1, tokens_per_view - 1, -1)], 1)


def patchwise_cross_entropy(teacher_logits: Tensor, center: Tensor, teacher_temp: float, student_logits: Tensor,
                            student_temp: float, student_index: Tensor, teacher_rows: Tensor,
                            weights: Tensor) -> tuple[Tensor, Tensor]:
    """The weighted cross-entropy between centred, sharpened teacher tokens and student tokens over matched pairs,
    and the weighted entropy of the matched teacher tokens (the loss minus the KL).

    teacher_logits: (G, B, T, K) of the global views; center: (1, T, K), or (1, 2, K) for one shared patch row;
    student_logits: (U, K) of the student tokens some pair uses; one sparse entry per matched pair (from
    :func:`pair_entries`): ``student_index`` (row of ``student_logits``), ``teacher_rows`` (row of the flattened
    teacher tokens) and ``weights``. Each used student token's target, the weighted sum of the teacher distributions
    it is matched to, is one sparse product.
    """
    with torch.no_grad():
        centred = teacher_logits - center_per_token(center, teacher_logits.shape[2])
        teacher_probs = torch.softmax(centred / teacher_temp, dim=-1)
    student_logp = torch.log_softmax(student_logits / student_temp, dim=-1)
    with torch.no_grad(), torch.autocast(student_logp.device.type, enabled=False):
        pair_matrix = torch.sparse_coo_tensor(torch.stack([student_index, teacher_rows]), weights,
                                              (len(student_logp), teacher_probs[..., 0].numel()),
                                              check_invariants=False)
        target = torch.sparse.mm(pair_matrix, teacher_probs.flatten(0, 2))
        entropy = -(teacher_probs * torch.log(teacher_probs.clamp_min(1e-12))).sum(-1).flatten()
        matched_entropy = (weights * entropy[teacher_rows]).sum()
    return -(target * student_logp).sum(), matched_entropy


@torch.no_grad()
def updated_center(center: Tensor, teacher_logits: Tensor, momentum: float) -> Tensor:
    """c ← m·c + (1 − m)·batch mean of the global views' teacher logits (G, B, T, K), per centre row (DINO's EMA),
    the mean taken over every rank's shard as the official code's all-reduce (lightly's ``center_mean``); a
    two-row centre keeps the CLS row and one row for the mean over all patch positions."""
    batch_mean = center_mean(teacher_logits, dim=(0, 1)).squeeze(0)  # (1, T, K), over all ranks
    if center.shape[1] != batch_mean.shape[1]:
        batch_mean = torch.cat([batch_mean[:, :1], batch_mean[:, 1:].mean(1, keepdim=True)], 1)
    return center_momentum(center, batch_mean, momentum)


@register_objective("patchwise")
class PatchWiseObjective(DistillationObjective):
    """DINO on CLS and on matched patch tokens, with one shared head and a per-position centre.

    Args:
        out_dim: K, the shared head's output dimension (Patch-Wise: 10000).
        patch_loss: add the matched patch pairs to each view pair's loss (Patch-Wise: true); false is DINO with
            tracked crops. Ablation: ``no-patch-loss`` (benchmark/matrices/ablation-patchwise.yaml).
        global_local_patches: match patches between a global and a local crop too (Patch-Wise: true); false
            matches them between the two globals only. Ablation: ``globals-only``.
        loss_variant: ``mean`` (the released loss: the mean over a pair's matched tokens, CLS included) or
            ``lambda`` (the development branches': λ·H_CLS + (1 − λ)·mean over patches). Ablation: ``lambda-loss``.
        cls_weight: λ, the CLS term's weight in the ``lambda`` variant, unitless in [0, 1] (0.9).
        patch_centre: ``per_position`` (one centre row per token position of a global view, Patch-Wise's) or
            ``shared`` (the CLS row and one row for every patch). Ablation: ``shared-centre``.
    """

    requires = frozenset({"boxes", "flips"})
    min_global_views = 2
    frozen_heads = ("dino",)

    def __init__(self, embed_dim: int, *, out_dim: int = 10000, patch_loss: bool = True,
                 global_local_patches: bool = True, loss_variant: str = "mean", cls_weight: float = 0.9,
                 patch_centre: str = "per_position", **kwargs):
        super().__init__(embed_dim, out_dim=out_dim, **kwargs)
        if loss_variant not in LOSS_VARIANTS:
            raise ValueError(f"loss_variant '{loss_variant}' is not one of {LOSS_VARIANTS}")
        if patch_centre not in CENTRES:
            raise ValueError(f"patch_centre '{patch_centre}' is not one of {CENTRES}")
        student, teacher = self.head_pair()
        self.student_heads = nn.ModuleDict({"dino": student})
        self.teacher_heads = nn.ModuleDict({"dino": teacher})
        self.patch_loss, self.global_local_patches = patch_loss, global_local_patches
        self.loss_variant, self.cls_weight, self.patch_centre = loss_variant, cls_weight, patch_centre
        self.patch_size = 0
        self.register_buffer("center", torch.zeros(1, 1, out_dim))

    def configure(self, view: ViewStrategy, backbone: BackboneConfig) -> None:
        """The centre gets one row per token of a global view (CLS + P²), or CLS + one shared patch row, or only
        the CLS row without patch loss."""
        self.patch_size = backbone.patch_size
        grid = getattr(view, "global_size", view.image_size) // backbone.patch_size
        rows = (1 + grid * grid if self.patch_centre == "per_position" else 2) if self.patch_loss else 1
        self.center = torch.zeros(1, rows, self.out_dim)

    def matches(self, views: Views, teacher_views: list[int], student_views: list[int]) -> PatchMatches:
        """Token pairs of view pairs with equal grid sizes, rows (pair, sample); CLS only without patch loss."""
        def grid(v: int) -> int:
            return views.crops[v].shape[-1] // self.patch_size

        with_patches = uses_patches(student_views[0], views.n_global, self.patch_loss, self.global_local_patches)
        return view_pair_matches(views.meta["boxes"], views.meta["flips"], teacher_views, student_views,
                                 grid(teacher_views[0]), grid(student_views[0]), with_patches=with_patches,
                                 shared_geometry=views.shared_geometry, batch=views.batch_size)

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        assert teacher is not None
        batch, n_global = views.batch_size, views.n_global
        temp = self.temperature(progress)
        with torch.no_grad():
            teacher_tokens = torch.stack(forward_multicrop(teacher, views.global_crops))  # (G, B, T, D)
            if not self.patch_loss:
                teacher_tokens = teacher_tokens[:, :, :1]
            tokens_per_view = teacher_tokens.shape[2]
            teacher_logits = self.teacher_heads["dino"](teacher_tokens.flatten(0, 2)).float()
            teacher_logits = teacher_logits.view(n_global, batch, tokens_per_view, -1)

        student_tokens = forward_multicrop(student, views.crops)
        student_rows, teacher_rows, weights, n_pairs = pair_entries(
            views.meta["boxes"], views.meta["flips"], [c.shape[-1] // self.patch_size for c in views.crops],
            n_global, [t.shape[1] for t in student_tokens], tokens_per_view, patch_loss=self.patch_loss,
            global_local_patches=self.global_local_patches, loss_variant=self.loss_variant,
            cls_weight=self.cls_weight, shared_geometry=views.shared_geometry)
        used, compact = torch.unique(student_rows, return_inverse=True)  # the step's one host sync (its size)
        flat_tokens = torch.cat([t.flatten(0, 1) for t in student_tokens])
        student_logits = self.student_heads["dino"](flat_tokens[used]).float()
        loss, matched_entropy = patchwise_cross_entropy(teacher_logits, self.center, temp, student_logits,
                                                        self.student_temp, compact, teacher_rows, weights)
        self.center.copy_(updated_center(self.center, teacher_logits, self.center_momentum))
        patch_pairs = (len(student_rows) - n_pairs * batch) / (n_pairs * batch)  # per view pair and sample
        return {"loss": loss, "teacher_entropy": matched_entropy, "kl": loss.detach() - matched_entropy,
                "patch_pairs": torch.tensor(float(patch_pairs))}


register_method(MethodSpec(
    name="patchwise", view="patchwise", objective="patchwise",
    paper="Javidani et al., Patch-Wise Self-Supervised Visual Representation Learning, arXiv 2310.18651",
))
