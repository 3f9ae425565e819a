"""APS (Asymmetric Patch Sampling for Contrastive Learning, arXiv 2306.02854; Pattern Recognition 2025).

Follows ``visresearch/aps`` (docs/methods.md, APS): one shared ViT sees only each view's kept patches and its CLS token
(``module/model.py::ViTEncoderProjHead``: gather after the position embedding); the CLS output goes through a
projector and a predictor (``ViTEncoderPredHead._build_mlp``: bias-free Linears, BN + ReLU between them, a last
``BatchNorm1d(affine=False)``; each view is a separate forward, so BN statistics are per view); the loss is
``ctr(p1, z2) + ctr(p2, z1)`` (``module/loss.py``): InfoNCE with in-batch negatives at temperature 0.1, targets
detached, no 2τ rescaling. There is no momentum encoder. Each loaded batch gives ``steps_per_batch`` optimiser
steps (4 upstream), step t using the t-th disjoint view-1 chunk (``main_pretrain.py``); the trainer drives them
through ``substep`` and counts optimiser steps in its schedules. ``steps_per_batch=1`` with the view's
``n_chunks=1`` is the one-step variant.

Deviations (documented in docs/methods.md): the shared timm backbone gives the CLS token a position embedding and
uses qkv bias (upstream: neither); the lr schedule is the trainer's per-step warm-up + cosine, not a per-epoch
``LambdaLR``; the trainer's DINO parameter groups exempt norms and biases from weight decay (upstream decays all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from . import aps_views  # noqa: F401  (registers the ``aps`` view strategy)
from .backbone import BackboneConfig, ViTEncoder
from .base import Objective, Progress, Views, ViewStrategy
from .registry import MethodSpec, register_method, register_objective


def moco_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> ProjectionHead:
    """``_build_mlp(3, in, hidden, out, last_bn=True)``: 3 bias-free Linears, BN+ReLU, a last affine-free BN."""
    return ProjectionHead([
        (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), False),
        (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), False),
        (hidden_dim, out_dim, nn.BatchNorm1d(out_dim, affine=False), None, False),
    ])


def info_nce(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """``ctr(q, k)``: cross-entropy of cosine logits / τ with the matching key of each query as the target."""
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def symmetric_info_nce(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``ctr(p1, z2)`` and ``ctr(p2, z1)`` (``main_pretrain.py``): each view's prediction against the other view's
    projection, the projections detached (stop-gradient). p*, z*: (B, D) in float32."""
    return info_nce(p1, z2.detach(), temperature), info_nce(p2, z1.detach(), temperature)


@register_objective("aps")
class APSObjective(Objective):
    """Stop-gradient InfoNCE between the two sparsely / selectively sampled views; no teacher.

    Args:
        hidden_dim: width of the projector's and predictor's hidden layers (APS: 512).
        out_dim: dimension of the projections and predictions (APS: 128).
        temperature: τ of the InfoNCE logits (APS: 0.1).
        steps_per_batch: optimiser steps per loaded batch, each on its own view-1 chunk; must equal the view's
            ``n_chunks`` (APS: 4; the one-step variant sets both to 1).
    """

    requires = frozenset({"keep"})
    min_global_views = 2
    uses_teacher = False
    eval_readout = "cls"

    def __init__(self, embed_dim: int, *, hidden_dim: int = 512, out_dim: int = 128, temperature: float = 0.1,
                 steps_per_batch: int = 4):
        super().__init__(embed_dim)
        if steps_per_batch < 1:
            raise ValueError(f"steps_per_batch must be ≥ 1, got {steps_per_batch}")
        self.steps_per_batch = steps_per_batch  # per instance: the 1-step variant is a setting
        self.student_heads = nn.ModuleDict({"projector": moco_mlp(embed_dim, hidden_dim, out_dim),
                                            "predictor": moco_mlp(out_dim, hidden_dim, out_dim)})
        self.teacher_heads = None
        self.temperature = temperature

    def _check_chunks(self, n_chunks: int) -> None:
        if n_chunks != self.steps_per_batch:
            raise ValueError(f"the views carry {n_chunks} patch chunks but the objective takes "
                             f"{self.steps_per_batch} steps per batch; set the view's n_chunks and the "
                             f"objective's steps_per_batch to the same value")

    def configure(self, view: ViewStrategy, backbone: BackboneConfig) -> None:
        """Refuse, when the method is built, a view strategy whose chunk count differs from the steps per batch."""
        if hasattr(view, "n_chunks"):
            self._check_chunks(view.n_chunks)

    def loss(self, student: ViTEncoder, teacher: ViTEncoder | None, views: Views, progress: Progress,
             substep: int = 0) -> dict[str, Tensor]:
        keep = views.meta["keep"]
        self._check_chunks(keep.shape[2])
        heads = self.student_heads
        z1, z2 = (heads["projector"](student(views.crops[v], keep=keep[:, v, substep])[:, 0]) for v in range(2))
        p1, p2 = heads["predictor"](z1), heads["predictor"](z2)
        z1, z2, p1, p2 = z1.float(), z2.float(), p1.float(), p2.float()
        loss_12, loss_21 = symmetric_info_nce(p1, p2, z1, z2, self.temperature)
        with torch.no_grad():
            logits = F.normalize(p1, dim=1) @ F.normalize(z2, dim=1).T
            accuracy = (logits.argmax(1) == torch.arange(len(p1), device=p1.device)).float().mean()
            parts = {"loss_12": loss_12.detach(), "loss_21": loss_21.detach(), "contrast_acc": accuracy,
                     "z_std": F.normalize(z1, dim=1).std(0).mean()}
            if "selective_shortfall" in views.meta:
                parts["selective_shortfall"] = views.meta["selective_shortfall"].float().mean()
        return {"loss": loss_12 + loss_21, **parts}


register_method(MethodSpec(
    name="aps", view="aps", objective="aps",
    paper="Asymmetric Patch Sampling for Contrastive Learning, Pattern Recognition 2025 (arXiv 2306.02854)",
    view_defaults=dict(scale=(0.15, 1.0), sampling_ratio=0.25, n_chunks=4, power=3.0, track_flip=True),
    objective_defaults=dict(hidden_dim=512, out_dim=128, temperature=0.1, steps_per_batch=4),
    optim_defaults=dict(lr=5e-4, min_lr=0.0, warmup_epochs=20, weight_decay=0.05, weight_decay_end=0.05,
                        clip_grad=0.0),
))
