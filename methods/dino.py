"""DINO (Caron et al., ICCV 2021): self-distillation with no labels.

Follows facebookresearch/dino ``main_dino.py`` (docs/methods.md#dino): a 3-layer DINO head on the CLS token (lightly's
``DINOProjectionHead``, identical to ``DINOHead``), the cross-entropy between the centred, sharpened teacher
output on the two global crops and the student output on every other crop (lightly's ``DINOLoss``, called teacher
first with the globals as the first student views, which makes it equal to DINO's mean over the 2·(V−1) pairs),
a per-epoch teacher-temperature warm-up, and the last layer frozen during the first ``freeze_last_layer`` epochs.
Optimiser, schedules, clipping and EMA are the trainer's (benchmark/train.py).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import Tensor, nn

from .backbone import ViTEncoder
from .base import Objective, Progress, Views, forward_multicrop
from .registry import MethodSpec, register_method, register_objective


def teacher_temperature(epoch: int, total_epochs: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """DINO's schedule (``main_dino.py::DINOLoss.__init__``, ``np.linspace`` in float64): linear from
    ``warmup_temp`` to ``temp`` over ``warmup_epochs`` epochs, then constant.

    Not lightly's ``DINOLoss`` schedule: lightly keeps it only for backward compatibility, in float32, and the
    patch-level objectives need the schedule without that loss.
    """
    schedule = np.concatenate([np.linspace(warmup_temp, temp, warmup_epochs),
                               np.full(max(total_epochs - warmup_epochs, 0), temp)])
    return float(schedule[min(epoch, len(schedule) - 1)])


def build_head_pair(embed_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, norm_last_layer: bool,
                    use_bn: bool, freeze_last_layer: int) -> tuple[DINOProjectionHead, DINOProjectionHead]:
    """Student and teacher DINO heads; the teacher starts as a copy of the student.

    A second instance plus ``load_state_dict``, because the weight-normed last layer (``nn.utils.weight_norm``)
    cannot be deep-copied.
    """
    def make() -> DINOProjectionHead:
        return DINOProjectionHead(embed_dim, hidden_dim, bottleneck_dim, out_dim, batch_norm=use_bn,
                                  freeze_last_layer=freeze_last_layer, norm_last_layer=norm_last_layer)
    student, teacher = make(), make()
    teacher.load_state_dict(student.state_dict())
    return student, teacher


@torch.no_grad()
def distillation_diagnostics(teacher_logits: Tensor, center: Tensor, temp: float, loss: Tensor) -> dict[str, Tensor]:
    """Collapse diagnostics (DINO paper §5.3): the mean entropy of the teacher output, and the student–teacher KL.

    Every teacher view meets the same number of student views, so the mean cross-entropy (the loss) is the mean
    teacher entropy plus the mean KL(teacher ‖ student): KL = loss − H(teacher).
    """
    probs = torch.softmax((teacher_logits.float() - center) / temp, dim=-1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
    return {"teacher_entropy": entropy, "kl": loss.detach().float() - entropy}


class DistillationObjective(Objective):
    """The home of the DINO-family settings: the DINO head's arguments, the temperatures with their warm-up, the
    centre momentum and the frozen last layer (``main_dino.py`` arguments of the same names).

    Subclasses take ``**kwargs`` for these and declare only the defaults their paper changes; they build their
    heads with :meth:`head_pair` and name the heads whose last layer stays frozen in ``frozen_heads``.


    Args:
        out_dim: K, the DINO head's output dimension (prototypes) (DINO: 65536; Patch-Wise: 10000; iBOT: 8192).
        hidden_dim: width of the head's two hidden layers (DINO: 2048).
        bottleneck_dim: width of the L2-normalised bottleneck before the last layer (DINO: 256).
        norm_last_layer: weight-normalise the last layer with its norm fixed at 1 (DINO: true; iBOT: false).
        use_bn: batch norm in the head's hidden layers (DINO: false).
        student_temp: temperature of the student softmax (DINO: 0.1).
        teacher_temp: teacher temperature after its warm-up (DINO: 0.04; iBOT: 0.07).
        warmup_teacher_temp: teacher temperature at epoch 0, raised linearly to ``teacher_temp`` (DINO: 0.04).
        warmup_teacher_temp_epochs: epochs of that warm-up (DINO: 0 here; its ViT recipes use 30; iBOT: 30).
        center_momentum: momentum of the teacher centre's EMA, per step (DINO: 0.9).
        freeze_last_layer: epochs during which the head's last layer gets no update (DINO: 1).
    """

    frozen_heads: ClassVar[tuple[str, ...]] = ()
    teacher_heads: nn.ModuleDict  # every distillation objective has teacher heads

    def __init__(self, embed_dim: int, *, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True, use_bn: bool = False, student_temp: float = 0.1,
                 teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, warmup_teacher_temp_epochs: int = 0,
                 center_momentum: float = 0.9, freeze_last_layer: int = 1):
        super().__init__(embed_dim)
        self.out_dim, self.hidden_dim, self.bottleneck_dim = out_dim, hidden_dim, bottleneck_dim
        self.norm_last_layer, self.use_bn, self.freeze_last_layer = norm_last_layer, use_bn, freeze_last_layer
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs

    def head_pair(self, out_dim: int | None = None) -> tuple[DINOProjectionHead, DINOProjectionHead]:
        """A student/teacher DINO head pair with these settings, ``out_dim`` outputs (default: ``self.out_dim``)."""
        return build_head_pair(self.embed_dim, out_dim or self.out_dim, self.hidden_dim, self.bottleneck_dim,
                               self.norm_last_layer, self.use_bn, self.freeze_last_layer)

    def temperature(self, progress: Progress) -> float:
        """The teacher temperature of this epoch."""
        return teacher_temperature(progress.epoch, progress.total_epochs, self.warmup_teacher_temp,
                                   self.teacher_temp, self.warmup_teacher_temp_epochs)

    def after_backward(self, progress: Progress) -> None:
        """DINO's ``cancel_gradients_last_layer`` for every head in ``frozen_heads``."""
        for name in self.frozen_heads:
            head: DINOProjectionHead = self.student_heads[name]  # built by head_pair
            head.cancel_last_layer_gradients(progress.epoch)


