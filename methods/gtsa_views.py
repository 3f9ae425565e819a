"""GTSA's views: overlap-constrained multi-crop with four-fold rotations (``util/gtsa_transforms.py``).

Follows ``GTSATransforms`` (after Leopart): 2 global and N local RandomResizedCrops (bilinear, no flip), each crop
redrawn until its overlap with every earlier *global* crop exceeds ``int(0.01·H·W)`` pixels² (twice that for the
second global); colour jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale p 0.2, Gaussian blur p 0.2; then a rotation by
k·90° counter-clockwise, k ~ U{0..3}. ``Views.meta``: ``boxes`` (B, V, 4) = (top, left, height, width) in source
pixels, ``rotations`` (B, V) = k, ``overlap_fallback`` (B, V) bool.

Batched: only the failing rows are redrawn, at most ``max_redraws`` times. Deviation (documented): upstream loops
without a cap; rows still failing after the cap (never seen at the defaults) take the fallback box, the
intersection of the earlier globals, which satisfies the constraint by construction, and are flagged in
``overlap_fallback``. The blur σ (given at 224 px) is scaled with each view's size, as ``multicrop`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .crops import multicrop_sizes, sample_crop_boxes
from .photometric import JitterSettings, PhotometricParams, blur_kernel_size, sample_photometric
from .registry import register_view
from .views import CropPipeline


def to_corners(boxes: Tensor) -> Tensor:
    """(…, 4) (top, left, height, width) → (…, 4) (x1, y1, x2, y2)."""
    top, left, height, width = boxes.unbind(-1)
    return torch.stack([left, top, left + width, top + height], dim=-1)


def intersect(a: Tensor, b: Tensor) -> Tensor:
    """Intersection of (x1, y1, x2, y2) boxes; an empty one collapses to zero size (x2 = x1, y2 = y1)."""
    x1, y1 = torch.maximum(a[..., 0], b[..., 0]), torch.maximum(a[..., 1], b[..., 1])
    x2, y2 = torch.minimum(a[..., 2], b[..., 2]), torch.minimum(a[..., 3], b[..., 3])
    return torch.stack([x1, y1, torch.maximum(x2, x1), torch.maximum(y2, y1)], dim=-1)


def area(corners: Tensor) -> Tensor:
    return (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])


def rotate_boxes(corners: Tensor, quarter_turns: Tensor, size: float) -> Tensor:
    """Boxes (…, 4) in an S×S crop's frame → the same boxes after rotating the crop k·90° counter-clockwise.

    ``rotate_bbox`` of ``util/gtsa_transforms.py``: 90° maps (x1, y1, x2, y2) to
    (y1, S−x2, y2, S−x1); 180° and 270° are its powers.
    """
    x1, y1, x2, y2 = corners.unbind(-1)
    s = size
    options = torch.stack([torch.stack(c, dim=-1) for c in (
        (x1, y1, x2, y2), (y1, s - x2, y2, s - x1), (s - x2, s - y2, s - x1, s - y1), (s - y2, x1, s - y1, x2))])
    k = (quarter_turns.long() % 4).to(corners.device).expand(corners.shape[:-1])
    return options.gather(0, k.unsqueeze(-1).expand(corners.shape).unsqueeze(0)).squeeze(0)


def overlap_in_crop_frame(crop: Tensor, other: Tensor, crop_size: int, quarter_turns: Tensor) -> Tensor:
    """The overlap of ``crop`` and ``other`` ((…, 4) source boxes, top/left/h/w) in ``crop``'s rotated pixel frame.

    ``calculate_bboxes``: intersect in source pixels, shift to the crop's origin, scale to its output size, then
    ``rotate_bbox`` by the crop's own rotation. Returns (…, 4) (x1, y1, x2, y2) in crop pixels.
    """
    inter = intersect(to_corners(crop), to_corners(other))
    top, left, height, width = crop.unbind(-1)
    origin = torch.stack([left, top, left, top], dim=-1)
    scale = torch.stack([crop_size / width, crop_size / height] * 2, dim=-1)
    return rotate_boxes((inter - origin) * scale, quarter_turns, crop_size)


def sample_overlapping_boxes(batch: int, height: int, width: int, scales: list[tuple[float, float]],
                             ratio: tuple[float, float], n_global: int, generator: torch.Generator,
                             max_redraws: int = 100) -> tuple[Tensor, Tensor]:
    """Crop boxes (B, V, 4) satisfying GTSA's overlap constraint, and the fallback flags (B, V)."""
    threshold = int(0.01 * height * width)
    boxes: list[Tensor] = []
    fallbacks: list[Tensor] = []
    for v, scale in enumerate(scales):
        box = sample_crop_boxes(batch, height, width, scale, ratio, generator)
        earlier = [to_corners(g) for g in boxes[:min(v, n_global)]]
        need = threshold * (2 if v < n_global else 1)

        def failing(candidates: Tensor, rows: Tensor) -> Tensor:
            corners = to_corners(candidates)
            ok = torch.stack([area(intersect(corners, g[rows])) > need for g in earlier]).all(0)
            return rows[~ok]

        rows = failing(box, torch.arange(batch)) if earlier else torch.empty(0, dtype=torch.long)
        for _ in range(max_redraws):
            if rows.numel() == 0:
                break
            box[rows] = sample_crop_boxes(rows.numel(), height, width, scale, ratio, generator)
            rows = failing(box[rows], rows)
        fallback = torch.zeros(batch, dtype=torch.bool)
        if rows.numel():
            common = earlier[0][rows]
            for g in earlier[1:]:
                common = intersect(common, g[rows])
            x1, y1, x2, y2 = common.unbind(-1)
            box[rows] = torch.stack([y1, x1, y2 - y1, x2 - x1], dim=-1)
            fallback[rows] = True
        boxes.append(box)
        fallbacks.append(fallback)
    return torch.stack(boxes, 1), torch.stack(fallbacks, 1)


