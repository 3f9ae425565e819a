"""The papers' matrices (benchmark/matrices/) pass `run --dry-run` against fixtures in the real formats, printing
every cell and the cost estimate; the cost model against hand-computed FLOPs; --max-gpu-hours; the cluster file."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest
from ondisk import write_paper_root

from patchbench.benchmark.cli import _check_budget, main
from patchbench.benchmark.cluster import load_cluster_config
from patchbench.benchmark.config import ConfigError, make_spec
from patchbench.benchmark.cost import forward_flops, pretrain_flops_per_image
from patchbench.benchmark.matrix import load_matrix
from patchbench.benchmark.orchestrator import plan
from patchbench.benchmark.resources import resources
from patchbench.methods import BackboneConfig

MATRICES = Path(__file__).resolve().parents[2] / "benchmark" / "matrices"
PAPER_MATRICES = ["patchwise-cifar10", "imagenet100-comparison", "coco-selfpatch-gtsa",
                  "ablation-patchwise-imagenet100"]


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    return write_paper_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def no_cluster_file(monkeypatch, tmp_path):
    monkeypatch.delenv("PATCHBENCH_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/patchbench/cluster.yaml
    monkeypatch.delenv("PATCHBENCH_CLUSTER", raising=False)


def vit_forward_flops(depth: int, dim: int, patch: int, size: int, tokens: int | None = None) -> int:
    """Matrix-product FLOPs of a ViT forward (2 per multiply-add): the patch embedding, and per block qkv (3 D²),
    attention scores and mixing (2 n² D), projection (D²) and the 4× MLP (8 D²) on n tokens (CLS included)."""
    patches = (size // patch) ** 2
    n = (tokens if tokens is not None else patches) + 1
    return 2 * patches * 3 * patch * patch * dim + depth * (2 * n * 12 * dim * dim + 4 * n * n * dim)


def test_forward_flops_match_the_hand_count():
    small = BackboneConfig(size="small", patch_size=16, img_size=224)
    assert forward_flops(small, 224) == vit_forward_flops(12, 384, 16, 224) == 9_196_996_608
    assert forward_flops(small, 96) == vit_forward_flops(12, 384, 16, 96)
    assert forward_flops(small, 224, keep=49) == vit_forward_flops(12, 384, 16, 224, tokens=49)


def test_dino_training_image_is_three_student_forwards_and_a_teacher_forward_of_the_globals():
    spec = make_spec(matrix="m", method="dino", dataset="imagenet", seed=0, image_size=224,
                     backbone={"size": "small", "patch_size": 16}, view_kwargs={"local_size": 96, "n_local": 8})
    global_view, local_view = vit_forward_flops(12, 384, 16, 224), vit_forward_flops(12, 384, 16, 96)
    assert pretrain_flops_per_image(spec) == 3 * (2 * global_view + 8 * local_view) + 2 * global_view


def test_aps_counts_each_optimiser_step_on_its_kept_patches_and_no_teacher():
    spec = make_spec(matrix="m", method="aps", dataset="imagenet", seed=0, image_size=224,
                     backbone={"size": "small", "patch_size": 16})
    kept = int(196 * 0.25)  # sampling_ratio 0.25 of the 14 × 14 grid, 4 optimiser steps per batch
    assert pretrain_flops_per_image(spec) == 3 * 4 * 2 * vit_forward_flops(12, 384, 16, 224, tokens=kept)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_MATRICES)
def test_paper_matrix_dry_run_prints_every_cell_and_the_cost(name, paper_root, capsys):
    matrix_path = MATRICES / f"{name}.yaml"
    assert matrix_path.read_text().startswith("#")  # each cites the paper table or official script it follows
    out = paper_root.parent / f"results-{name}"
    code = main(["run", str(matrix_path), "--dry-run", "--data-root", str(paper_root), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    matrix = load_matrix(matrix_path, data_root=str(paper_root))
    for cell in matrix.cells:
        assert cell.spec.run_id in printed
    assert "jobs would be submitted" in printed and "FLOP-based, not measured" in printed
    assert "| pretrain |" in printed and "| evaluate |" in printed and "total: " in printed
    assert not out.exists()


def test_max_gpu_hours_refuses_unless_confirmed(paper_root, tmp_path):
    matrix = load_matrix(MATRICES / "patchwise-cifar10.yaml", data_root=str(paper_root))
    todo, _ = plan(matrix, tmp_path / "out", write=False)
    with pytest.raises(ConfigError, match=r"patchwise-cifar10: the jobs to submit need an estimated .* GPU-hours "
                                          r"\(FLOP-based, a100\), above the limit of 1e-09; .* add --yes"):
        _check_budget(matrix, todo, Namespace(max_gpu_hours=1e-9, yes=False))
    _check_budget(matrix, todo, Namespace(max_gpu_hours=1e-9, yes=True))
    _check_budget(matrix, todo, Namespace(max_gpu_hours=1000.0, yes=False))


def test_cluster_file_sets_data_root_prologue_and_limit(tmp_path, monkeypatch, paper_root):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(f"data_root: {paper_root}\nsetup: [module load cuda/12.4, source venv/bin/activate]\n"
                       "srun_args: [--cpu-bind=none]\ngpu: h100\nmax_gpu_hours: 2.5\n")
    monkeypatch.setenv("PATCHBENCH_CLUSTER", str(cluster))
    config = load_cluster_config()
    assert config.gpu == "h100" and config.max_gpu_hours == 2.5
    params = resources({"gpus_per_node": 4}, None, "slurm").executor_parameters()
    assert params["slurm_setup"] == ["module load cuda/12.4", "source venv/bin/activate"]
    assert params["slurm_srun_args"] == ["--cpu-bind=none"]
    matrix = load_matrix(MATRICES / "patchwise-cifar10.yaml")  # no --data-root: the cluster file's
    assert matrix.cells[0].spec.runtime.data_root == str(paper_root)
    cluster.write_text("gpu: tpu\n")
    with pytest.raises(ConfigError, match="gpu: \"tpu\" is not allowed; give one of a100, h100, h200, l40s"):
        load_cluster_config()
