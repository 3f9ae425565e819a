"""The feature cache: what it holds equals the encoder's output, one extraction serves every evaluation, a changed
checkpoint or setting re-extracts, and nothing partial is ever left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.features import EvalInputs
from patchbench.benchmark.store import atomic_torch_save, run_dir
from patchbench.benchmark.train import build_for_spec

CPU = torch.device("cpu")


def dino_spec():
    return make_spec(matrix="cache", method="dino", dataset="digits", seed=0, image_size=32,
                     backbone={"size": "pico", "patch_size": 4}, budget={"epochs": 1, "batch_size": 64},
                     objective_kwargs={"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 32})


def save_final_checkpoint(spec, run, scale: float = 1.0):
    """A checkpoint of the last epoch, as ``train.pretrain`` leaves it (the method's state under 'method')."""
    torch.manual_seed(0)
    method, _ = build_for_spec(spec, CPU)
    if scale != 1.0:
        with torch.no_grad():
            method.teacher.vit.patch_embed.proj.weight.mul_(scale)
    atomic_torch_save(run.checkpoint, {"epoch": spec.budget.epochs, "method": method.state_dict()})
    return method


def test_cached_features_equal_the_encoder_and_are_extracted_once(tmp_path):
    spec = dino_spec()
    run = run_dir(tmp_path, spec)
    method = save_final_checkpoint(spec, run)
    inputs = EvalInputs(spec, run, "digits", "global", CPU)
    features = inputs.features("test")
    images = inputs.split("test").images
    mean, std = torch.tensor(inputs.source.mean).view(1, 3, 1, 1), torch.tensor(inputs.source.std).view(1, 3, 1, 1)
    expected = method.encoder_for_eval()((images[:7].float() / 255 - mean) / std)
    np.testing.assert_allclose(features[:7], expected.numpy(), rtol=1e-5, atol=1e-5)
    assert features.dtype == np.float32 and features.shape == (450, 32)
    assert inputs.extracted == [inputs.cache_path("test")]

    again = EvalInputs(spec, run, "digits", "global", CPU)
    np.testing.assert_array_equal(again.features("test"), features)
    assert again.extracted == []  # a second evaluation of the run reads the cache

    patches = EvalInputs(spec, run, "digits", "patches", CPU)
    tokens = patches.features("test")
    assert tokens.dtype == np.float16 and tokens.shape == (450, 8, 8, 32)
    expected_tokens = method.encoder_for_eval().patches((images[:3].float() / 255 - mean) / std)
    np.testing.assert_allclose(tokens[:3].astype(np.float32), expected_tokens.numpy(), rtol=2e-3, atol=2e-3)
    files = sorted(p.name for p in (run.path / "features").iterdir())
    assert len(files) == 2 and not any(name.startswith(".") for name in files)  # no temporary file left


def test_a_changed_checkpoint_or_dataset_setting_re_extracts(tmp_path):
    spec = dino_spec()
    run = run_dir(tmp_path, spec)
    save_final_checkpoint(spec, run)
    first = EvalInputs(spec, run, "digits", "global", CPU)
    before = np.array(first.features("train"))
    save_final_checkpoint(spec, run, scale=1.5)  # a new checkpoint at the same path
    second = EvalInputs(spec, run, "digits", "global", CPU)
    assert second.cache_key("train") != first.cache_key("train")
    after = second.features("train")
    assert second.extracted and not np.allclose(after, before)
    assert len(list((run.path / "features").iterdir())) == 1  # the stale features were replaced
    other = EvalInputs(spec, run, "shapes", "global", CPU)
    assert other.cache_path("train") != second.cache_path("train")


def test_an_unfinished_checkpoint_is_refused(tmp_path):
    spec = dino_spec()
    run = run_dir(tmp_path, spec)
    torch.manual_seed(0)
    method, _ = build_for_spec(spec, CPU)
    atomic_torch_save(run.checkpoint, {"epoch": 0, "method": method.state_dict()})
    with pytest.raises(RuntimeError, match="at epoch 0, not the last epoch 1: pretraining has not finished"):
        EvalInputs(spec, run, "digits", "global", CPU).features("test")
    assert not (run.path / "features").exists()


def test_on_disk_sets_stream_through_dataloader_workers(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "data" / "folder" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = np.random.default_rng([i, ord(label)]).integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    results = {}
    for workers in (0, 2):
        spec = make_spec(matrix="cache", method="random-init", dataset="folder", seed=0, image_size=64,
                         backbone={"size": "pico", "patch_size": 8},
                         runtime={"data_root": str(tmp_path / "data"), "num_workers": workers})
        inputs = EvalInputs(spec, run_dir(tmp_path / f"out{workers}", spec), "folder", "patches", CPU)
        assert inputs.split("train").images is None  # loaded lazily, image by image
        results[workers] = np.array(inputs.features("train"))
    assert results[0].shape == (6, 8, 8, 32)
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.slow
def test_dense_on_voc_reads_cached_masks_and_ignores_the_border(tmp_path):
    from segmentation_files import write_voc

    from patchbench.benchmark.evaluate import evaluate, resolve_evaluations

    write_voc(tmp_path / "data")
    evaluations = resolve_evaluations({"dense": {"epochs": 1, "lrs": [1.0], "val_fraction": 0.5}}, "voc2012", {},
                                      str(tmp_path / "data"), "test")
    spec = make_spec(matrix="voc", method="raw-pixels", dataset="voc2012", seed=0, image_size=448,
                     backbone={"size": "pico", "patch_size": 16}, evaluations=evaluations,
                     runtime={"data_root": str(tmp_path / "data")})
    run = run_dir(tmp_path / "out", spec)
    record = evaluate(spec, run, "dense")
    hparams = record["probe_hparams"]
    assert (hparams["resolution"], hparams["classes"], hparams["ignore_index"]) == (448, 21, 255)
    assert hparams["readout"] == "pixel_patches" and "ignoring label 255" in record["eval_protocol"]
    assert set(record["metrics"]) == {"miou", "pixel_acc"}
    masks = sorted(p.name for p in (tmp_path / "out" / "cache").iterdir())
    assert masks == ["masks-voc2012-test-448px-1.npy", "masks-voc2012-train-448px-2.npy"]
    assert np.load(tmp_path / "out" / "cache" / masks[1]).max() == 255
