"""APS's mechanisms against hand-built cases: sparse chunks, selective weights, kept indices, InfoNCE, substeps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.store import RunDir
from patchbench.benchmark.train import pretrain, view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.aps import info_nce
from patchbench.methods.aps_views import APSViews, sample_without_replacement, selective_weights

W = 0.75 ** 3  # a view-2 cell a quarter covered by view 1's kept cells, power 3
NO = torch.tensor([False])
YES = torch.tensor([True])


def views_of(patch_size: int, batch: int = 8, **kwargs):
    images = (torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    strategy = APSViews(image_size=32, patch_size=patch_size, mean=(0.5,) * 3, std=(0.25,) * 3, **kwargs)
    return strategy(images, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("patch_size, n_keep", [(4, 16), (2, 64)])
def test_first_view_chunks_are_disjoint_and_cover_the_grid(patch_size, n_keep):
    keep = views_of(patch_size).meta["keep"]
    cells = (32 // patch_size) ** 2
    assert keep.shape == (8, 2, 4, n_keep) and keep.dtype == torch.long
    for sample in keep[:, 0]:
        assert torch.equal(sample.flatten().sort().values, torch.arange(cells))
    for sample in keep[:, 1]:  # view 2: no duplicates within a chunk
        assert all(len(set(chunk.tolist())) == n_keep for chunk in sample)


def test_second_view_weights_on_a_hand_built_pair_of_boxes():
    # 2×2 grid. View 1: source [0, 16]², cells of 8 px; view 2: source [4, 20]², cells of 8 px.
    box1, box2 = torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[4.0, 4.0, 16.0, 16.0]])
    keep1 = torch.tensor([[[0], [3]]])  # chunk 0 keeps view-1 cell 0, chunk 1 keeps cell 3
    weights = selective_weights(box1, box2, keep1, 2, 3.0, NO, NO, track_flip=True)
    # cell 0 = [0, 8]² covers a quarter of view-2 cell 0 = [4, 12]² and nothing else;
    # cell 3 = [8, 16]² covers a quarter of each of the four view-2 cells
    torch.testing.assert_close(weights, torch.tensor([[[W, 1, 1, 1], [W, W, W, W]]]))


def test_identical_boxes_exclude_the_first_view_cells():
    box = torch.tensor([[3.0, 5.0, 20.0, 24.0]])
    keep1 = torch.tensor([[[0, 5, 9, 63]]])
    weights = selective_weights(box, box, keep1, 8, 3.0, NO, NO, track_flip=True)[0, 0]
    expected = torch.ones(64)
    expected[[0, 5, 9, 63]] = 0
    torch.testing.assert_close(weights, expected)


def test_track_flip_mirrors_the_grid_columns():
    box1, box2 = torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[4.0, 4.0, 16.0, 16.0]])
    keep1 = torch.tensor([[[0]]])
    # view 1 flipped: encoder patch 0 shows source cell 1 = x [8, 16], y [0, 8]: a quarter of view-2 cells 0, 1
    tracked = selective_weights(box1, box2, keep1, 2, 3.0, YES, NO, track_flip=True)
    torch.testing.assert_close(tracked, torch.tensor([[[W, W, 1, 1]]]))
    upstream = selective_weights(box1, box2, keep1, 2, 3.0, YES, NO, track_flip=False)
    torch.testing.assert_close(upstream, torch.tensor([[[W, 1, 1, 1]]]))
    # view 2 flipped: its encoder indices see the column-mirrored cells
    flipped2 = selective_weights(box1, box2, keep1, 2, 3.0, NO, YES, track_flip=True)
    torch.testing.assert_close(flipped2, torch.tensor([[[1, W, 1, 1]]]))


def test_sampling_without_replacement_follows_the_weights():
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]).expand(20000, -1)
    picks, shortfall = sample_without_replacement(weights, 1, torch.Generator().manual_seed(0))
    freq = torch.bincount(picks.flatten(), minlength=5).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0]), atol=0.015, rtol=0)
    assert not shortfall.any()
    # fewer positive weights than picks: the positives first, then zero-weight cells, flagged
    picks, shortfall = sample_without_replacement(torch.tensor([[0.0, 5.0, 0.0, 1.0]]), 3,
                                                  torch.Generator().manual_seed(0))
    assert set(picks[0, :2].tolist()) == {1, 3} and len(set(picks[0].tolist())) == 3 and shortfall.all()


def test_info_nce_against_a_hand_computation():
    queries = torch.tensor([[3.0, 0.0], [0.6, 0.8]])  # not normalised: the loss normalises
    keys = torch.tensor([[0.6, 0.8], [0.0, 2.0]])
    # logits / τ=0.1: row 0 = [6, 0] (target 0), row 1 = [10, 8] (target 1)
    expected = (math.log(1 + math.exp(-6)) + math.log(1 + math.exp(2))) / 2
    assert info_nce(queries, keys, 0.1).item() == pytest.approx(expected, rel=1e-6)


def aps_method(**choice):
    source = build_dataset("digits")
    torch.manual_seed(0)
    return build_method(MethodChoice("aps", **choice), BackboneConfig(size="pico"), source.mean, source.std), source


def test_encoder_sees_only_the_kept_patches_and_substeps_use_their_chunk():
    method, source = aps_method()
    views = method.make_views(source.load("train").images[:8], view_generator(0, 0))
    keep = views.meta["keep"]
    assert keep.shape == (8, 2, 4, 16)
    assert method.student(views.crops[0], keep=keep[:, 0, 0]).shape == (8, 1 + 16, 32)
    method.eval()
    progress = Progress(epoch=0, step=0, total_epochs=1, steps_per_epoch=4)
    losses = [method.training_step(views, progress, substep)["loss"].item() for substep in range(4)]
    assert len(set(losses)) == 4


def test_one_step_variant_and_a_mismatch_is_refused():
    method, source = aps_method(view_kwargs={"n_chunks": 1}, objective_kwargs={"steps_per_batch": 1})
    assert method.steps_per_batch == 1
    with pytest.raises(ValueError, match="n_chunks"):  # refused when the method is built
        aps_method(objective_kwargs={"steps_per_batch": 1})
    views = method.make_views(source.load("train").images[:4], view_generator(0, 0))
    views.meta["keep"] = views.meta["keep"].repeat(1, 1, 2, 1)  # a view strategy without n_chunks: at the step
    with pytest.raises(ValueError, match="n_chunks"):
        method.training_step(views, Progress(epoch=0, step=0, total_epochs=1, steps_per_epoch=1))


@pytest.mark.slow
def test_trainer_takes_four_optimiser_steps_per_loaded_batch(tmp_path):
    spec = make_spec(matrix="aps", method="aps", dataset="digits", seed=0, image_size=32,
                     backbone={"size": "pico"}, budget={"epochs": 1, "batch_size": 448}, optim={"warmup_epochs": 0},
                     runtime={"device": "cpu", "log_every": 1})
    run = RunDir(tmp_path / "run")
    run.write_spec(spec)
    summary = pretrain(spec, run)
    rows = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert summary["steps"] == 4 * (1347 // 448) == len(rows)
    assert [r["step"] for r in rows] == list(range(12))
    assert len({r["lr"] for r in rows}) == 12  # the schedule advances per optimiser step
