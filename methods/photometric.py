"""DINO's photometric augmentations, batched with per-sample parameters.

``main_dino.py::DataAugmentationDINO`` applies per view: ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale
with p 0.2, Gaussian blur with σ ~ U(0.1, 2.0) and a per-view p, and solarization (threshold 0.5) with a per-view
p. Here every op works on a float batch (B, 3, H, W) in [0, 1] with one parameter per sample, and reproduces
torchvision's tensor kernel (``torchvision.transforms.v2.functional``) applied image by image.

Parameters may live on any device. Masks and colour-jitter orders are turned into sample indices on their own
device, so parameters sampled on the CPU (``sample_photometric``) cost no device synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

# Row i: which of (v, p, q, t) goes to (r, g, b) in hue sextant i = floor(6h) (torchvision's ``_hsv_to_rgb``).
_HSV_SELECT = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def _to(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; uploads from the host don't wait for queued device work (they are staged at once)."""
    return t.to(device, non_blocking=t.device.type == "cpu")


def _per_sample(p: Tensor | float, x: Tensor) -> Tensor:
    """``p`` (a scalar or a (B,) tensor) as a (B, 1, 1, 1) tensor of x's dtype on x's device."""
    return _to(torch.as_tensor(p, dtype=x.dtype), x.device).expand(x.shape[0]).reshape(-1, 1, 1, 1)


def _luma(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma (B, 1, H, W), torchvision's grayscale weights."""
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend(x: Tensor, ref: Tensor, factor: Tensor) -> Tensor:
    """x·f + ref·(1 − f), clamped to [0, 1] (torchvision's ``_blend``); ``factor`` is (B, 1, 1, 1)."""
    return (x * factor + ref * (1 - factor)).clamp_(0, 1)


def _where_apply(x: Tensor, mask: Tensor, fn: Callable[..., Tensor], *params: Tensor) -> Tensor:
    """``fn(x[mask], *(p[mask] for p in params))`` on the samples where ``mask``; the others are returned as is."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == x.shape[0]:
        return fn(x, *params)
    if idx.numel() == 0:
        return x
    sub = [p.index_select(0, idx.to(p.device)) for p in params]
    idx = _to(idx, x.device)
    return x.index_copy(0, idx, fn(x.index_select(0, idx), *sub))


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """Scale by ``factor`` per sample, clamped to [0, 1]."""
    return x.mul(_per_sample(factor, x)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each sample with the mean of its grayscale image."""
    return _blend(x, _luma(x).mean(dim=(1, 2, 3), keepdim=True), _per_sample(factor, x))


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each sample with its grayscale image."""
    return _blend(x, _luma(x), _per_sample(factor, x))


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """torchvision's tensor rgb→hsv (after Pillow), as (h, s, v) planes (B, H, W), hue in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    eqc = maxc == minc  # grey pixels: s = h = 0, denominators replaced to avoid NaN
    ones = torch.ones_like(maxc)
    channel_range = maxc - minc
    s = channel_range / torch.where(eqc, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / torch.where(eqc, ones, channel_range).unsqueeze(1)).unbind(1)
    max_r = maxc == r
    max_g = (maxc == g) & ~max_r
    h = torch.where(max_r, bc - gc, torch.where(max_g, rc.add(2.0).sub_(bc), gc.add(4.0).sub_(rc)))
    return h.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0), s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """torchvision's tensor hsv→rgb, from planes (B, H, W) to (B, 3, H, W)."""
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6.sub_(i)
    sector = i.to(torch.int32).remainder_(6)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=1)
    select = _to(_HSV_SELECT, v.device).index_select(0, sector.flatten()).view(*sector.shape, 3)
    return vpqt.gather(1, select.permute(0, 3, 1, 2))


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the hue by ``shift`` (in [-0.5, 0.5], turns) per sample, through HSV."""
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(h.add_(_per_sample(shift, x).squeeze(1)).remainder_(1.0), s, v)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma, repeated over 3 channels."""
    return _luma(x).repeat(1, 3, 1, 1)


def solarize(x: Tensor, threshold: Tensor | float) -> Tensor:
    """Invert the pixels at or above ``threshold``."""
    return torch.where(x >= _per_sample(threshold, x), 1.0 - x, x)


