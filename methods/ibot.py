"""iBOT (Zhou et al., ICLR 2022): DINO plus masked image modelling with a self-distilled patch target.

Follows bytedance/ibot at da316d8 (docs/methods.md, iBOT):
- views: ``masked_multicrop`` (methods/masking.py, ``loader.py::ImageFolderMask``) — the masks belong to the views
  because upstream draws them in the data loader with the crops, and the view strategy's generator makes them
  reproducible and resumable like the crops;
- student: the global crops with masked patch embeddings swapped for the mask token before the position
  embedding (``ViTEncoder(mask=...)``, ``vision_transformer.py::mask_model``), the local crops unmasked; teacher:
  the global crops unmasked;
- head: one DINO head shared by the CLS and the patch tokens (``head.py::iBOTHead`` with ``shared_head=True``,
  the released recipe), lightly's ``DINOProjectionHead``; the student projects only its CLS and masked tokens
  (the loss reads nothing else), the teacher all tokens (its patch centre needs them);
- loss (``main_ibot.py::iBOTLoss``): λ1 · DINO's CLS loss over the 2·(V−1) cross-view pairs (lightly's
  ``DINOLoss``, teacher first) + λ2 · the masked-patch loss within each global view: per crop the mean over its
  masked tokens of CE(teacher token, student token), a crop without a mask contributing 0 but counting in the
  mean; separate teacher temperatures for CLS and patches, each warmed up over ``warmup_teacher_temp_epochs``.
- patch centre (1, K): by default as upstream, the EMA of the mean teacher logit over **all** patch tokens of
  the global crops. lightly's ``IBOTPatchLoss`` (DINOv2's port) centres on the **masked** tokens only, once per
  call; ``patch_center_tokens="masked"`` selects that (once per step, over both views' masked tokens). The
  patch term is written here because ``IBOTPatchLoss`` cannot centre over all tokens; in ``masked`` mode it
  equals ``IBOTPatchLoss`` (tests/methods/test_ibot.py).
- ``mim_start_epoch``: before it, masks are dropped (upstream's ``pred_start_epoch`` sets the ratio to 0) and
  the patch temperature stays at its warm-up value, as upstream.

Deviations: the un-shared head variant (separate patch last layer, upstream's code default) is not offered; the
mask token is trunc-normal initialised (the backbone's; upstream starts it at zero).
Evaluation readout: the teacher CLS token after the final norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.modules.center import center_mean, center_momentum
from torch import Tensor, nn

from .backbone import ViTEncoder
from .base import Progress, Views, forward_multicrop
from .dino import DistillationObjective, distillation_diagnostics, teacher_temperature
from .registry import MethodSpec, register_method, register_objective


def masked_patch_loss(teacher_probs: Tensor, student_logits: Tensor, masks: Tensor, student_temp: float) -> Tensor:
    """iBOT's MIM term over crops (C of them, all views stacked): mean over crops of the per-crop mean CE.

    teacher_probs, student_logits: (M, K) for the M masked tokens, in ``masks.nonzero()`` order; masks: (C, N)
    bool. A crop's CE is averaged over its masked tokens (1/max(count, 1)); an unmasked crop adds 0.
    """
    ce = -(teacher_probs * F.log_softmax(student_logits / student_temp, dim=-1)).sum(-1)
    weight = (1.0 / masks.sum(1).clamp(min=1)).unsqueeze(1).expand_as(masks)[masks]
    return (ce * weight).sum() / masks.shape[0]


@register_objective("ibot")
class IBOTObjective(DistillationObjective):
    """DINO's CLS loss across views + iBOT's masked-patch loss within each global view, one shared head.

    Args:
        out_dim: K, the shared head's output dimension (iBOT: 8192).
        norm_last_layer: weight-normalise the head's last layer with its norm fixed at 1 (iBOT: false).
        teacher_temp: CLS teacher temperature after its warm-up (iBOT: 0.07).
        warmup_teacher_temp_epochs: epochs of both teacher-temperature warm-ups (iBOT: 30).
        teacher_patch_temp: patch teacher temperature after its warm-up (iBOT: 0.07).
        warmup_teacher_patch_temp: patch teacher temperature at the start of masked modelling (iBOT: 0.04).
        center_momentum2: momentum of the patch centre's EMA, per step (iBOT: 0.9).
        lambda1: weight of the CLS loss (iBOT: 1).
        lambda2: weight of the masked-patch loss (iBOT: 1).
        mim_start_epoch: first epoch (0-based) with masks; before it the patch term is 0 (iBOT's
            ``pred_start_epoch``: 0).
        patch_center_tokens: the tokens the patch centre averages: ``all`` patch tokens of the global crops (iBOT)
            or the ``masked`` ones (lightly's ``IBOTPatchLoss``).
    """

    frozen_heads = ("ibot",)
    patch_center: Tensor  # a buffer, registered in __init__
    requires = frozenset({"masks"})
    min_global_views = 2
    backbone_overrides = {"mask_token": True}

    def __init__(self, embed_dim: int, *, out_dim: int = 8192, norm_last_layer: bool = False,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: int = 30, teacher_patch_temp: float = 0.07,
                 warmup_teacher_patch_temp: float = 0.04, center_momentum2: float = 0.9, lambda1: float = 1.0,
                 lambda2: float = 1.0, mim_start_epoch: int = 0, patch_center_tokens: str = "all", **kwargs):
        super().__init__(embed_dim, out_dim=out_dim, norm_last_layer=norm_last_layer, teacher_temp=teacher_temp,
                         warmup_teacher_temp_epochs=warmup_teacher_temp_epochs, **kwargs)
        if patch_center_tokens not in ("all", "masked"):
            raise ValueError(f"patch_center_tokens must be 'all' (iBOT) or 'masked' (lightly's IBOTPatchLoss), "
                             f"not '{patch_center_tokens}'")
        student, teacher = self.head_pair()
        self.student_heads = nn.ModuleDict({"ibot": student})
        self.teacher_heads = nn.ModuleDict({"ibot": teacher})
        self.cls_criterion = DINOLoss(output_dim=out_dim, student_temp=self.student_temp,
                                      center_momentum=self.center_momentum)
        self.register_buffer("patch_center", torch.zeros(1, out_dim))
        self.center_momentum2 = center_momentum2
        self.patch_temps = (warmup_teacher_patch_temp, teacher_patch_temp)
        self.mim_start_epoch = mim_start_epoch
        self.lambda1, self.lambda2, self.patch_center_tokens = lambda1, lambda2, patch_center_tokens

    def temperatures(self, progress: Progress) -> tuple[float, float]:
        """Teacher temperatures (CLS, patch); the patch warm-up starts at ``mim_start_epoch`` (upstream)."""
        cls = self.temperature(progress)
        patch_epoch = max(progress.epoch - self.mim_start_epoch, 0)
        patch = teacher_temperature(patch_epoch, progress.total_epochs, *self.patch_temps,
                                    self.warmup_teacher_temp_epochs)
        return cls, patch

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        assert teacher is not None
        n_global, batch = views.n_global, views.batch_size
        masks = views.meta["masks"].transpose(0, 1).flatten(0, 1)  # (G·B, h, w), view-major like the crops
        if progress.epoch < self.mim_start_epoch:
            masks = torch.zeros_like(masks)
        globals_ = torch.cat(views.global_crops)
        with torch.no_grad():
            teacher_out = self.teacher_heads["ibot"](teacher(globals_))  # (G·B, 1+N, K)
        teacher_cls, teacher_patch = teacher_out[:, 0], teacher_out[:, 1:]
        masked = masks.flatten(1)  # (G·B, N)
        if masked.shape[1] != teacher_patch.shape[1]:
            raise ValueError(f"masks of {masked.shape[1]} patches for global crops of {teacher_patch.shape[1]} "
                             "patches: the view strategy's patch size differs from the backbone's")
        student_global = student(globals_, mask=masks)
        student_cls = [student_global[:, 0]] + [t[:, 0] for t in forward_multicrop(student, views.local_crops)]
        student_out = self.student_heads["ibot"](torch.cat(student_cls + [student_global[:, 1:][masked]]))
        n_cls = views.n_views * batch
        cls_temp, patch_temp = self.temperatures(progress)

        center = self.cls_criterion.center.clone()  # the centre this step uses; the loss updates it afterwards
        teacher_cls_views = list(teacher_cls.chunk(n_global))
        cls_loss = self.cls_criterion(teacher_cls_views, list(student_out[:n_cls].chunk(views.n_views)),
                                      teacher_temp=cls_temp)
        teacher_probs = F.softmax((teacher_patch[masked] - self.patch_center) / patch_temp, dim=-1)
        patch_loss = masked_patch_loss(teacher_probs, student_out[n_cls:], masked, self.student_temp)
        self.update_patch_center(teacher_patch, masked)
        loss = self.lambda1 * cls_loss + self.lambda2 * patch_loss
        diagnostics = distillation_diagnostics(torch.stack(teacher_cls_views), center, cls_temp, cls_loss)
        return {"loss": loss, "cls_loss": cls_loss.detach(), "patch_loss": patch_loss.detach(),
                "mask_ratio": masked.float().mean(), **diagnostics}

    @torch.no_grad()
    def update_patch_center(self, teacher_patch: Tensor, masked: Tensor) -> None:
        """EMA of the mean teacher patch logit, over all patch tokens (iBOT) or the masked ones (lightly)."""
        tokens = teacher_patch.flatten(0, 1) if self.patch_center_tokens == "all" else teacher_patch[masked]
        if tokens.shape[0] == 0:
            return
        batch_center = center_mean(tokens.float(), dim=(0,))
        self.patch_center.copy_(center_momentum(self.patch_center, batch_center, self.center_momentum2))


register_method(MethodSpec(
    name="ibot", view="masked_multicrop", objective="ibot",
    paper="Zhou et al., iBOT: Image BERT Pre-Training with Online Tokenizer, ICLR 2022",
    view_defaults=dict(n_local=10, global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)),
))
