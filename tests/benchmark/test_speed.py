"""benchmark/speed.py: the steps and patch-aug subcommands run end to end, the ratios they print are the ratios of
the times and FLOPs they print, and the FLOP count of a ViT forward is the closed form's."""

import json

import pytest
import torch

from patchbench.benchmark import speed
from patchbench.methods import BackboneConfig
from patchbench.methods.backbone import ViTEncoder


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
        assert method["flop_per_s"] == pytest.approx(method["flops_per_step"] / method["step_s"], rel=1e-12)
        assert method["efficiency_to_dino"] == pytest.approx(
            method["flop_per_s"] / methods["dino"]["flop_per_s"], rel=1e-9)
        assert "mfu" not in method and "peak_memory_mb" not in method  # CUDA only
    # Patch-Wise projects every matched token through the DINO head, DINO only the CLS tokens.
    assert methods["patchwise"]["flop_ratio_to_dino"] > 1
    assert "matching_share" not in methods["dino"] and "patch_aug_share" not in methods["dino"]
    for share in ("matching_share", "patch_aug_share"):
        assert 0 < methods["patchwise"][share] < 1


def test_flop_count_of_a_tiny_vit_forward_is_the_closed_form():
    """2 × tokens × weights of the linear layers (qkv 3D², projection D², MLP 8D² per block) and 2 × patches ×
    weights of the patch embedding, plus 4 × depth × tokens² × width for attention (QKᵀ and AV)."""
    torch.manual_seed(0)
    vit = ViTEncoder(BackboneConfig(size="nano", patch_size=4, img_size=32))  # width 64, depth 4
    batch, width, depth, patch = 3, 64, 4, 4
    patches = (32 // patch) ** 2
    tokens = patches + 1  # CLS
    images = torch.randn(batch, 3, 32, 32)
    expected = batch * (2 * tokens * depth * 12 * width**2 + 2 * patches * 3 * patch**2 * width
                        + 4 * depth * tokens**2 * width)
    assert speed.count_flops(lambda: vit(images)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12),
                                        ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12), ("NVIDIA A10", None)])
def test_dense_bf16_peaks_of_the_datasheets(name, peak):
    assert speed.dense_bf16_peak(name) == peak
