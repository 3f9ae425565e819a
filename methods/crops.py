"""Batched RandomResizedCrop + horizontal flip with the geometry recorded.

The crop parameters follow torchvision's ``RandomResizedCrop.get_params`` (10 attempts of area ~ U(scale),
log-aspect ~ U(log ratio), integer sizes and offsets, centre-crop fallback), drawn for a whole batch at once from
a CPU generator. The pixels are resampled with one ``grid_sample`` call per view, flips folded into the sampling
grid. Boxes are (top, left, height, width) in source-image pixels, as Patch-Wise's patched torchvision records
them (``augment.py::augmented_crop``).

Deviation (documented): torchvision crops then resizes with antialiasing; ``grid_sample`` does not antialias and,
at a crop's edge, its bicubic kernel reads the real neighbouring source pixels instead of replicating the edge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def multicrop_sizes(image_size: int, patch_size: int, global_size: int | None,
                    local_size: int | None) -> tuple[int, int]:
    """(global, local) crop sides: by default the image size and half of it (DINO's 224/96 ratio at small sizes),
    each a multiple of the patch size."""
    sizes = (global_size or image_size, local_size or image_size // 2)
    for size in sizes:
        if size % patch_size:
            raise ValueError(f"crop size {size} is not a multiple of the patch size {patch_size}")
    return sizes


def sample_crop_boxes(batch_size: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator, attempts: int = 10) -> Tensor:
    """Integer boxes (B, 4) = (top, left, height, width), torchvision's RandomResizedCrop.get_params, batched."""
    area = height * width
    target_area = area * torch.empty(batch_size, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(batch_size, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                           generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    u_top = torch.rand(batch_size, attempts, generator=generator)
    u_left = torch.rand(batch_size, attempts, generator=generator)
    top = torch.floor(u_top * (height - h + 1))
    left = torch.floor(u_left * (width - w + 1))
    first = torch.argmax(valid.int(), dim=1)  # first valid attempt (0 if none, handled below)
    def pick(t: Tensor) -> Tensor:
        return t.gather(1, first[:, None]).squeeze(1)

    boxes = torch.stack([pick(top), pick(left), pick(h), pick(w)], dim=1)

    # Fallback when no attempt is valid: a centre crop with the aspect ratio clamped into `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=boxes.dtype)
    return torch.where(valid.any(dim=1, keepdim=True), boxes, fallback)


def resized_crop(images: Tensor, boxes: Tensor, flips: Tensor, size: int, mode: str = "bicubic") -> Tensor:
    """Crop ``boxes`` (B, 4) out of ``images`` (B, C, H, W), resize to ``size``, mirror where ``flips``.

    Output pixel centres map to source pixel centres as in ``F.interpolate(align_corners=False)`` on the crop.
    """
    batch, _, height, width = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, box_h, box_w = boxes.unbind(1)
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size  # (S,)
    xs = left[:, None] + steps[None] * box_w[:, None]  # (B, S) source x of each output column
    xs = torch.where(flips.to(images.device)[:, None], xs.flip(1), xs)
    ys = top[:, None] + steps[None] * box_h[:, None]
    grid_x = (xs / width * 2 - 1)[:, None, :].expand(batch, size, size)
    grid_y = (ys / height * 2 - 1)[:, :, None].expand(batch, size, size)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    out = F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 1) if mode == "bicubic" else out
