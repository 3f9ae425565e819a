"""SelfPatch's class-attention aggregator and its neighbour table (``selfpatch_vision_transformer.py``).

``SelfPatchAggregator`` is upstream's ``SelfPatchHead``: a learned query token, two CaiT class-attention blocks
(``LayerScale_Block_CA`` with, despite its name, no LayerScale: only the query token is updated, the patch tokens
are keys and values) and a final LayerNorm. The class attention and the MLP are timm's ``cait.ClassAttn`` and
``layers.Mlp``, which compute what upstream's copies of them compute; init as upstream (trunc-normal 0.02,
zero biases). Two paths share the weights:

- ``forward`` (upstream ``loc=False``, the student and the evaluation): LN([query over all patches; patches]);
- ``aggregate_neighbours`` (``loc=True``, the teacher): LN([query over all patches; one query per patch over
  its top-k neighbours]), the neighbours ranked by the cosine similarity of the (raw) patch tokens among the 8
  cells of the patch's 3×3 window, the window wrapping around the grid's borders as upstream's tables do.

``neighbour_table`` generalises upstream's ``get_local_index`` (tables for 14×14 and 6×6 only) to any square grid
of side ≥ 3; smaller grids are refused (a 2×2 grid has 3 distinct neighbours, not 8).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.cait import ClassAttn
from torch import Tensor, nn

NEIGHBOURS = 8
MIN_GRID_SIDE = 3


def grid_side(n_patches: int) -> int:
    """The side of a square grid of ``n_patches``; refuses non-square grids and sides below 3."""
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"SelfPatch needs a square patch grid; got {n_patches} patches")
    if side < MIN_GRID_SIDE:
        raise ValueError(f"SelfPatch needs patch grids of side ≥ {MIN_GRID_SIDE} (8 distinct neighbours per "
                         f"patch); got a {side}×{side} grid. Use larger crops or a smaller patch size.")
    return side


@lru_cache(maxsize=None)
def neighbour_table(n_patches: int) -> Tensor:
    """(N, 8) long: row i lists, ascending, the other cells of patch i's 3×3 window on the torus."""
    side = grid_side(n_patches)
    row, col = torch.arange(n_patches).div(side, rounding_mode="floor"), torch.arange(n_patches) % side
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    ids = torch.stack([((row + dr) % side) * side + (col + dc) % side for dr, dc in offsets], dim=1)
    return ids.sort(dim=1).values


def top_neighbours(patches: Tensor, k: int) -> Tensor:
    """(B, N, k, C): for each patch, the raw tokens of its k neighbours most cosine-similar to it."""
    batch, n, dim = patches.shape
    table = neighbour_table(n).to(patches.device)
    unit = F.normalize(patches, dim=-1)
    similarity = (unit[:, table] * unit.unsqueeze(2)).sum(-1)  # (B, N, 8)
    chosen = table.expand(batch, n, NEIGHBOURS).gather(2, similarity.topk(k, dim=-1).indices)  # (B, N, k) ids
    return patches.gather(1, chosen.flatten(1).unsqueeze(-1).expand(-1, -1, dim)).view(batch, n, k, dim)


class ClassAttentionBlock(nn.Module):
    """upstream ``LayerScale_Block_CA``: q ← q + CA(LN([q; x])); q ← q + MLP(LN(q)); x is left unchanged."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttn(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: Tensor, query: Tensor) -> Tensor:
        query = query + self.attn(self.norm1(torch.cat([query, tokens], dim=1)))
        return query + self.mlp(self.norm2(query))


class SelfPatchAggregator(nn.Module):
    """upstream ``SelfPatchHead(in_dim, num_heads, k_num)``."""

    def __init__(self, dim: int, num_heads: int, k_num: int = 4, depth: int = 2):
        super().__init__()
        if not 1 <= k_num <= NEIGHBOURS:
            raise ValueError(f"k_num must be between 1 and {NEIGHBOURS} (the 3×3 window), got {k_num}")
        self.k_num = k_num
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.query, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def image_token(self, patches: Tensor) -> Tensor:
        """(B, 1, C) the query after the blocks, attending over all patches (before the LN)."""
        query = self.query.expand(patches.shape[0], -1, -1)
        for block in self.blocks:
            query = block(patches, query)
        return query

    def forward(self, patches: Tensor) -> Tensor:
        """Student path: (B, 1+N, C) = LN([image token; patches])."""
        return self.norm(torch.cat([self.image_token(patches), patches], dim=1))

    def aggregate_neighbours(self, patches: Tensor) -> Tensor:
        """Teacher path: (B, 1+N, C) = LN([image token; per-patch aggregate of its top-k neighbours])."""
        batch, n, dim = patches.shape
        neighbours = top_neighbours(patches, self.k_num).flatten(0, 1)  # (B·N, k, C)
        query = self.query.expand(batch * n, -1, -1)
        for block in self.blocks:
            query = block(neighbours, query)
        return self.norm(torch.cat([self.image_token(patches), query.view(batch, n, dim)], dim=1))
