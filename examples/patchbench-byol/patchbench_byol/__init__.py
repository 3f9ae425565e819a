"""BYOL (Grill et al., NeurIPS 2020) on a ViT CLS token, as a patchbench method plugin."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn

from patchbench.methods import MethodSpec, Objective, Progress, Views, ViTEncoder, register_method, register_objective


@register_objective("byol")
class BYOLObjective(Objective):
    """Symmetrised negative cosine between the online prediction of one view and the target projection of the
    other; the target (teacher) is the EMA of the backbone and projector."""

    min_global_views = 2

    def __init__(self, embed_dim: int, *, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__(embed_dim)
        projector = BYOLProjectionHead(embed_dim, hidden_dim, out_dim)
        target_projector = BYOLProjectionHead(embed_dim, hidden_dim, out_dim)
        target_projector.load_state_dict(projector.state_dict())
        self.student_heads = nn.ModuleDict({"projector": projector,
                                            "predictor": BYOLPredictionHead(out_dim, hidden_dim, out_dim)})
        self.teacher_heads = nn.ModuleDict({"projector": target_projector})
        self.criterion = NegativeCosineSimilarity()

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        x0, x1 = views.global_crops[:2]
        online = self.student_heads["predictor"](self.student_heads["projector"](student(torch.cat([x0, x1]))[:, 0]))
        with torch.no_grad():
            target = self.teacher_heads["projector"](teacher(torch.cat([x0, x1]))[:, 0])
        p0, p1 = online.chunk(2)
        z0, z1 = target.chunk(2)
        return {"loss": 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))}

    def head_ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Only the projector has a target copy; the predictor is online-only."""
        return [(self.student_heads["projector"], self.teacher_heads["projector"])]


register_method(MethodSpec(
    name="byol", view="multicrop", objective="byol",
    paper="Grill et al., Bootstrap Your Own Latent, NeurIPS 2020 (example plugin)",
    view_defaults=dict(n_local=0),
    optim_defaults=dict(momentum_teacher=0.99, weight_decay=1.5e-6, weight_decay_end=1.5e-6),
))
