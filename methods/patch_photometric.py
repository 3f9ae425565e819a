"""Patch-Wise's per-patch photometric augmentation, batched over every cell of every view.

Follows ``alijavidani/dino@imagenet100-patch_augmentation``, ``image_to_patches.py::PatchAugmentation`` with
``patch_size=(p, p), num_transformations=4`` (docs/methods.md, Patch-Wise SSL). Every p×p cell of a view gets its own
composition of four torchvision ops, in a uniformly random order per cell, each with its own parameters:

0. ``ColorJitter(brightness=0.1, hue=0.1)``: factor ~ U(0.9, 1.1), hue shift ~ U(−0.1, 0.1), brightness and hue
   in a random order per cell (ColorJitter permutes its sub-ops);
1. ``GaussianBlur(kernel_size=(1, 5), sigma=(0.1, 2))``: torchvision reads (kx, ky), so a 5-tap **vertical**
   blur, σ ~ U(0.1, 2), reflect-padded inside the cell (torchvision pads each image it blurs);
2. ``RandomAdjustSharpness(2)``: with p = 0.5, the 3×3 smoothing kernel, the cell's border pixels kept;
3. ``RandomPosterize(3)``: with p = 0.5, the top 3 bits of the uint8 value kept.

Batched form: the cells of a (B, 3, H, W) batch become channel planes (3, B·H/p·W/p, p, p), row-major per
view as upstream. Each of the 4 stages reorders the cells by the op their permutation names there (and whether it
was drawn), then runs each op once, in place, on its contiguous slice; a final gather restores the order. The blur
is one (p, p) matrix per cell (taps and padding folded), applied as a batched matmul; the hue uses the closed form
of HSV → RGB. Parameters stay on the CPU; only index and parameter vectors go to the device, without a sync.

Deviations and choices (inferred from the upstream code; docs/methods.md, Patch-Wise SSL):

- Upstream works on PIL uint8 images, so every op rounds to uint8. Here the input is quantised once to uint8 levels
  (``round(255·x)/255``) and the ops run in float, as torchvision's tensor kernels; posterize rounds to uint8 before
  masking. Outputs differ from a PIL run by about 1/255 per op (PIL's hue also works on uint8 HSV).
- The 5-tap reflect padding needs p ≥ 3. For p < 3 (e.g. APS-style 2-pixel grids) ``small_patch_blur`` picks
  ``"replicate"`` padding (default) or ``"skip"`` (no blur); torchvision itself would raise. For p ≤ 2 the
  sharpness op is the identity (every pixel is a border pixel), as in torchvision.
- The blur matmul runs in TF32 on CUDA if the caller enabled TF32 matmuls (``torch.set_float32_matmul_precision``),
  an error of about 1e-3 of a value, well under a uint8 level.
- Parameters are drawn on the CPU from the step's generator (``sample_patch_photometric``), so a step's
  augmentation is a pure function of the generator state; upstream draws from Python's ``random`` and torch's
  global generator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .photometric import _to

JITTER, BLUR, SHARPNESS, POSTERIZE = range(4)
BLUR_TAPS = 5
SmallPatchBlur = Literal["replicate", "skip"]


@dataclass
class PatchPhotometricParams:
    """Per-cell parameters, cells ordered (view, row, column). ``order`` (N, 4) is a permutation of the op ids
    ``JITTER, BLUR, SHARPNESS, POSTERIZE`` (stage s applies ``order[:, s]``); the others are (N,). ``hue_first`` is
    the jitter's sub-order; ``use_sharpness`` / ``use_posterize`` are the p = 0.5 draws."""

    order: Tensor
    hue_first: Tensor
    brightness: Tensor
    hue: Tensor
    sigma: Tensor
    use_sharpness: Tensor
    use_posterize: Tensor

    def __len__(self) -> int:
        return self.order.shape[0]

    def to(self, device: torch.device | str) -> "PatchPhotometricParams":
        return PatchPhotometricParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def sample_patch_photometric(n_cells: int, generator: torch.Generator, *, brightness: float = 0.1,
                             hue: float = 0.1, sigma_range: tuple[float, float] = (0.1, 2.0),
                             sharpness_p: float = 0.5, posterize_p: float = 0.5) -> PatchPhotometricParams:
    """Draw every cell's parameters from a CPU ``generator`` (ranges as upstream's torchvision transforms)."""

    def uniform(low: float, high: float) -> Tensor:
        return torch.empty(n_cells).uniform_(low, high, generator=generator)

    def coin(p: float) -> Tensor:
        return torch.rand(n_cells, generator=generator) < p

    return PatchPhotometricParams(
        order=torch.rand(n_cells, 4, generator=generator).argsort(dim=1),
        hue_first=coin(0.5),
        brightness=uniform(max(0.0, 1 - brightness), 1 + brightness),
        hue=uniform(-hue, hue),
        sigma=uniform(*sigma_range),
        use_sharpness=coin(sharpness_p),
        use_posterize=coin(posterize_p),
    )


