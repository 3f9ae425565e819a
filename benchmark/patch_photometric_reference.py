"""Slow per-cell reference for methods/patch_photometric.py: torchvision's own ops, one cell at a time.

The independent expectation of tests/methods/test_patch_photometric.py and the baseline of ``speed patch-aug``.

Transcribes ``image_to_patches.py::PatchAugmentation`` (``alijavidani/dino@imagenet100-patch_augmentation``) on
tensors: cut each view into p×p cells, run the cell's ops in its drawn order through
``torchvision.transforms.v2.functional`` with the cell's drawn parameters, paste the cells back. Only the parameter
draw and the float↔uint8 conversions are shared with the batched code; this is the independent expectation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

JITTER, BLUR, SHARPNESS, POSTERIZE = range(4)


def _blur(cell: torch.Tensor, sigma: float, small_patch_blur: str) -> torch.Tensor:
    """``GaussianBlur(kernel_size=(1, 5))``; under 3 rows torchvision cannot reflect-pad, so pad as chosen."""
    if cell.shape[-2] >= 3:
        return TF.gaussian_blur(cell, kernel_size=[1, 5], sigma=[sigma, sigma])
    if small_patch_blur == "skip":
        return cell
    rows = cell.shape[-2]
    padded = F.pad(cell[None], (0, 0, 2, 2), mode="replicate")[0]
    return TF.gaussian_blur(padded, kernel_size=[1, 5], sigma=[sigma, sigma])[..., 2:2 + rows, :]


def _posterize(cell: torch.Tensor, bits: int) -> torch.Tensor:
    as_uint8 = cell.mul(255).round().to(torch.uint8)
    return TF.posterize(as_uint8, bits).to(cell.dtype) / 255


def augment_cell(cell: torch.Tensor, params, i: int, *, sharpness_factor: float = 2.0, posterize_bits: int = 3,
                 small_patch_blur: str = "replicate") -> torch.Tensor:
    """Cell ``i``'s composition, op by op in ``params.order[i]``."""
    for op in params.order[i].tolist():
        if op == JITTER:
            sub_ops = [lambda c: TF.adjust_brightness(c, params.brightness[i].item()),
                       lambda c: TF.adjust_hue(c, params.hue[i].item())]
            for sub_op in (reversed(sub_ops) if params.hue_first[i] else sub_ops):
                cell = sub_op(cell)
        elif op == BLUR:
            cell = _blur(cell, params.sigma[i].item(), small_patch_blur)
        elif op == SHARPNESS and params.use_sharpness[i]:
            cell = TF.adjust_sharpness(cell, sharpness_factor)
        elif op == POSTERIZE and params.use_posterize[i]:
            cell = _posterize(cell, posterize_bits)
        cell = cell.clamp(0, 1)
    return cell


def reference_patch_photometric(x: torch.Tensor, patch_size: int, params, **options) -> torch.Tensor:
    """Loop over views and cells (row-major), as upstream's ``image_to_patches`` / ``patches_to_image``."""
    p = patch_size
    out = x.mul(255).round().div(255)
    i = 0
    for view in out:
        for top in range(0, x.shape[-2], p):
            for left in range(0, x.shape[-1], p):
                view[:, top:top + p, left:left + p] = augment_cell(view[:, top:top + p, left:left + p].clone(),
                                                                    params, i, **options)
                i += 1
    return out
