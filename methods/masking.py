"""iBOT's mask sampler and the ``masked_multicrop`` view strategy (multi-crop + a patch mask per global crop).

Follows bytedance/ibot ``loader.py::ImageFolderMask`` (docs/methods.md, iBOT), batched over crops and drawn from the
view strategy's CPU generator, so masks are reproducible and resumable like the crops:

- ratio: per crop, one (mean, var) pair of ``pred_ratio``/``pred_ratio_var`` is picked at random and the ratio
  drawn from U(mean − var, mean + var); the released recipe (0, 0.3) ± (0, 0.2) leaves half the crops unmasked and
  masks the others at U(0.1, 0.5);
- ``block`` (BEiT): rectangles are placed one after another while fewer than ratio·h·w patches are masked; each
  has an area ~ U((min(h, w)//3)², remaining), a log-uniform aspect ratio in ``pred_aspect_ratio``, sides
  strictly smaller than the grid, and is accepted if it adds between 1 and ``remaining`` new patches; after 10
  rejected attempts the crop stops. All crops try their next block at once; drawing all 10 attempts up front
  (only the first accepted one counts) leaves each crop's distribution that of the sequential loop;
- ``rand``: ⌊ratio·h·w⌋ patches chosen uniformly.

lightly's ``random_block_mask`` is not used: it masks exactly half of each batch with ratios stratified over
[0.1, 0.5] (DINOv2's collate), draws from Python's global ``random``, and rounds the target down to an integer.
Masks are drawn for the global crops only (upstream draws them for every crop but uses the globals' only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Views
from .registry import register_view
from .views import MultiCropViews

ATTEMPTS_PER_BLOCK = 10


def sample_mask_ratios(n: int, pred_ratio: tuple[float, ...], pred_ratio_var: tuple[float, ...],
                       generator: torch.Generator) -> Tensor:
    """(n,) float64 ratios: a random (mean, var) pair per crop, then U(mean − var, mean + var)."""
    means = torch.tensor(pred_ratio, dtype=torch.float64)
    spreads = torch.tensor(pred_ratio_var, dtype=torch.float64)
    pick = torch.randint(len(means), (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return means[pick] + spreads[pick] * (2 * u - 1)


def propose_blocks(u: Tensor, remaining: Tensor, height: int, width: int,
                   log_aspect: tuple[float, float]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidate rectangles (top, left, h, w) from uniforms ``u`` (..., 4) and the patches still to mask (...)."""
    low = (min(height, width) // 3) ** 2
    area = low + (remaining - low) * u[..., 0]  # random.uniform(low, remaining), also when remaining < low
    aspect = torch.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * u[..., 1])
    h = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, as Python's round
    w = torch.round(torch.sqrt(area / aspect)).long()
    top = (u[..., 2] * (height - h + 1).clamp(min=1)).long()  # random.randint(0, height − h)
    left = (u[..., 3] * (width - w + 1).clamp(min=1)).long()
    return top, left, h, w


def place_blocks(mask: Tensor, remaining: Tensor, active: Tensor, generator: torch.Generator,
                 log_aspect: tuple[float, float]) -> Tensor:
    """Add one block to every ``active`` crop of ``mask`` (n, h, w) in place; returns the patches added (n,)."""
    n, height, width = mask.shape
    u = torch.rand(n, ATTEMPTS_PER_BLOCK, 4, generator=generator, dtype=torch.float64)
    top, left, h, w = propose_blocks(u, remaining[:, None], height, width, log_aspect)
    rows, cols = torch.arange(height), torch.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < (top + h)[..., None])
    in_cols = (cols >= left[..., None]) & (cols < (left + w)[..., None])
    blocks = in_rows[..., :, None] & in_cols[..., None, :]  # (n, attempts, h, w)
    new = (blocks & ~mask[:, None]).sum((-2, -1))
    accept = (h < height) & (w < width) & (new > 0) & (new <= remaining[:, None]) & active[:, None]
    first = accept.long().argmax(1)  # the first accepted attempt
    placed = accept.any(1)
    rows_n = torch.arange(n)
    mask |= blocks[rows_n, first] & placed[:, None, None]
    return torch.where(placed, new[rows_n, first], 0)


