"""APS's views: two crops with asymmetric patch sampling (``augmentation.py``, ``asym_patch_sampling.py``).

Both views: RandomResizedCrop(scale 0.15–1, bilinear) with its box recorded, horizontal flip, colour jitter
(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2; no blur, no solarisation. Then, per image pair
(``get_random_patch_sequence_index_pair``): one random permutation of the g×g patch grid cut into ``n_chunks``
disjoint chunks of ``int(g²·sampling_ratio)`` patches (sparse sampling of view 1); for each chunk, view 2 keeps as
many patches drawn without replacement with weights (1 − coverage)^power, coverage being the share of each view-2
cell covered by the chunk's view-1 cells, in source pixels (selective sampling). ``Views.meta["keep"]`` is
(B, 2, n_chunks, n) patch indices, row-major over the grid.

Batched: the 4 chunks × g² × g² cell overlaps are one tensor product, and sampling without replacement is the
Gumbel-top-k trick, the same distribution as ``numpy.random.choice(replace=False, p)``. Deviations (documented):
where fewer cells than needed have non-zero weight (upstream would raise), the rest are drawn uniformly from the
zero-weight cells and flagged in ``selective_shortfall`` (B, n_chunks); ``g`` is the crop size over the patch size
(upstream hard-codes 16, i.e. 32 px with patch 2). ``track_flip`` (default True) mirrors the grid columns of a
flipped view in the overlap computation; False reproduces upstream, whose box ignores the flip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .crops import sample_crop_boxes
from .photometric import JitterSettings, PhotometricParams, sample_photometric
from .registry import register_view
from .views import CropPipeline


def grid_cells(boxes: Tensor, grid: int) -> Tensor:
    """Source-pixel corners (B, g², 4) = (x1, y1, x2, y2) of each crop's g×g cells, row-major."""
    top, left, height, width = boxes.float().unbind(-1)
    steps = torch.arange(grid + 1, dtype=torch.float32, device=boxes.device) / grid
    ys = top[:, None] + steps * height[:, None]  # (B, g+1)
    xs = left[:, None] + steps * width[:, None]
    y1, y2 = ys[:, :-1, None].expand(-1, grid, grid), ys[:, 1:, None].expand(-1, grid, grid)
    x1, x2 = xs[:, None, :-1].expand(-1, grid, grid), xs[:, None, 1:].expand(-1, grid, grid)
    return torch.stack([x1, y1, x2, y2], dim=-1).flatten(1, 2)


def mirror_columns(index: Tensor, grid: int, flipped: Tensor) -> Tensor:
    """Grid index r·g + c → r·g + (g − 1 − c) where ``flipped`` (B,); ``index`` is (B, …)."""
    mirrored = index - index % grid + (grid - 1 - index % grid)
    return torch.where(flipped.view(-1, *[1] * (index.dim() - 1)), mirrored, index)


