"""Per-patch photometric augmentation (docs/methods.md, Patch-Wise SSL): batched ops against torchvision cell by cell
(benchmark/patch_photometric_reference.py)."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from patchbench.benchmark.patch_photometric_reference import reference_patch_photometric
from patchbench.methods.patch_photometric import (
    BLUR,
    JITTER,
    POSTERIZE,
    SHARPNESS,
    PatchPhotometricParams,
    apply_patch_photometric,
    from_cells,
    jitter_,
    patch_photometric,
    posterize_,
    rotate_hue,
    sample_patch_photometric,
    sharpen_,
    to_cells,
    vertical_blur_,
)

LEVEL = 1 / 255


def _images(batch: int, height: int, width: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random images on uint8 levels, with grey, black, white and pure-colour pixels (the HSV edge cases)."""
    x = torch.randint(0, 256, (batch, 3, height, width or height), generator=torch.Generator().manual_seed(seed))
    x = x.float() / 255
    x[:, :, 0, :4] = x[:, :1, 0, :4]
    x[:, :, 1, :2] = 0.0
    x[:, :, 1, 2:4] = 1.0
    x[:, :, 2, :3] = torch.eye(3)
    return x


def _params(n: int, order: list[int], *, brightness: float = 1.0, hue: float = 0.0, sigma: float = 1.0,
            hue_first: bool = False, sharpness: bool = False, posterize: bool = False) -> PatchPhotometricParams:
    """The same hand-picked parameters for ``n`` cells."""
    return PatchPhotometricParams(
        order=torch.tensor([order] * n), hue_first=torch.full((n,), hue_first), brightness=torch.full((n,), brightness),
        hue=torch.full((n,), hue), sigma=torch.full((n,), sigma), use_sharpness=torch.full((n,), sharpness),
        use_posterize=torch.full((n,), posterize))


def _cell_std(x: torch.Tensor, p: int) -> torch.Tensor:
    return to_cells(x, p).flatten(2).std(dim=2)


