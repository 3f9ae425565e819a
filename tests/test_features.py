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
