"""Batched photometric augmentations against torchvision's functional ops applied image by image."""

import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from patchbench.methods.photometric import (
    PhotometricParams,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_photometric,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    rgb_to_grayscale,
    sample_photometric,
    solarize,
)

SHAPES = [(5, 16), (8, 32)]
JITTER_REF = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random images with grey, black, white and pure-colour pixels (the HSV edge cases)."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0, :4] = x[:, :1, 0, :4]
    x[:, :, 1, :2] = 0.0
    x[:, :, 1, 2:4] = 1.0
    x[:, :, 2, :3] = torch.eye(3)
    return x


def _uniform(batch: int, low: float, high: float, seed: int = 1) -> torch.Tensor:
    return torch.empty(batch).uniform_(low, high, generator=torch.Generator().manual_seed(seed))


def _jitter_ref(img: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    for op in order:
        img = JITTER_REF[op](img, factors[op])
    return img


@pytest.mark.parametrize("batch,size", SHAPES)
@pytest.mark.parametrize("ours,ref,low,high", [
    (adjust_brightness, TF.adjust_brightness, 0.5, 1.6),
    (adjust_contrast, TF.adjust_contrast, 0.0, 1.6),
    (adjust_saturation, TF.adjust_saturation, 0.0, 1.6),
    (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    (solarize, TF.solarize, 0.05, 0.95),
], ids=["brightness", "contrast", "saturation", "hue", "solarize"])
def test_op_matches_torchvision_per_image(ours, ref, low, high, batch, size):
    x, params = _images(batch, size), _uniform(batch, low, high)
    expected = torch.stack([ref(img, p.item()) for img, p in zip(x, params)])
    torch.testing.assert_close(ours(x, params), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch,size", SHAPES)
def test_grayscale_matches_torchvision(batch, size):
    x = _images(batch, size)
    expected = torch.stack([TF.rgb_to_grayscale(img, num_output_channels=3) for img in x])
    torch.testing.assert_close(rgb_to_grayscale(x), expected, atol=1e-6, rtol=0)


def test_scalar_parameters_broadcast():
    x = _images(4, 16)
    torch.testing.assert_close(solarize(x, 0.5), solarize(x, torch.full((4,), 0.5)), atol=0, rtol=0)
    torch.testing.assert_close(adjust_hue(x, 0.2), adjust_hue(x, torch.full((4,), 0.2)), atol=0, rtol=0)


@pytest.mark.parametrize("batch,size,kernel_size", [(5, 16, 3), (5, 16, 15), (8, 32, 7), (8, 32, 13)])
def test_gaussian_blur_matches_torchvision(batch, size, kernel_size):
    x, sigma = _images(batch, size), _uniform(batch, 0.1, 2.0)
    expected = torch.stack([TF.gaussian_blur(img, kernel_size=[kernel_size, kernel_size], sigma=[s, s])
                            for img, s in zip(x, sigma.tolist())])
    torch.testing.assert_close(gaussian_blur(x, sigma, kernel_size), expected, atol=1e-5, rtol=0)


def test_gaussian_blur_rejects_bad_kernel_sizes():
    with pytest.raises(ValueError):
        gaussian_blur(_images(2, 16), torch.ones(2), 4)
    with pytest.raises(ValueError):
        gaussian_blur(_images(2, 8), torch.ones(2), 17)


def test_blur_kernel_size():
    assert blur_kernel_size(2.0, 224) == 13
    assert blur_kernel_size(2.0 * 32 / 224, 32) == 3
    assert blur_kernel_size(2.0, 12) == 11
    assert blur_kernel_size(2.0, 11) == 11
    assert blur_kernel_size(5.0, 16) == 15


@pytest.mark.parametrize("batch,size", [(24, 16), (6, 32)])
def test_color_jitter_follows_each_samples_order(batch, size):
    x = _images(batch, size)
    if batch == 24:  # every permutation once
        order = torch.tensor(list(itertools.permutations(range(4))))
    else:
        order = torch.rand(batch, 4, generator=torch.Generator().manual_seed(2)).argsort(dim=1)
    factors = [_uniform(batch, 0.6, 1.4, 3), _uniform(batch, 0.6, 1.4, 4), _uniform(batch, 0.0, 1.5, 5),
               _uniform(batch, -0.5, 0.5, 6)]
    expected = torch.stack([_jitter_ref(x[i], [f[i].item() for f in factors], order[i].tolist())
                            for i in range(batch)])
    torch.testing.assert_close(color_jitter(x, *factors, order), expected, atol=1e-5, rtol=0)


def _reference_photometric(x: torch.Tensor, p: PhotometricParams, kernel_size: int) -> torch.Tensor:
    out = []
    for i, img in enumerate(x):
        if p.jitter_apply[i]:
            factors = [p.brightness[i].item(), p.contrast[i].item(), p.saturation[i].item(), p.hue[i].item()]
            img = _jitter_ref(img, factors, p.order[i].tolist())
        if p.gray[i]:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if p.blur[i]:
            img = TF.gaussian_blur(img, kernel_size=[kernel_size] * 2, sigma=[p.sigma[i].item()] * 2)
        if p.solarize[i]:
            img = TF.solarize(img, 0.5)
        out.append(img)
    return torch.stack(out)


def test_apply_photometric_matches_per_image_pipeline():
    x = _images(32, 16)
    params = sample_photometric(32, torch.Generator().manual_seed(0), blur_p=0.5, solarize_p=0.5)
    k = blur_kernel_size(2.0, 16)
    torch.testing.assert_close(apply_photometric(x, params, k), _reference_photometric(x, params, k),
                               atol=1e-5, rtol=0)


def test_apply_photometric_leaves_unflagged_samples_untouched():
    x = _images(8, 16)
    params = sample_photometric(8, torch.Generator().manual_seed(0), jitter_p=1.0, gray_p=1.0, blur_p=1.0,
                                solarize_p=1.0)
    off = torch.arange(8) % 2 == 0
    for flag in ("jitter_apply", "gray", "blur", "solarize"):
        setattr(params, flag, getattr(params, flag) & ~off)
    out = apply_photometric(x, params, 7)
    assert torch.equal(out[off], x[off])
    assert not torch.allclose(out[~off], x[~off])
    for flag in ("jitter_apply", "gray", "blur", "solarize"):
        setattr(params, flag, torch.zeros(8, dtype=torch.bool))
    assert torch.equal(apply_photometric(x, params, 7), x)


def test_sample_photometric_is_deterministic():
    a = sample_photometric(64, torch.Generator().manual_seed(7), blur_p=0.5, solarize_p=0.2)
    b = sample_photometric(64, torch.Generator().manual_seed(7), blur_p=0.5, solarize_p=0.2)
    c = sample_photometric(64, torch.Generator().manual_seed(8), blur_p=0.5, solarize_p=0.2)
    for name, value in vars(a).items():
        assert torch.equal(value, getattr(b, name)), name
    assert not torch.equal(a.brightness, c.brightness)


def test_sample_photometric_frequencies_and_ranges():
    n = 10_000
    p = sample_photometric(n, torch.Generator().manual_seed(0), jitter_p=0.8, gray_p=0.2, blur_p=0.1,
                           solarize_p=0.2, sigma_range=(0.1, 2.0))
    for flag, prob in [(p.jitter_apply, 0.8), (p.gray, 0.2), (p.blur, 0.1), (p.solarize, 0.2)]:
        assert flag.dtype == torch.bool and flag.shape == (n,)
        assert abs(flag.float().mean().item() - prob) < 0.02
    for values, low, high in [(p.brightness, 0.6, 1.4), (p.contrast, 0.6, 1.4), (p.saturation, 0.8, 1.2),
                              (p.hue, -0.1, 0.1), (p.sigma, 0.1, 2.0)]:
        assert values.min() >= low and values.max() <= high
        assert abs(values.mean().item() - (low + high) / 2) < 0.02 * (high - low)
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    first_op = torch.bincount(p.order[:, 0], minlength=4).float() / n
    assert torch.all((first_op - 0.25).abs() < 0.02)
    wide = sample_photometric(1000, torch.Generator().manual_seed(0), brightness=1.5, blur_p=0.5)
    assert wide.brightness.min() >= 0 and wide.brightness.max() <= 2.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_apply_photometric_on_cuda_matches_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = _images(32, 16)
    params = sample_photometric(32, torch.Generator().manual_seed(0), blur_p=0.5, solarize_p=0.5)
    expected = apply_photometric(x, params, 7)
    on_gpu = apply_photometric(x.cuda(), params, 7)  # parameters stay on the CPU
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), expected, atol=1e-5, rtol=0)
    params_gpu = PhotometricParams(**{name: value.cuda() for name, value in vars(params).items()})
    torch.testing.assert_close(apply_photometric(x.cuda(), params_gpu, 7).cpu(), expected, atol=1e-5, rtol=0)
