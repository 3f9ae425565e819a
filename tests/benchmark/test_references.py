"""The reference rows read the untrained backbone exactly as the methods they stand beside, through the same code."""

import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.features import load_encoder, pixel_patches
from patchbench.methods import BackboneConfig, ViTEncoder


def spec(method: str, seed: int = 3):
    return make_spec(matrix="refs", method=method, dataset="digits", seed=seed, image_size=32,
                     backbone={"size": "pico", "patch_size": 4})


def test_random_init_rows_read_cls_and_mean_pooled_patches_of_the_seeded_backbone():
    x = torch.randn(5, 3, 32, 32)
    torch.manual_seed(3)
    backbone = ViTEncoder(BackboneConfig(size="pico", patch_size=4, img_size=32)).eval()
    with torch.no_grad():
        tokens = backbone(x)
    cls = load_encoder(spec("random-init"), None, torch.device("cpu"))
    assert (cls.global_readout, cls.patch_readout, cls.epoch) == ("cls", "patch_tokens", 0)
    torch.testing.assert_close(cls.global_features(x), tokens[:, 0])
    patches = load_encoder(spec("random-init-patches"), None, torch.device("cpu"))
    assert patches.global_readout == "mean_patch"
    torch.testing.assert_close(patches.global_features(x), tokens[:, 1:].mean(1))
    assert not torch.allclose(patches.global_features(x), cls.global_features(x))
    # the patch map: token (1 + r * 8 + c) of the sequence sits at row r, column c
    grid = cls.patch_features(x)
    assert grid.shape == (5, 8, 8, 32)
    torch.testing.assert_close(grid[:, 2, 5], tokens[:, 1 + 2 * 8 + 5])
    torch.testing.assert_close(patches.patch_features(x), grid)


def test_raw_pixel_rows_read_the_image_and_each_patch_of_it():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    pixels = load_encoder(make_spec(matrix="refs", method="raw-pixels", dataset="digits", seed=0, image_size=8,
                                    backbone={"size": "pico", "patch_size": 4}), None, torch.device("cpu"))
    assert (pixels.global_readout, pixels.patch_readout) == ("pixels", "pixel_patches")
    torch.testing.assert_close(pixels.global_features(x), x.reshape(2, -1))
    grid = pixels.patch_features(x)
    assert grid.shape == (2, 2, 2, 3 * 16)
    # patch (1, 0) of image 1: rows 4..7, columns 0..3, channel-major like a patch embedding's input
    torch.testing.assert_close(grid[1, 1, 0], x[1, :, 4:8, 0:4].reshape(-1))
    torch.testing.assert_close(pixel_patches(x, 4), grid)
