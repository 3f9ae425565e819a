"""View strategies.

``multicrop`` is DINO's multi-crop (``main_dino.py::DataAugmentationDINO``): two global and N local
RandomResizedCrops with horizontal flips and DINO's photometric augmentations, run batched on the training device
with per-sample parameters, and the crop box and flip of every view recorded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Views, ViewStrategy
from .crops import resized_crop, sample_crop_boxes
from .photometric import apply_photometric, blur_kernel_size, sample_photometric
from .registry import register_view


@register_view("multicrop")
class MultiCropViews(ViewStrategy):
    """DINO multi-crop, with boxes (B, V, 4) and flips (B, V) in ``Views.meta``.

    Sizes default to the image size (globals) and half of it (locals), the 224/96 ratio of DINO at 32 px
    (specs/dino.md §9). ``blur_sigma`` is given at DINO's 224 px scale and scaled with each view's size, so the
    blur is the same fraction of the view as in DINO. Per view: blur p (1.0, 0.1, 0.5 for locals) and solarize p
    (0, 0.2, 0 for locals), as DINO.
    """

    provides = frozenset({"boxes", "flips"})

    def __init__(self, *, image_size: int, patch_size: int, mean, std, global_size: int | None = None,
                 local_size: int | None = None, n_local: int = 8, global_scale=(0.4, 1.0),
                 local_scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5, jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1,
                 gray_p: float = 0.2, blur_sigma=(0.1, 2.0), global_blur_p=(1.0, 0.1), local_blur_p: float = 0.5,
                 global_solarize_p=(0.0, 0.2), local_solarize_p: float = 0.0):
        super().__init__(image_size=image_size, patch_size=patch_size, mean=mean, std=std)
        self.global_size = global_size or image_size
        self.local_size = local_size or image_size // 2
        for size in (self.global_size, self.local_size):
            if size % patch_size:
                raise ValueError(f"crop size {size} is not a multiple of the patch size {patch_size}")
        self.n_global, self.n_local = 2, n_local
        self.global_scale, self.local_scale, self.ratio = tuple(global_scale), tuple(local_scale), tuple(ratio)
        self.flip_p = flip_p
        self.jitter = dict(jitter_p=jitter_p, brightness=brightness, contrast=contrast, saturation=saturation,
                           hue=hue, gray_p=gray_p)
        self.blur_sigma = tuple(blur_sigma)
        self.blur_p = list(global_blur_p) + [local_blur_p] * n_local
        self.solarize_p = list(global_solarize_p) + [local_solarize_p] * n_local

    def view_sizes(self) -> list[int]:
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local

    def __call__(self, images: Tensor, generator: torch.Generator) -> Views:
        batch, _, height, width = images.shape
        source = images.float().div_(255)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        crops, boxes, flips = [], [], []
        for v, size in enumerate(self.view_sizes()):
            scale = self.global_scale if v < self.n_global else self.local_scale
            box = sample_crop_boxes(batch, height, width, scale, self.ratio, generator)
            flip = torch.rand(batch, generator=generator) < self.flip_p
            view = resized_crop(source, box, flip, size)
            sigma = tuple(s * size / 224 for s in self.blur_sigma)
            params = sample_photometric(batch, generator, **self.jitter, blur_p=self.blur_p[v], sigma_range=sigma,
                                        solarize_p=self.solarize_p[v])
            view = apply_photometric(view, params, blur_kernel_size(sigma[1], size))
            crops.append((view - mean) / std)
            boxes.append(box)
            flips.append(flip)
        meta = {"boxes": torch.stack(boxes, 1).to(images.device), "flips": torch.stack(flips, 1).to(images.device)}
        return Views(crops=crops, n_global=self.n_global, meta=meta)
