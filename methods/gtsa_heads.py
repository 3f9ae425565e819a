"""GTSA's heads (``model_pretrain/gtsa.py``): the conv projector and predictor, and the rotation predictor.

``Projector``: 2 × [Conv3×3 → LayerNorm over channels (no affine) → GELU], each added to its input when the
channel counts match, then Conv1×1. ``Predictor``: one such block without the residual, then Conv1×1. Convs are
initialised N(0, 0.02) with zero biases. ``rot_predictor``: Linear → LN → GELU → Linear → LN → GELU → Linear →
LN → Linear(→ 4), its input width ``embed_dim`` instead of the hard-coded 384.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def token_map(tokens: Tensor, num_prefix_tokens: int) -> Tensor:
    """Backbone tokens (B, prefix + h·w, D) → the patch-token map (B, D, h, w) of a square grid."""
    patches = tokens[:, num_prefix_tokens:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"GTSA needs square crops; got {patches.shape[1]} patch tokens")
    return patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, without affine parameters (upstream's TransposeLast)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.movedim(1, -1), (self.channels,), eps=self.eps).movedim(-1, 1)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), ChannelLayerNorm(out_channels),
                         nn.GELU())


def init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.02)
            assert m.bias is not None  # every conv here has a bias
            nn.init.zeros_(m.bias)


class ConvProjector(nn.Module):
    """``Projector(input_dim, projector_dim, out_dim)`` with its 2 residual conv blocks."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList([conv_block(in_dim if i == 0 else hidden_dim, hidden_dim)
                                     for i in range(n_blocks)])
        self.proj = nn.Conv2d(hidden_dim, out_dim, 1)
        init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            y = block(x)
            x = y + x if y.shape[1] == x.shape[1] else y
        return self.proj(x)


class ConvPredictor(nn.Module):
    """``Predictor(input_dim, predictor_dim, out_dim)``: one conv block (no residual), then Conv1×1."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.block = conv_block(in_dim, hidden_dim)
        self.proj = nn.Conv2d(hidden_dim, out_dim, 1)
        init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.block(x))


def rotation_head(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_rotations: int = 4) -> nn.Sequential:
    """``rot_predictor``: a 4-way classifier of the quarter turns (PyTorch's default Linear init, as upstream)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(),
                         nn.Linear(hidden_dim, bottleneck_dim), nn.LayerNorm(bottleneck_dim),
                         nn.Linear(bottleneck_dim, n_rotations))
