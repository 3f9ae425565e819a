"""benchmark/speed.py: the steps and patch-aug subcommands run end to end, and the ratios they print are the ratios of
the times they print."""

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
    loop, batched = result["reference_loop"], result["batched"]
    assert batched["wall_s"] > 0 and batched["cpu_s"] > 0
    assert result["ratio_wall"] == pytest.approx(loop["wall_s"] / batched["wall_s"], rel=1e-12)
    assert result["ratio_cpu"] == pytest.approx(loop["cpu_s"] / batched["cpu_s"], rel=1e-12)


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
    for method in methods.values():
        assert method["ratio_to_dino"] == pytest.approx(method["step_s"] / methods["dino"]["step_s"], rel=1e-12)
        assert method["images_per_s"] == pytest.approx(4 / method["step_s"], rel=1e-12)
    assert "matching_share" not in methods["dino"] and "patch_aug_share" not in methods["dino"]
    for share in ("matching_share", "patch_aug_share"):
        assert 0 < methods["patchwise"][share] < 1