def selective_weights(box1: Tensor, box2: Tensor, keep1: Tensor, grid: int, power: float, flip1: Tensor,
                      flip2: Tensor, track_flip: bool) -> Tensor:
    """Sampling weights (B, T, g²) of view 2's patches given view 1's kept patches ``keep1`` (B, T, n).

    ``sample_overlap_less_patches_with_box1``: coverage[j] = Σ_{kept view-1 cells c} area(cell_j ∩ c) / area(cell_j);
    weight = (1 − coverage)^power, with 1 − coverage < 1e-6 set to 0. Indices are the encoder's (the view as
    seen); with ``track_flip`` a flipped view's index maps to its mirrored source cell.
    """
    cells1, cells2 = grid_cells(box1, grid), grid_cells(box2, grid)
    lo = torch.maximum(cells2[:, :, None, :2], cells1[:, None, :, :2])
    hi = torch.minimum(cells2[:, :, None, 2:], cells1[:, None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)  # (B, g², g²): view-2 cell × view-1 cell
    cell2_area = ((cells2[..., 2] - cells2[..., 0]) * (cells2[..., 3] - cells2[..., 1]))[:, :, None]
    fraction = inter / cell2_area
    no_flip = torch.zeros_like(flip1, dtype=torch.bool)
    source1 = mirror_columns(keep1, grid, flip1 if track_flip else no_flip)
    chosen = torch.zeros(*keep1.shape[:2], grid * grid, device=keep1.device).scatter_(2, source1, 1.0)
    remaining = 1 - torch.einsum("bjc,btc->btj", fraction, chosen)
    remaining = torch.where(remaining < 1e-6, torch.zeros_like(remaining), remaining)
    seen2 = mirror_columns(torch.arange(grid * grid, device=keep1.device).expand(len(keep1), -1), grid,
                           flip2 if track_flip else no_flip)  # encoder index e shows source cell seen2[e]
    return remaining.pow(power).gather(2, seen2[:, None].expand_as(remaining))


def sample_without_replacement(weights: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` indices per row of ``weights`` (…, K) drawn without replacement ∝ weights (Gumbel-top-k).

    Zero-weight entries come only after every positive one, uniformly. Returns (indices, shortfall), shortfall
    flagging rows with fewer than ``n`` positive weights.
    """
    uniform = torch.rand(weights.shape, generator=generator).clamp_(min=1e-20).to(weights.device)
    gumbel = -torch.log(-torch.log(uniform))
    positive = weights > 0
    keys = torch.where(positive, weights.clamp(min=1e-30).log() + gumbel, gumbel - 1e4)
    return keys.topk(n, dim=-1).indices, positive.sum(-1) < n


@register_view("aps")
class APSViews(CropPipeline):
    """Two crops with boxes and flips, plus APS's sparse / selective patch indices (``keep``).

    Args:
        size: side of both crops, in pixels, a multiple of the patch size; default the image size (APS: 224).
        scale: (min, max) area of a crop, as a fraction of the image (APS: (0.15, 1)).
        ratio: (min, max) aspect ratio, width / height, of a crop box (torchvision's (3/4, 4/3)).
        flip_p: probability of a horizontal flip, per crop (APS: 0.5).
        jitter_p: probability of colour jitter, per crop (APS: 0.8).
        brightness: colour-jitter brightness factor, unitless (APS: 0.4).
        contrast: colour-jitter contrast factor, unitless (APS: 0.4).
        saturation: colour-jitter saturation factor, unitless (APS: 0.4).
        hue: colour-jitter hue shift, a fraction of the hue circle in [0, 0.5] (APS: 0.1).
        gray_p: probability of converting a crop to grey, per crop (APS: 0.2).
        sampling_ratio: fraction of each view's patches kept per step (APS: 0.25).
        n_chunks: disjoint view-1 chunks drawn per batch, one per optimiser step; must equal the objective's
            ``steps_per_batch`` (APS: 4; the one-step variant sets both to 1).
        power: exponent of (1 − coverage) in the selective-sampling weights of view 2 (APS: 3).
        track_flip: mirror a flipped view's grid columns when computing the coverage (true); false reproduces
            upstream, whose boxes ignore the flip (docs/methods.md, APS, Settings).
    """

    provides = frozenset({"boxes", "flips", "keep", "selective_shortfall"})
    interpolation = "bilinear"

    def __init__(self, *, image_size: int, patch_size: int, mean, std, size: int | None = None,
                 scale=(0.15, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5, jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 gray_p: float = 0.2, sampling_ratio: float = 0.25, n_chunks: int = 4, power: float = 3.0,
                 track_flip: bool = True):
        super().__init__(image_size=image_size, patch_size=patch_size, mean=mean, std=std)
        self.size = size or image_size
        if self.size % patch_size:
            raise ValueError(f"crop size {self.size} is not a multiple of the patch size {patch_size}")
        self.grid = self.size // patch_size
        self.n_keep = int(self.grid ** 2 * sampling_ratio)
        if self.n_keep < 1 or self.n_keep * n_chunks > self.grid ** 2:
            raise ValueError(f"{n_chunks} disjoint chunks of int({self.grid}² · {sampling_ratio}) = {self.n_keep} "
                             f"patches do not fit a {self.grid}×{self.grid} grid; lower sampling_ratio or n_chunks")
        self.n_global, self.n_local = 2, 0
        self.scale, self.ratio, self.flip_p = tuple(scale), tuple(ratio), flip_p
        self.jitter = JitterSettings(jitter_p=jitter_p, brightness=brightness, contrast=contrast, saturation=saturation,
                                     hue=hue, gray_p=gray_p)
        self.n_chunks, self.power, self.track_flip = n_chunks, power, track_flip

    def sample_keep(self, boxes: Tensor, flips: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """keep (B, 2, n_chunks, n) and the selective-sampling shortfall flags (B, n_chunks)."""
        batch, cells = len(boxes), self.grid ** 2
        order = torch.rand(batch, cells, generator=generator).argsort(dim=1)
        keep1 = order[:, :self.n_chunks * self.n_keep].view(batch, self.n_chunks, self.n_keep)
        weights = selective_weights(boxes[:, 0], boxes[:, 1], keep1, self.grid, self.power, flips[:, 0],
                                    flips[:, 1], self.track_flip)
        keep2, shortfall = sample_without_replacement(weights, self.n_keep, generator)
        return torch.stack([keep1, keep2], dim=1), shortfall

    def view_sizes(self) -> list[int]:
        return [self.size, self.size]

    def crop_box(self, v: int, plan: dict[str, Tensor], batch: int, height: int, width: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
        box = sample_crop_boxes(batch, height, width, self.scale, self.ratio, generator)
        return box, torch.rand(batch, generator=generator) < self.flip_p

    def photometric(self, v: int, size: int, batch: int, generator: torch.Generator) -> tuple[PhotometricParams, int]:
        return sample_photometric(batch, generator, **self.jitter, blur_p=0.0), 1  # no blur, no solarisation

    def finish_meta(self, meta: dict[str, Tensor], plan: dict[str, Tensor],
                    generator: torch.Generator) -> dict[str, Tensor]:
        keep, shortfall = self.sample_keep(meta["boxes"], meta["flips"], generator)
        return {**meta, "keep": keep, "selective_shortfall": shortfall}
