"""benchmark/speed.py: the steps and patch-aug subcommands run end to end; patch-aug fails clearly outside a checkout."""

import json

import pytest

from patchbench.benchmark import speed


def test_patch_aug_on_a_tiny_batch(capsys):
    speed.main(["patch-aug", "--views", "2", "--img-size", "32", "--patch-size", "8", "--rounds", "1",
                "--repeats", "1"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["cells"] == 2 * 16
    assert result["max_abs_diff"] < 1 / 255
    assert result["ratio_cpu"] > 0 and result["batched"]["wall_s"] > 0


def test_reference_outside_a_checkout_fails_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(speed, "CHECKOUT", tmp_path)
    with pytest.raises(SystemExit, match="source checkout"):
        speed.load_test_module("patch_photometric_reference")


def test_steps_compares_every_method_with_dino_on_a_tiny_matrix(capsys, tmp_path):
    matrix = tmp_path / "tiny.yaml"
    matrix.write_text("""
name: tiny
fixed: {backbone: {size: pico, patch_size: 4}, budget: {epochs: 1, batch_size: 4}}
vary: {methods: [patchwise, dino], datasets: [digits], seeds: [0]}
methods:
  patchwise: {view_kwargs: {n_local: 2}, objective_kwargs: {out_dim: 16, hidden_dim: 16, bottleneck_dim: 8}}
  dino: {view_kwargs: {n_local: 2}, objective_kwargs: {out_dim: 16, hidden_dim: 16, bottleneck_dim: 8}}
""")
    speed.main(["steps", "--matrix", str(matrix), "--steps", "2", "--warmup", "1", "--device", "cpu"])
    result = json.loads(capsys.readouterr().out)
    methods = result["methods"]
    assert set(methods) == {"dino", "patchwise"} and result["batch_size"] == 4
    assert methods["dino"]["ratio_to_dino"] == 1.0
    assert "matching_share" not in methods["dino"] and "patch_aug_share" not in methods["dino"]
    for share in ("matching_share", "patch_aug_share"):
        assert 0 < methods["patchwise"][share] < 1
