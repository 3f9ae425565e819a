"""The shared ViT backbone: a timm ``VisionTransformer`` returning every token.

One model serves every crop size (``dynamic_img_size`` interpolates the position embedding), so global and local
crops share weights, as in DINO's ``MultiCropWrapper``. ``forward`` optionally replaces masked patch embeddings
by a learned mask token before the position embedding (iBOT, ``models/vision_transformer.py::mask_model``) and
optionally keeps only a subset of patch tokens after it (APS, ``module/model.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from .typecheck import ranged

# name -> (embed_dim, depth, num_heads). tiny/small/base are DINO's vit_tiny/small/base; nano and pico are
# CPU-sized variants for the demo and the tests.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "pico": (32, 2, 2),
    "nano": (64, 4, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


@dataclass(frozen=True)
class BackboneConfig:
    """What defines a backbone. ``class_token``/``final_norm`` are False for SelfPatch's backbone."""

    size: str = ranged("nano", choices=tuple(VIT_SIZES))
    patch_size: int = ranged(4, min=1)
    img_size: int = ranged(32, min=1)
    drop_path_rate: float = ranged(0.1, min=0, max=1)
    class_token: bool = True
    final_norm: bool = True
    mask_token: bool = False


class ViTEncoder(nn.Module):
    """A timm ViT that returns all tokens after the final norm: (B, num_prefix_tokens + N, D)."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        if config.size not in VIT_SIZES:
            raise ValueError(f"unknown backbone size '{config.size}'; known: {', '.join(VIT_SIZES)}")
        if config.img_size % config.patch_size:
            raise ValueError(f"image size {config.img_size} is not a multiple of patch size {config.patch_size}")
        embed_dim, depth, num_heads = VIT_SIZES[config.size]
        self.config = config
        self.vit = VisionTransformer(
            img_size=config.img_size, patch_size=config.patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, qkv_bias=True, num_classes=0, global_pool="token" if config.class_token else "",
            class_token=config.class_token, final_norm=config.final_norm, drop_path_rate=config.drop_path_rate,
            dynamic_img_size=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if config.mask_token else None
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    def forward(self, images: Tensor, mask: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        """All output tokens for ``images`` (B, 3, H, W).

        mask: optional bool (B, h, w) patch mask; masked patch embeddings become the mask token (before the
            position embedding, as iBOT). keep: optional long (B, n) indices of the patch tokens to keep (after
            the position embedding, as APS); prefix tokens are always kept.
        """
        x = self.vit.patch_embed(images)  # (B, h, w, D) with dynamic_img_size
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this backbone was built without a mask token (BackboneConfig.mask_token)")
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype).view(1, 1, 1, -1), x)
        x = self.vit._pos_embed(x)
        if keep is not None:
            prefix, patches = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([prefix, patches], dim=1)
        x = self.vit.norm_pre(self.vit.patch_drop(x))
        x = self.vit.blocks(x)
        return self.vit.norm(x)

    def patch_tokens(self, images: Tensor) -> Tensor:
        """The last-layer patch tokens of ``images`` (B, 3, H, W) as a map (B, H / p, W / p, D), after the final
        norm where the backbone has one (DINO's ``get_intermediate_layers(x, n=1)`` without its prefix tokens)."""
        tokens = self(images)[:, self.num_prefix_tokens:]
        return tokens.reshape(len(images), images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size,
                              tokens.shape[-1])