def block_masks(ratios: Tensor, height: int, width: int, generator: torch.Generator,
                aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> Tensor:
    """BEiT block masks (n, height, width) bool with about ``ratios`` (n,) of each grid masked."""
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    target = ratios * height * width
    mask = torch.zeros(len(ratios), height, width, dtype=torch.bool)
    count = torch.zeros(len(ratios), dtype=torch.float64)
    active = count < target
    while active.any():
        added = place_blocks(mask, target - count, active, generator, log_aspect)
        count += added
        active &= (added > 0) & (count < target)
    return mask


def random_masks(ratios: Tensor, height: int, width: int, generator: torch.Generator) -> Tensor:
    """⌊ratio·h·w⌋ uniformly chosen patches per crop (iBOT's ``pred_shape='rand'``)."""
    n_masked = (ratios * height * width).long()
    scores = torch.rand(len(ratios), height * width, generator=generator)
    rank = scores.argsort(1).argsort(1)
    return (rank < n_masked[:, None]).view(len(ratios), height, width)


@register_view("masked_multicrop")
class MaskedMultiCropViews(MultiCropViews):
    """DINO multi-crop (``multicrop``'s settings) plus iBOT's patch masks for the global crops: ``masks``
    (B, n_global, h, w) bool.

    Args:
        pred_ratio: the mean mask ratios, fractions of a global crop's patches; each crop draws one (mean, var)
            pair of ``pred_ratio`` / ``pred_ratio_var`` and its ratio from U(mean ± var) (iBOT: (0, 0.3)).
        pred_ratio_var: the spread of each mean, same unit (iBOT: (0, 0.2)).
        pred_aspect_ratio: (min, max) aspect ratio of a mask block, drawn log-uniformly (iBOT: (0.3, 1/0.3)).
        pred_shape: ``block`` (BEiT rectangles, iBOT's recipe) or ``rand`` (uniformly chosen patches).
    """

    provides = frozenset({"boxes", "flips", "masks"})

    def __init__(self, *, pred_ratio=(0.0, 0.3), pred_ratio_var=(0.0, 0.2), pred_aspect_ratio=(0.3, 1 / 0.3),
                 pred_shape: str = "block", **multicrop):
        super().__init__(**multicrop)
        self.pred_ratio, self.pred_ratio_var = tuple(pred_ratio), tuple(pred_ratio_var)
        if len(self.pred_ratio) != len(self.pred_ratio_var):
            raise ValueError(f"pred_ratio {self.pred_ratio} and pred_ratio_var {self.pred_ratio_var} must have "
                             "the same length (one spread per mean)")
        if any(v < 0 or m - v < 0 or m + v > 1 for m, v in zip(self.pred_ratio, self.pred_ratio_var)):
            raise ValueError(f"every mask ratio range mean ± var must lie in [0, 1]; got pred_ratio "
                             f"{self.pred_ratio} ± pred_ratio_var {self.pred_ratio_var}")
        if pred_shape not in ("block", "rand"):
            raise ValueError(f"pred_shape must be 'block' or 'rand', not '{pred_shape}'")
        self.pred_aspect_ratio, self.pred_shape = tuple(pred_aspect_ratio), pred_shape
        self.grid = self.global_size // self.patch_size

    def sample_masks(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, grid, grid) masks for ``n`` global crops."""
        ratios = sample_mask_ratios(n, self.pred_ratio, self.pred_ratio_var, generator)
        if self.pred_shape == "rand":
            return random_masks(ratios, self.grid, self.grid, generator)
        return block_masks(ratios, self.grid, self.grid, generator, self.pred_aspect_ratio)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Views:
        views = super().__call__(images, generator)
        batch = images.shape[0]
        masks = self.sample_masks(batch * self.n_global, generator).view(batch, self.n_global, self.grid, self.grid)
        views.meta["masks"] = masks.to(images.device)
        return views
