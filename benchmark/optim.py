"""The trainer's optimisation pieces, as DINO's ``utils.py``: parameter groups, cosine schedules, clipping.

Written by hand because lightly's ``cosine_warmup_schedule`` computes a slightly different curve and PyTorch's
``clip_grad_norm_`` clips the global norm, whereas DINO clips each parameter tensor separately.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def param_groups(named_params: list[tuple[str, nn.Parameter]]) -> list[dict]:
    """DINO's ``get_params_groups``: biases and all 1-D parameters (norms) get no weight decay; group 0 decays."""
    decay = [p for n, p in named_params if not (n.endswith(".bias") or p.ndim == 1)]
    no_decay = [p for n, p in named_params if n.endswith(".bias") or p.ndim == 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_schedule(base: float, final: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
                    start_warmup: float = 0.0) -> np.ndarray:
    """DINO's ``cosine_scheduler``: one value per step; linear warm-up, then cosine from ``base`` to ``final``."""
    warmup_steps = warmup_epochs * steps_per_epoch
    warmup = np.linspace(start_warmup, base, warmup_steps)
    steps = np.arange(epochs * steps_per_epoch - warmup_steps)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, cosine])


@torch.no_grad()
def clip_per_parameter(params: list[nn.Parameter], clip: float) -> torch.Tensor:
    """DINO's ``clip_gradients``: scale each gradient tensor whose norm exceeds ``clip`` down to ``clip``.

    Vectorised with ``_foreach`` ops and no host synchronisation. Returns the pre-clip norms.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack(torch._foreach_norm(grads))
    coefs = (clip / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(coefs.unbind()))
    return norms
