"""View strategies.

``multicrop`` is DINO's multi-crop (``main_dino.py::DataAugmentationDINO``): two global and N local
RandomResizedCrops with horizontal flips and DINO's photometric augmentations, run batched on the training device
with per-sample parameters, and the crop box and flip of every view recorded. ``patchwise`` adds Patch-Wise SSL's
per-patch photometric augmentation after them (``image_to_patches.py::PatchAugmentation``). ``CropPipeline`` is
the crop → photometric → normalise loop that these, ``masked_multicrop``, ``gtsa`` and ``aps`` share, with hooks
for what each adds.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

import torch
from torch import Tensor

from .base import Views, ViewStrategy, equal_size_runs
from .crops import multicrop_sizes, resized_crop, sample_crop_boxes
from .patch_photometric import patch_photometric
from .photometric import JitterSettings, PhotometricParams, apply_photometric, blur_kernel_size, sample_photometric
from .registry import register_view


class CropPipeline(ViewStrategy):
    """The pipeline every view strategy here shares: per view, a crop box (and flip) → resized crop →
    photometric augmentation → :meth:`after_view`; then :meth:`finish_views` on all views in [0, 1]; then the
    normalisation; then :meth:`finish_meta` on the recorded geometry.

    Subclasses set ``n_global``/``n_local`` and implement :meth:`view_sizes` and the hooks they change. The hooks
    draw from the step's generator in a fixed order (geometry plan, then per view: box, flip, photometric, the
    ``after_view`` draws; then ``finish_views``, then ``finish_meta``), so the views are a pure function of it.
    """

    interpolation: ClassVar[str] = "bicubic"

    @property
    def shared_geometry(self) -> bool:
        """One geometry for the whole batch (``Views.shared_geometry``); by default each sample draws its own."""
        return False

    def view_sizes(self) -> list[int]:
        raise NotImplementedError

    def plan(self, batch: int, height: int, width: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Geometry drawn for all views at once, before any view is made (GTSA's overlap-constrained boxes)."""
        return {}

    def crop_box(self, v: int, plan: dict[str, Tensor], batch: int, height: int, width: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """View ``v``'s boxes (B, 4) = (top, left, height, width) in source pixels and flips (B,) bool."""
        raise NotImplementedError

    def photometric(self, v: int, size: int, batch: int, generator: torch.Generator) -> tuple[PhotometricParams, int]:
        """View ``v``'s photometric parameters (one row per sample) and blur kernel size."""
        raise NotImplementedError

    def after_view(self, v: int, view: Tensor, record: dict[str, list[Tensor]], generator: torch.Generator) -> Tensor:
        """Hook on each augmented view in [0, 1]; may append per-view tensors (B,) to ``record``."""
        return view

    def finish_views(self, views: list[Tensor], generator: torch.Generator) -> list[Tensor]:
        """Hook on the augmented views in [0, 1], before normalisation, once every view's geometry is drawn."""
        return views

    def finish_meta(self, meta: dict[str, Tensor], plan: dict[str, Tensor],
                    generator: torch.Generator) -> dict[str, Tensor]:
        """Hook on ``Views.meta`` (the recorded per-view tensors stacked to (B, V, …)) after the views are made."""
        return meta

    def __call__(self, images: Tensor, generator: torch.Generator) -> Views:
        batch, _, height, width = images.shape
        source = images.float().div_(255)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        plan = self.plan(batch, height, width, generator)
        crops: list[Tensor] = []
        record: dict[str, list[Tensor]] = {"boxes": [], "flips": []}
        for v, size in enumerate(self.view_sizes()):
            box, flip = self.crop_box(v, plan, batch, height, width, generator)
            view = resized_crop(source, box, flip, size, mode=self.interpolation)
            params, kernel_size = self.photometric(v, size, batch, generator)
            crops.append(self.after_view(v, apply_photometric(view, params, kernel_size), record, generator))
            record["boxes"].append(box)
            record["flips"].append(flip)
        crops = [(view - mean) / std for view in self.finish_views(crops, generator)]
        meta = self.finish_meta({key: torch.stack(values, 1) for key, values in record.items()}, plan, generator)
        return Views(crops=crops, n_global=self.n_global, meta={k: m.to(images.device) for k, m in meta.items()},
                     shared_geometry=self.shared_geometry)


@register_view("multicrop")
class MultiCropViews(CropPipeline):
    """DINO multi-crop, with boxes (B, V, 4) and flips (B, V) in ``Views.meta``.

    Sizes default to the image size (globals) and half of it (locals), the 224/96 ratio of DINO at 32 px
    (docs/methods.md, DINO). ``blur_sigma`` is given at DINO's 224 px scale and scaled with each view's size, so the
    blur is the same fraction of the view as in DINO. Per view: blur p (1.0, 0.1, 0.5 for locals) and solarize p
    (0, 0.2, 0 for locals), as DINO.

    ``same_batch_geometry`` reproduces the official Patch-Wise main branch (``augment.py::collate_function``): one
    draw per view for the whole batch, so every image of a batch gets the same boxes, flips and photometric
    parameters. It makes matching computable once per batch but removes augmentation diversity within a batch
    (B images share one view geometry), which is why per-sample draws are the default.

    Args:
        global_size: side of the two global crops, in pixels; default the image size (DINO: 224).
        local_size: side of each local crop, in pixels; default half the image size, rounded to the patch size
            (DINO: 96).
        n_local: local crops per image (DINO: 8; iBOT, SelfPatch: 10; the demo matrices use 4–6).
        global_scale: (min, max) area of a global crop, as a fraction of the image (RandomResizedCrop's
            ``scale``; DINO: (0.4, 1); iBOT, SelfPatch: (0.25, 1)).
        local_scale: (min, max) area of a local crop, as a fraction of the image (DINO: (0.05, 0.4); iBOT,
            SelfPatch: (0.05, 0.25)).
        ratio: (min, max) aspect ratio, width / height, of a crop box (torchvision's (3/4, 4/3)).
        flip_p: probability of a horizontal flip, per crop (DINO: 0.5).
        jitter_p: probability of colour jitter, per crop (DINO: 0.8).
        brightness: colour-jitter brightness factor, unitless (ColorJitter's; DINO: 0.4).
        contrast: colour-jitter contrast factor, unitless (DINO: 0.4).
        saturation: colour-jitter saturation factor, unitless (DINO: 0.2).
        hue: colour-jitter hue shift, a fraction of the hue circle in [0, 0.5] (DINO: 0.1).
        gray_p: probability of converting a crop to grey, per crop (DINO: 0.2).
        blur_sigma: (min, max) Gaussian-blur σ in pixels at 224 px, scaled with each view's size (DINO: (0.1, 2)).
        global_blur_p: blur probability of the first and of the second global crop (DINO: (1.0, 0.1)).
        local_blur_p: blur probability of each local crop (DINO: 0.5).
        global_solarize_p: solarisation probability of the first and of the second global crop (DINO: (0, 0.2)).
        local_solarize_p: solarisation probability of each local crop (DINO: 0).
        same_batch_geometry: one draw of boxes, flips and photometric parameters per view for the whole batch,
            as Patch-Wise's main branch; default false, per-sample draws. Ablation: ``same-batch``
            (benchmark/matrices/ablation-patchwise.yaml).
    """

    provides = frozenset({"boxes", "flips"})

    def __init__(self, *, image_size: int, patch_size: int, mean, std, global_size: int | None = None,
                 local_size: int | None = None, n_local: int = 8, global_scale=(0.4, 1.0),
                 local_scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5, jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1,
                 gray_p: float = 0.2, blur_sigma=(0.1, 2.0), global_blur_p=(1.0, 0.1), local_blur_p: float = 0.5,
                 global_solarize_p=(0.0, 0.2), local_solarize_p: float = 0.0, same_batch_geometry: bool = False):
        super().__init__(image_size=image_size, patch_size=patch_size, mean=mean, std=std)
        self.global_size, self.local_size = multicrop_sizes(image_size, patch_size, global_size, local_size)
        self.n_global, self.n_local = 2, n_local
        self.global_scale, self.local_scale, self.ratio = tuple(global_scale), tuple(local_scale), tuple(ratio)
        self.flip_p = flip_p
        self.jitter = JitterSettings(jitter_p=jitter_p, brightness=brightness, contrast=contrast, saturation=saturation,
                                     hue=hue, gray_p=gray_p)
        self.blur_sigma = tuple(blur_sigma)
        self.blur_p = list(global_blur_p) + [local_blur_p] * n_local
        self.solarize_p = list(global_solarize_p) + [local_solarize_p] * n_local
        self.same_batch_geometry = same_batch_geometry

    @property
    def shared_geometry(self) -> bool:
        return self.same_batch_geometry

    def view_sizes(self) -> list[int]:
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local

    def draws(self, batch: int) -> int:
        """Independent draws per view: one per sample, or one for the whole batch in same-batch mode."""
        return 1 if self.same_batch_geometry else batch

    def crop_box(self, v: int, plan: dict[str, Tensor], batch: int, height: int, width: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        scale = self.global_scale if v < self.n_global else self.local_scale
        draws = self.draws(batch)
        box = sample_crop_boxes(draws, height, width, scale, self.ratio, generator).expand(batch, 4)
        return box, (torch.rand(draws, generator=generator) < self.flip_p).expand(batch)

    def photometric(self, v: int, size: int, batch: int, generator: torch.Generator) -> tuple[PhotometricParams, int]:
        sigma = tuple(s * size / 224 for s in self.blur_sigma)
        params = sample_photometric(self.draws(batch), generator, **self.jitter, blur_p=self.blur_p[v],
                                    sigma_range=sigma, solarize_p=self.solarize_p[v])
        if self.same_batch_geometry:
            params = PhotometricParams(**{f.name: _repeat(getattr(params, f.name), batch) for f in fields(params)})
        return params, blur_kernel_size(sigma[1], size)


def _repeat(draw: Tensor, batch: int) -> Tensor:
    """One sample's parameters repeated for the whole batch."""
    return draw.expand(batch, *draw.shape[1:]).contiguous()


@register_view("patchwise")
class PatchWiseViews(MultiCropViews):
    """Multi-crop with geometry, then Patch-Wise's per-patch photometric augmentation on every view.

    Follows ``alijavidani/dino@imagenet100-patch_augmentation`` (``image_to_patches.py::PatchAugmentation``):
    every ViT patch of every view, globals and locals, gets its own random jitter/blur/sharpness/posterize, after
    DINO's image-level augmentations and before normalisation. ``patch_augmentation=False`` is the
    official main branch (no per-patch augmentation). In same-batch mode the per-patch draws stay independent
    (inferred: the only code with the per-patch augmentation draws per sample).

    Args:
        patch_augmentation: give every ViT patch its own jitter/blur/sharpness/posterize (true, as the
            ``imagenet100-patch_augmentation`` branch); false is the main branch. Ablation: ``no-patch-aug``
            (benchmark/matrices/ablation-patchwise.yaml).
        small_patch_blur: how the vertical 1×5 blur treats patches under 3 pixels tall, which torchvision cannot
            reflect-pad: ``replicate`` (pad by edge replication) or ``skip`` (leave them unblurred); upstream's
            16 px patches never meet the case (methods/patch_photometric.py).
    """

    def __init__(self, *, patch_augmentation: bool = True, small_patch_blur: str = "replicate", **kwargs):
        super().__init__(**kwargs)
        self.patch_augmentation = patch_augmentation
        self.small_patch_blur = small_patch_blur  # patches < 3 px: the 1×5 blur's padding (patch_photometric.py)

    def finish_views(self, views: list[Tensor], generator: torch.Generator) -> list[Tensor]:
        """Every view gets its own per-patch draws; one batched call per run of equal-size views. Drawn after
        the geometry, so switching the augmentation off leaves the crops, boxes and flips unchanged."""
        if not self.patch_augmentation:
            return views
        out: list[Tensor] = []
        for start, end in equal_size_runs(views):
            augmented = patch_photometric(torch.cat(views[start:end]), self.patch_size, generator,
                                          small_patch_blur=self.small_patch_blur)
            out.extend(augmented.chunk(end - start))
        return out