@register_objective("dino")
class DINOObjective(DistillationObjective):
    """DINO's loss on the CLS token; the teacher sees the global crops only."""

    min_global_views = 2
    frozen_heads = ("dino",)

    def __init__(self, embed_dim: int, **kwargs):
        super().__init__(embed_dim, **kwargs)
        student, teacher = self.head_pair()
        self.student_heads = nn.ModuleDict({"dino": student})
        self.teacher_heads = nn.ModuleDict({"dino": teacher})
        self.criterion = DINOLoss(output_dim=self.out_dim, student_temp=self.student_temp,
                                  center_momentum=self.center_momentum)

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        assert teacher is not None
        with torch.no_grad():
            teacher_cls = torch.cat([t[:, 0] for t in forward_multicrop(teacher, views.global_crops)])
            teacher_out = self.teacher_heads["dino"](teacher_cls).chunk(views.n_global)
        student_cls = torch.cat([t[:, 0] for t in forward_multicrop(student, views.crops)])
        student_out = self.student_heads["dino"](student_cls).chunk(views.n_views)
        temp = self.temperature(progress)
        center = self.criterion.center.clone()  # the centre this step uses; the loss updates it afterwards
        loss = self.criterion(list(teacher_out), list(student_out), teacher_temp=temp)
        return {"loss": loss, **distillation_diagnostics(torch.stack(teacher_out), center, temp, loss)}


register_method(MethodSpec(
    name="dino", view="multicrop", objective="dino",
    paper="Caron et al., Emerging Properties in Self-Supervised Vision Transformers, ICCV 2021",
))