def rotate_quarter_turns(x: Tensor, quarter_turns: Tensor) -> Tensor:
    """Rotate each sample of ``x`` (B, C, S, S) by its own k·90° counter-clockwise (``torch.rot90``, dims (-2, -1))."""
    k = (quarter_turns.long() % 4).to(x.device)
    out = x
    for turns in range(1, 4):
        out = torch.where((k == turns).view(-1, *[1] * (x.dim() - 1)), torch.rot90(x, turns, dims=(-2, -1)), out)
    return out


@register_view("gtsa")
class GTSAViews(CropPipeline):
    """Overlap-constrained multi-crop with four-fold rotations; provides ``boxes``, ``rotations``.

    Args:
        global_size: side of the two global crops, in pixels; default the image size (GTSA: 224).
        local_size: side of each local crop, in pixels; default half the image size, rounded to the patch size
            (GTSA: 96).
        n_local: local crops per image (GTSA: 8).
        global_scale: (min, max) area of a global crop, as a fraction of the image (GTSA: (0.3, 1)).
        local_scale: (min, max) area of a local crop, as a fraction of the image (GTSA: (0.1, 0.3)).
        ratio: (min, max) aspect ratio, width / height, of a crop box (torchvision's (3/4, 4/3)).
        jitter_p: probability of colour jitter, per crop (GTSA: 0.8).
        brightness: colour-jitter brightness factor, unitless (GTSA: 0.8).
        contrast: colour-jitter contrast factor, unitless (GTSA: 0.8).
        saturation: colour-jitter saturation factor, unitless (GTSA: 0.8).
        hue: colour-jitter hue shift, a fraction of the hue circle in [0, 0.5] (GTSA: 0.2).
        gray_p: probability of converting a crop to grey, per crop (GTSA: 0.2).
        blur_p: Gaussian-blur probability, per crop (GTSA: 0.2).
        blur_sigma: (min, max) blur σ in pixels at 224 px, scaled with each view's size (GTSA: (0.1, 2)).
        rotate: turn each crop by a random multiple of 90° counter-clockwise (GTSA: true); false keeps every crop
            upright (rotations all 0).
        max_redraws: redraws of a crop box that misses the overlap constraint before the fallback box is taken
            (upstream redraws without a cap; docs/methods.md, GTSA, Deviations).
    """

    provides = frozenset({"boxes", "rotations", "overlap_fallback"})
    interpolation = "bilinear"

    def __init__(self, *, image_size: int, patch_size: int, mean, std, global_size: int | None = None,
                 local_size: int | None = None, n_local: int = 8, global_scale=(0.3, 1.0), local_scale=(0.1, 0.3),
                 ratio=(3 / 4, 4 / 3), jitter_p: float = 0.8, brightness: float = 0.8, contrast: float = 0.8,
                 saturation: float = 0.8, hue: float = 0.2, gray_p: float = 0.2, blur_p: float = 0.2,
                 blur_sigma=(0.1, 2.0), rotate: bool = True, max_redraws: int = 100):
        super().__init__(image_size=image_size, patch_size=patch_size, mean=mean, std=std)
        self.global_size, self.local_size = multicrop_sizes(image_size, patch_size, global_size, local_size)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter {hue} must lie in [0, 0.5]")
        self.n_global, self.n_local = 2, n_local
        self.global_scale, self.local_scale, self.ratio = tuple(global_scale), tuple(local_scale), tuple(ratio)
        self.jitter = JitterSettings(jitter_p=jitter_p, brightness=brightness, contrast=contrast, saturation=saturation,
                                     hue=hue, gray_p=gray_p)
        self.blur_p, self.blur_sigma = blur_p, tuple(blur_sigma)
        self.rotate, self.max_redraws = rotate, max_redraws

    def view_sizes(self) -> list[int]:
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local

    def plan(self, batch: int, height: int, width: int, generator: torch.Generator) -> dict[str, Tensor]:
        scales = [self.global_scale] * self.n_global + [self.local_scale] * self.n_local
        boxes, fallback = sample_overlapping_boxes(batch, height, width, scales, self.ratio, self.n_global,
                                                   generator, self.max_redraws)
        return {"boxes": boxes, "overlap_fallback": fallback}

    def crop_box(self, v: int, plan: dict[str, Tensor], batch: int, height: int, width: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return plan["boxes"][:, v], torch.zeros(batch, dtype=torch.bool)  # GTSA does not flip

    def photometric(self, v: int, size: int, batch: int, generator: torch.Generator) -> tuple[PhotometricParams, int]:
        sigma = tuple(s * size / 224 for s in self.blur_sigma)
        params = sample_photometric(batch, generator, **self.jitter, blur_p=self.blur_p, sigma_range=sigma)
        return params, blur_kernel_size(sigma[1], size)

    def after_view(self, v: int, view: Tensor, record: dict[str, list[Tensor]], generator: torch.Generator) -> Tensor:
        """A rotation by k·90°, k ~ U{0..3} (U{0} without ``rotate``); normalisation commutes with it."""
        turns = torch.randint(0, 4 if self.rotate else 1, (len(view),), generator=generator)
        record.setdefault("rotations", []).append(turns)
        return rotate_quarter_turns(view, turns)

    def finish_meta(self, meta: dict[str, Tensor], plan: dict[str, Tensor],
                    generator: torch.Generator) -> dict[str, Tensor]:
        return {"boxes": meta["boxes"], "rotations": meta["rotations"], "overlap_fallback": plan["overlap_fallback"]}