def gaussian_blur(x: Tensor, sigma: Tensor | float, kernel_size: int) -> Tensor:
    """Gaussian blur with a per-sample σ and an odd ``kernel_size``, reflect-padded (torchvision's kernel).

    The separable kernel is applied as two grouped convolutions over all (sample, channel) planes at once.
    """
    batch, channels, height, width = x.shape
    pad = kernel_size // 2
    if kernel_size % 2 == 0 or pad >= min(height, width):
        raise ValueError(f"kernel_size {kernel_size} must be odd, with kernel_size // 2 < {min(height, width)}")
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    taps = torch.linspace(-lim, lim, steps=kernel_size, dtype=x.dtype, device=x.device)
    kernel = torch.softmax(taps.div(_per_sample(sigma, x).view(-1, 1)).pow(2).neg(), dim=1)  # (B, k)
    # Small σ gives subnormal outer taps, which slow CPU convolutions several-fold; they add < 1e-37.
    kernel = kernel.where(kernel >= torch.finfo(x.dtype).tiny, 0.0)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B·C, k)
    planes = F.pad(x.reshape(1, batch * channels, height, width), [pad] * 4, mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=batch * channels)
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=batch * channels)
    return planes.reshape(batch, channels, height, width)


def color_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor,
                 order: Tensor) -> Tensor:
    """ColorJitter with per-sample factors, applied in each sample's ``order`` (B, 4).

    ``order`` is a permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue per sample. Brightness, contrast
    and saturation are all blends x·f + r·(1 − f), with r = 0, the grayscale mean or the grayscale image, so each
    of the 4 stages is one batched blend (the identity for samples at their hue stage) followed by the hue
    rotation on the samples whose stage names it.
    """
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    factors = torch.stack([_per_sample(f, x).view(-1) for f in (brightness, contrast, saturation)] + [ones], dim=1)
    op_on_x = _to(order, x.device)
    for stage in range(4):
        op = op_on_x[:, stage].view(-1, 1, 1, 1)
        luma = _luma(x)
        ref = torch.where(op == 2, luma, torch.where(op == 1, luma.mean(dim=(1, 2, 3), keepdim=True), 0.0))
        x = _blend(x, ref, factors.gather(1, op.view(-1, 1)).view(-1, 1, 1, 1))
        x = _where_apply(x, order[:, stage] == 3, adjust_hue, hue)
    return x


@dataclass
class PhotometricParams:
    """Per-sample parameters, all (B,) except ``order`` (B, 4); the flags are bool."""

    jitter_apply: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor


class JitterSettings(TypedDict):
    """The colour-jitter and grayscale keyword arguments of :func:`sample_photometric`."""

    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    gray_p: float


def sample_photometric(batch_size: int, generator: torch.Generator, *, jitter_p: float = 0.8,
                       brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1,
                       gray_p: float = 0.2, blur_p: float, sigma_range: tuple[float, float] = (0.1, 2.0),
                       solarize_p: float = 0.0) -> PhotometricParams:
    """Draw DINO's photometric parameters for a batch from a CPU ``generator`` (ranges as torchvision's)."""

    def uniform(low: float, high: float) -> Tensor:
        return torch.empty(batch_size).uniform_(low, high, generator=generator)

    def coin(p: float) -> Tensor:
        return torch.rand(batch_size, generator=generator) < p

    return PhotometricParams(
        jitter_apply=coin(jitter_p),
        brightness=uniform(max(0.0, 1 - brightness), 1 + brightness),
        contrast=uniform(max(0.0, 1 - contrast), 1 + contrast),
        saturation=uniform(max(0.0, 1 - saturation), 1 + saturation),
        hue=uniform(-hue, hue),
        order=torch.rand(batch_size, 4, generator=generator).argsort(dim=1),
        gray=coin(gray_p),
        blur=coin(blur_p),
        sigma=uniform(*sigma_range),
        solarize=coin(solarize_p),
    )


def apply_photometric(x: Tensor, params: PhotometricParams, kernel_size: int) -> Tensor:
    """Jitter, grayscale, blur and solarize (threshold 0.5) in DINO's order, each where its flag is set."""
    x = _where_apply(x, params.jitter_apply, color_jitter, params.brightness, params.contrast, params.saturation,
                     params.hue, params.order)
    x = _where_apply(x, params.gray, rgb_to_grayscale)
    x = _where_apply(x, params.blur, lambda v, s: gaussian_blur(v, s, kernel_size), params.sigma)
    return _where_apply(x, params.solarize, lambda v: solarize(v, 0.5))


def blur_kernel_size(sigma_max: float, image_size: int) -> int:
    """Odd kernel covering ±3σ_max, capped to the largest odd size ≤ ``image_size`` (reflect padding < size)."""
    return min(2 * math.ceil(3 * sigma_max) + 1, image_size - (1 - image_size % 2))