@pytest.mark.parametrize("patch_size,size,option", [(16, 32, "replicate"), (4, 16, "replicate"), (8, 24, "replicate"),
                                                    (3, 12, "replicate"), (2, 8, "replicate"), (2, 8, "skip")])
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_equals_per_cell_reference(patch_size, size, option, seed):
    x = _images(3, size, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    params = sample_patch_photometric(3 * (size // patch_size) ** 2, generator)
    ours = apply_patch_photometric(x, patch_size, params, small_patch_blur=option)
    expected = reference_patch_photometric(x, patch_size, params, small_patch_blur=option)
    torch.testing.assert_close(ours, expected, atol=LEVEL, rtol=0)
    assert (ours - expected).abs().mean() < 1e-5  # equal up to float rounding, not merely within a level


def test_blur_padding_for_small_patches():
    x = _images(1, 3)
    params = _params(1, [BLUR, JITTER, SHARPNESS, POSTERIZE], sigma=1.5)
    reflect = apply_patch_photometric(x, 3, params)
    expected = TF.gaussian_blur(x[0], kernel_size=[1, 5], sigma=[1.5, 1.5])
    torch.testing.assert_close(reflect[0], expected, atol=1e-5, rtol=0)
    two = _images(1, 16)[..., 4:6, 4:6].contiguous()
    replicate = apply_patch_photometric(two, 2, _params(1, [BLUR, JITTER, SHARPNESS, POSTERIZE], sigma=1.5))
    padded = torch.cat([two[0, :, :1]] * 2 + [two[0]] + [two[0, :, 1:]] * 2, dim=1)  # rows a a a b b b
    manual = TF.gaussian_blur(padded, kernel_size=[1, 5], sigma=[1.5, 1.5])[:, 2:4]
    torch.testing.assert_close(replicate[0], manual, atol=1e-5, rtol=0)
    skipped = apply_patch_photometric(two, 2, _params(1, [BLUR, JITTER, SHARPNESS, POSTERIZE]), small_patch_blur="skip")
    torch.testing.assert_close(skipped, two, atol=1e-6, rtol=0)


@pytest.mark.parametrize("hue_first", [False, True])
def test_jitter_matches_torchvision_on_one_cell(hue_first):
    cell = _images(1, 16)[0]
    sub_ops = [lambda c: TF.adjust_brightness(c, 1.08), lambda c: TF.adjust_hue(c, -0.07)]
    expected = cell
    for op in (reversed(sub_ops) if hue_first else sub_ops):
        expected = op(expected)
    ours = jitter_(to_cells(cell[None], 16), torch.tensor([1.08]), torch.tensor([-0.07]), hue_first)
    torch.testing.assert_close(from_cells(ours, (1, 3, 16, 16))[0], expected, atol=1e-5, rtol=0)


def test_hue_matches_torchvision_over_the_whole_circle():
    cells = _images(64, 8)
    shift = torch.linspace(-0.5, 0.5, 64)
    expected = torch.stack([TF.adjust_hue(c, s) for c, s in zip(cells, shift.tolist())])
    planes = to_cells(cells, 8)
    ours = from_cells(rotate_hue(planes, shift, torch.ones(64), out=torch.empty_like(planes)), cells.shape)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sigma", [0.1, 0.2, 0.7, 2.0])
def test_vertical_blur_matches_torchvision_on_one_cell(sigma):
    cell = _images(1, 16)[0]
    expected = TF.gaussian_blur(cell, kernel_size=[1, 5], sigma=[sigma, sigma])
    ours = from_cells(vertical_blur_(to_cells(cell[None], 16), torch.tensor([sigma])), (1, 3, 16, 16))[0]
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


def test_blur_is_vertical_only():
    rows_equal = _images(1, 16)[:, :, :1].expand(1, 3, 16, 16).contiguous()  # varies along x only
    params = _params(1, [BLUR, JITTER, SHARPNESS, POSTERIZE], sigma=2.0)
    torch.testing.assert_close(apply_patch_photometric(rows_equal, 16, params), rows_equal, atol=1e-6, rtol=0)
    columns_equal = rows_equal.transpose(-1, -2).contiguous()  # varies along y
    assert (apply_patch_photometric(columns_equal, 16, params) - columns_equal).abs().max() > 0.05


@pytest.mark.parametrize("size", [16, 3, 2])
def test_sharpness_matches_torchvision_on_one_cell(size):
    cell = _images(1, 16)[0, :, :size, :size]
    ours = from_cells(sharpen_(to_cells(cell[None].clone(), size), 2.0), (1, 3, size, size))[0]
    torch.testing.assert_close(ours, TF.adjust_sharpness(cell, 2.0), atol=1e-6, rtol=0)


def test_posterize_matches_torchvision_on_uint8():
    cell = _images(1, 16)[0]
    as_uint8 = cell.mul(255).round().to(torch.uint8)
    expected = TF.posterize(as_uint8, 3).float() / 255
    assert torch.equal(posterize_(cell.clone(), 3), expected)
    assert set((expected * 255).round().unique().tolist()) <= {0.0, 32.0, 64.0, 96.0, 128.0, 160.0, 192.0, 224.0}


def test_parameters_differ_across_cells_and_views():
    params = sample_patch_photometric(2 * 16, torch.Generator().manual_seed(0))
    for values in (params.brightness, params.hue, params.sigma):
        assert values.unique().numel() == 32
    assert params.order.unique(dim=0).shape[0] > 8
    tile = _images(1, 4)
    tiled = tile.repeat(2, 1, 4, 4)  # the same content in every cell: output cells differ only by their params
    out = apply_patch_photometric(tiled, 4, params)
    assert to_cells(out, 4).transpose(0, 1).flatten(1).unique(dim=0).shape[0] == 32
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("shape,patch_size", [((2, 3, 32, 48), 16), ((1, 3, 12, 8), 4), ((5, 3, 4, 4), 2)])
def test_shape_dtype_and_input_are_preserved(shape, patch_size):
    x = torch.rand(shape)
    before = x.clone()
    out = patch_photometric(x, patch_size, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(from_cells(to_cells(x, patch_size), x.shape), x)


@pytest.mark.parametrize("patch_size", [16, 4, 3, 2])
def test_blur_stays_inside_each_cell(patch_size):
    """Every op maps a constant cell to a constant cell, so with constant cells of different colours side by side
    any leak across a cell border shows as variation inside a cell."""
    generator = torch.Generator().manual_seed(3)
    colours = torch.randint(0, 256, (2, 3, 4, 4), generator=generator).float() / 255
    x = colours.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    params = sample_patch_photometric(2 * 16, generator)
    params.order[:, 0] = BLUR  # blur first, on the untouched cells (order stays a permutation)
    params.order[:, 1:] = torch.tensor([JITTER, SHARPNESS, POSTERIZE])
    out = apply_patch_photometric(x, patch_size, params)
    assert _cell_std(out, patch_size).max() < 1e-6
    assert (out - x).abs().max() > 0.01  # the cells did change


def test_posterize_and_sharpness_only_where_drawn():
    x = _images(1, 32)
    drawn = torch.tensor([True, False, False, True])
    quiet = dict(brightness=1.0, hue=0.0, sigma=0.1)  # jitter and blur within float rounding of the identity
    params = _params(4, [POSTERIZE, SHARPNESS, JITTER, BLUR], posterize=True, **quiet)
    params.use_posterize = drawn
    out_cells = to_cells(apply_patch_photometric(x, 16, params), 16)
    in_cells = to_cells(x, 16)
    torch.testing.assert_close(out_cells[:, drawn], posterize_(in_cells[:, drawn], 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out_cells[:, ~drawn], in_cells[:, ~drawn], atol=1e-6, rtol=0)

    params = _params(4, [SHARPNESS, POSTERIZE, JITTER, BLUR], sharpness=True, **quiet)
    params.use_sharpness = drawn
    out_cells = to_cells(apply_patch_photometric(x, 16, params), 16)
    for i in range(4):
        expected = TF.adjust_sharpness(in_cells[:, i], 2.0) if drawn[i] else in_cells[:, i]
        torch.testing.assert_close(out_cells[:, i], expected, atol=1e-6, rtol=0)


def test_order_follows_the_drawn_permutation():
    """A grey cell at 100/255, brightness 1.1: posterize then brighten gives 96·1.1 = 105.6 (/255); brighten then
    posterize gives 110 → 96 (/255). Two cells, the two orders, side by side."""
    x = torch.full((1, 3, 4, 8), 100 / 255)
    params = _params(2, [POSTERIZE, JITTER, BLUR, SHARPNESS], brightness=1.1, posterize=True)
    params.order[1] = torch.tensor([JITTER, POSTERIZE, BLUR, SHARPNESS])
    out = apply_patch_photometric(x, 4, params) * 255
    torch.testing.assert_close(out[..., :4], torch.full((1, 3, 4, 4), 105.6), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[..., 4:], torch.full((1, 3, 4, 4), 96.0), atol=1e-3, rtol=0)


def test_jitter_sub_order_follows_hue_first():
    x = torch.tensor([250.0, 128.0, 51.0]).div(255).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    outs = []
    for hue_first in (False, True):
        params = _params(1, [JITTER, BLUR, SHARPNESS, POSTERIZE], brightness=1.1, hue=0.1, sigma=0.1,
                         hue_first=hue_first)
        outs.append(apply_patch_photometric(x, 4, params))
    brighten_first = TF.adjust_hue(TF.adjust_brightness(x[0], 1.1), 0.1)
    hue_first = TF.adjust_brightness(TF.adjust_hue(x[0], 0.1), 1.1)
    torch.testing.assert_close(outs[0][0], brighten_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[1][0], hue_first, atol=1e-5, rtol=0)
    assert (brighten_first - hue_first).abs().max() > 2 * LEVEL  # clamping at 1 makes the order matter


def test_input_is_quantised_to_uint8_levels():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params = sample_patch_photometric(2 * 16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(apply_patch_photometric(x, 4, params),
                               apply_patch_photometric(x.mul(255).round().div(255), 4, params), atol=0, rtol=0)


def test_sample_is_deterministic_and_follows_the_ranges():
    n = 20_000
    a = sample_patch_photometric(n, torch.Generator().manual_seed(7))
    b = sample_patch_photometric(n, torch.Generator().manual_seed(7))
    for name, value in vars(a).items():
        assert torch.equal(value, getattr(b, name)), name
    assert torch.equal(a.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    for stage in range(4):
        share = torch.bincount(a.order[:, stage], minlength=4).float() / n
        assert torch.all((share - 0.25).abs() < 0.02)
    for flag in (a.hue_first, a.use_sharpness, a.use_posterize):
        assert flag.dtype == torch.bool and abs(flag.float().mean().item() - 0.5) < 0.02
    for values, low, high in [(a.brightness, 0.9, 1.1), (a.hue, -0.1, 0.1), (a.sigma, 0.1, 2.0)]:
        assert values.min() >= low and values.max() <= high
        assert abs(values.mean().item() - (low + high) / 2) < 0.02 * (high - low)


def test_bad_input_fails_early_with_the_fix():
    params = sample_patch_photometric(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        apply_patch_photometric(torch.rand(1, 3, 30, 32), 16, params)
    with pytest.raises(ValueError, match="sample_patch_photometric"):
        apply_patch_photometric(torch.rand(1, 3, 32, 32), 8, params)
    with pytest.raises(ValueError, match="small_patch_blur"):
        apply_patch_photometric(torch.rand(1, 3, 32, 32), 16, params, small_patch_blur="reflect")
    with pytest.raises(ValueError, match="float batch"):
        apply_patch_photometric(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), 16, params)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = _images(4, 64)
    params = sample_patch_photometric(4 * 16, torch.Generator().manual_seed(0))
    expected = apply_patch_photometric(x, 16, params)
    on_gpu = apply_patch_photometric(x.cuda(), 16, params)  # parameters stay on the CPU
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), expected, atol=LEVEL, rtol=0)
    torch.testing.assert_close(apply_patch_photometric(x.cuda(), 16, params.to("cuda")).cpu(), expected,
                               atol=LEVEL, rtol=0)
