"""The reference rows read the untrained backbone exactly as the methods they stand beside."""

import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.evaluate import eval_encoder
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
    cls, readout, epoch = eval_encoder(spec("random-init"), None, torch.device("cpu"))
    assert (readout, epoch) == ("cls", 0)
    torch.testing.assert_close(cls(x), tokens[:, 0])
    patches, readout, _ = eval_encoder(spec("random-init-patches"), None, torch.device("cpu"))
    assert readout == "mean_patch"
    torch.testing.assert_close(patches(x), tokens[:, 1:].mean(1))
    assert not torch.allclose(patches(x), cls(x))