def to_cells(x: Tensor, p: int) -> Tensor:
    """(B, 3, H, W) → channel planes of cells (3, B·H/p·W/p, p, p), cells row-major per image.

    Channels lead so that the R, G and B planes the hue op works on are contiguous."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(1, 0, 2, 4, 3, 5).reshape(c, -1, p, p)


def from_cells(cells: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of ``to_cells`` for an image batch of ``shape``."""
    b, c, h, w = shape
    p = cells.shape[-1]
    return cells.reshape(c, b, h // p, w // p, p, p).permute(1, 0, 2, 4, 3, 5).reshape(b, c, h, w)


def _per_cell(values: Tensor, cells: Tensor) -> Tensor:
    """(n,) → (1, n, 1, 1) of the cells' dtype and device."""
    return _to(values.to(cells.dtype), cells.device).view(1, -1, 1, 1)


def _is_max(channel: Tensor, maxc: Tensor) -> Tensor:
    """1.0 where ``channel`` is the max, else 0.0 (sign arithmetic: several times faster than a bool mask on CPU)."""
    return (channel - maxc).sign_().add_(1.0)


# Per RGB channel (centre c, slope a, offset b): Y = clamp(b + a·|6H − c|, 0, 1) is how far the channel sits below V,
# in units of the chroma, on the hue circle (the standard closed form of HSV → RGB).
_HUE_RAMPS = torch.tensor([[3.0, -1.0, 2.0], [2.0, 1.0, -1.0], [4.0, 1.0, -1.0]])


def rotate_hue(cells: Tensor, shift: Tensor, gain: Tensor, out: Tensor) -> Tensor:
    """torchvision's ``adjust_hue`` (HSV after Pillow) with a per-cell ``shift`` in turns, times a per-cell ``gain``,
    written to ``out`` (which may be ``cells``).

    The hue is torchvision's ``_rgb_to_hsv`` (sextant of the max channel, R before G before B); back to RGB with the
    closed form channel = V − C·Y(6H), C = V·S = max − min, instead of the sextant gather: equal up to float
    rounding, in a few broadcast ops.
    """
    r, g, b = cells
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    inv_chroma = chroma.clamp_min(torch.finfo(cells.dtype).tiny).reciprocal_()  # grey: numerators are 0 too
    hue6 = torch.lerp(torch.lerp((r - g).mul_(inv_chroma).add_(4.0), (b - r).mul_(inv_chroma).add_(2.0),
                                 _is_max(g, maxc)),
                      (g - b).mul_(inv_chroma), _is_max(r, maxc))
    hue6.add_(_per_cell(shift, cells)[0], alpha=6.0)
    hue6.sub_(hue6.div(6.0).floor_(), alpha=6.0)  # mod 6
    centre, slope, offset = _to(_HUE_RAMPS.to(cells.dtype), cells.device).T.reshape(3, 3, 1, 1, 1)
    below = hue6.sub(centre).abs_().mul_(slope).add_(offset).clamp_(0.0, 1.0)
    gain = _per_cell(gain, cells)[0]
    return torch.addcmul(maxc.mul_(gain), chroma.mul_(gain), below, value=-1.0, out=out)


def jitter_(cells: Tensor, brightness: Tensor, hue: Tensor, hue_first: bool) -> Tensor:
    """ColorJitter(brightness, hue) in place, brightness (x·f, clamped) before or after the hue rotation; after it,
    the factor is folded into the rotation's output."""
    if not hue_first:
        cells.mul_(_per_cell(brightness, cells)).clamp_(0, 1)
    gain = brightness if hue_first else torch.ones_like(brightness)
    return rotate_hue(cells, hue, gain, out=cells).clamp_(0, 1)


def _tap_rows(p: int, padding: str, device: torch.device) -> Tensor:
    """(5, p, p) 0/1 matrices: tap k of output row i reads source row ``S[k, i].argmax()`` of the padded cell."""
    padded_rows = F.pad(torch.arange(p, dtype=torch.float32).view(1, 1, p, 1), (0, 0, BLUR_TAPS // 2, BLUR_TAPS // 2),
                        mode=padding).view(-1).long()
    return F.one_hot(padded_rows.unfold(0, p, 1), p).to(device)


def vertical_blur_(cells: Tensor, sigma: Tensor, padding: str = "reflect") -> Tensor:
    """torchvision's ``gaussian_blur(kernel_size=[1, 5])`` per cell, in place: 5 vertical taps, each cell padded
    alone. Taps and padding fold into one (p, p) matrix per cell, so the blur is one batched matmul."""
    lim = (BLUR_TAPS - 1) / (2.0 * 2.0 ** 0.5)  # torchvision's ``_get_gaussian_kernel1d``
    taps = torch.linspace(-lim, lim, steps=BLUR_TAPS, dtype=cells.dtype, device=cells.device)
    kernel = torch.softmax(taps.div(_to(sigma.to(cells.dtype), cells.device).view(-1, 1)).pow(2).neg(), dim=1)
    # Small σ gives subnormal outer taps, which slow CPU arithmetic several-fold; they add < 1e-37.
    kernel = kernel.where(kernel >= torch.finfo(cells.dtype).tiny, 0.0)
    rows = torch.einsum("nk,kij->nij", kernel, _tap_rows(cells.shape[-2], padding, cells.device).to(cells.dtype))
    return cells.copy_(torch.matmul(rows, cells)).clamp_(0, 1)


def sharpen_(cells: Tensor, factor: float = 2.0) -> Tensor:
    """torchvision's ``adjust_sharpness`` in place: f·x + (1 − f)·smooth, smooth = x ∗ [[1, 1, 1], [1, 5, 1],
    [1, 1, 1]] / 13, border pixels kept. With box the 3×3 sum: x·(f + 4(1 − f)/13) + box·(1 − f)/13 inside."""
    h, w = cells.shape[-2:]
    if h <= 2 or w <= 2:
        return cells
    rows = cells[..., :-2, :] + cells[..., 1:-1, :]
    rows.add_(cells[..., 2:, :])
    box = rows[..., :-2] + rows[..., 1:-1]
    box.add_(rows[..., 2:])
    inner = cells[..., 1:-1, 1:-1]
    inner.mul_(factor + 4.0 * (1.0 - factor) / 13.0).add_(box, alpha=(1.0 - factor) / 13.0).clamp_(0, 1)
    return cells


def posterize_(cells: Tensor, bits: int = 3) -> Tensor:
    """Keep the top ``bits`` of each uint8 value (``round(255·x)``), back on the [0, 1] scale; in place."""
    step = float(1 << (8 - bits))
    return cells.mul_(255).round_().div_(step).floor_().mul_(step).div_(255)


def apply_patch_photometric(x: Tensor, patch_size: int, params: PatchPhotometricParams, *,
                            sharpness_factor: float = 2.0, posterize_bits: int = 3,
                            small_patch_blur: SmallPatchBlur = "replicate") -> Tensor:
    """Augment every ``patch_size`` cell of ``x`` (B, 3, H, W) in [0, 1] with its own ``params`` row.

    Stage s applies, to every cell, the op ``params.order[:, s]`` names; sharpness and posterize only where drawn.
    Returns a new tensor of ``x``'s shape, on uint8 levels wherever posterize ran last.
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"expected a float batch (B, 3, H, W), got {tuple(x.shape)} {x.dtype}")
    p = patch_size
    if p < 1 or x.shape[-2] % p or x.shape[-1] % p:
        raise ValueError(f"view size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}; crop views to "
                         "whole patches")
    n_cells = x.shape[0] * (x.shape[-2] // p) * (x.shape[-1] // p)
    if len(params) != n_cells:
        raise ValueError(f"params hold {len(params)} cells but x has {n_cells}; sample them with "
                         f"sample_patch_photometric({n_cells}, generator)")
    if small_patch_blur not in ("replicate", "skip"):
        raise ValueError(f"small_patch_blur must be 'replicate' or 'skip', got {small_patch_blur!r}")
    padding = "reflect" if p > BLUR_TAPS // 2 else small_patch_blur

    cells = to_cells(x, p)
    if cells.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():  # one cell per view: a view of x
        cells = cells.clone()
    cells.mul_(255).round_().div_(255)  # the uint8 levels of the PIL input upstream
    # Stage by stage, the cells are reordered by a run key, 2·op + flag, so that each run is one contiguous slice:
    # one gather per stage instead of a gather and a scatter per op. The flag is the jitter's sub-order for the
    # jitter (both runs apply), 1 for the blur, the draw for sharpness and posterize (flag 0: the op is skipped).
    # Each run works in place on the slice of cells it is given.
    runs: dict[int, tuple[Callable[..., object], tuple[Tensor, ...]]] = {
        2 * JITTER: (lambda c, b, h: jitter_(c, b, h, hue_first=False), (params.brightness, params.hue)),
        2 * JITTER + 1: (lambda c, b, h: jitter_(c, b, h, hue_first=True), (params.brightness, params.hue)),
        2 * BLUR + 1: (lambda c, s: c if padding == "skip" else vertical_blur_(c, s, padding), (params.sigma,)),
        2 * SHARPNESS + 1: (lambda c: sharpen_(c, sharpness_factor), ()),
        2 * POSTERIZE + 1: (lambda c: posterize_(c, posterize_bits), ()),
    }
    order = params.order.cpu()
    flags = torch.stack([params.hue_first.cpu(), torch.ones(n_cells, dtype=torch.bool), params.use_sharpness.cpu(),
                         params.use_posterize.cpu()], dim=1)
    keys = order * 2 + flags.gather(1, order)  # (N, 4): the run of each cell at each stage
    arrangement = torch.arange(n_cells)  # arrangement[j]: the cell now at slot j
    for stage in range(4):
        key = keys[arrangement, stage]
        regroup = key.argsort(stable=True)
        arrangement, key = arrangement[regroup], key[regroup]
        cells = cells.index_select(1, _to(regroup, cells.device))
        ends = [0] + torch.bincount(key, minlength=8).cumsum(0).tolist()
        for run, (fn, run_params) in runs.items():
            start, end = ends[run], ends[run + 1]
            if end > start:
                cell_ids = arrangement[start:end]
                fn(cells[:, start:end], *(q[_to(cell_ids, q.device)] for q in run_params))
    return from_cells(cells.index_select(1, _to(arrangement.argsort(), cells.device)), x.shape)


def patch_photometric(x: Tensor, patch_size: int, generator: torch.Generator, **options) -> Tensor:
    """Sample one parameter set per cell from ``generator`` and apply it (``options`` go to the apply step)."""
    n_cells = x.shape[0] * (x.shape[-2] // patch_size) * (x.shape[-1] // patch_size)
    return apply_patch_photometric(x, patch_size, sample_patch_photometric(n_cells, generator), **options)
