"""APS's pieces against literal transcriptions of visresearch/aps: ``asym_patch_sampling.py`` (the chunk sampler
``get_random_patch_sequence_index_pair`` and the coverage weights of ``sample_overlap_less_patches_with_box1``) and
``module/loss.py::contrastive_loss`` as ``main_pretrain.py`` calls it. The transcriptions keep upstream's code;
``.cuda()`` and the mixup / distributed branches, off in a single-process run without mixup, are left out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from patchbench.benchmark.train import view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.aps import info_nce, symmetric_info_nce
from patchbench.methods.aps_views import APSViews, sample_without_replacement, selective_weights
from patchbench.methods.crops import sample_crop_boxes

# --- asym_patch_sampling.py --------------------------------------------------------------------------------------


def get_overlap_region_box_x1y1x2y2(box1, box2):
    x1_1, y1_1, x2_1, y2_1 = box1
    x1_2, y1_2, x2_2, y2_2 = box2

    x1 = max(x1_1, x1_2)
    y1 = max(y1_1, y1_2)

    x2 = min(x2_1, x2_2)
    y2 = min(y2_1, y2_2)

    is_overlap = (x1 < x2) and (y1 < y2)

    if is_overlap:
        return x1, y1, x2, y2
    else:
        return None


def get_overlap_ratio_in_box1_x1y1x2y2(box1, box2):

    box_overlap = get_overlap_region_box_x1y1x2y2(box1, box2)

    ratio = 0.0

    if box_overlap is not None:
        x1_1, y1_1, x2_1, y2_1 = box1
        x1, y1, x2, y2 = box_overlap

        area_b1 = (x2_1 - x1_1) * (y2_1 - y1_1)
        area_overlap = (x2 - x1) * (y2 - y1)

        ratio = area_overlap / area_b1

    return ratio


def get_boxs_non_overlap_ratio_x1y1x2y2(boxs, height, width, ngrid):
    ygrid_size = height / ngrid
    xgrid_size = width / ngrid

    num_grid = ngrid * ngrid
    ratios = np.ones((num_grid, ))

    for box in boxs:
        x1, y1, x2, y2 = box

        r1 = int(y1 / ygrid_size)
        r2 = int(y2 / ygrid_size)

        r1 = max(0, r1)
        r2 = min(r2, ngrid - 1)

        c1 = int(x1 / xgrid_size)
        c2 = int(x2 / xgrid_size)

        c1 = max(0, c1)
        c2 = min(c2, ngrid - 1)

        for r in range(r1, r2 + 1):
            tmp = r * ngrid
            y1 = r * ygrid_size
            y2 = y1 + ygrid_size
            for c in range(c1, c2 + 1):
                _id = tmp + c

                x1 = c * xgrid_size

                box_grid = (x1, y1, x1 + xgrid_size, y2)

                ratio = get_overlap_ratio_in_box1_x1y1x2y2(box_grid, box)

                ratios[_id] -= ratio
                if ratios[_id] < 1e-6:
                    ratios[_id] = 0.0

    return ratios


def get_grid_boxs(height, width, ngrid, x_offset=0., y_offset=0.):

    ygrid_size = height / ngrid
    xgrid_size = width / ngrid

    boxs = []

    for i in range(ngrid):

        y1 = i * ygrid_size + y_offset
        y2 = y1 + ygrid_size

        for j in range(ngrid):
            x1 = j * xgrid_size + x_offset
            x2 = x1 + xgrid_size
            boxs.append((x1, y1, x2, y2))

    return boxs


def sample_overlap_less_patches_with_box1(box1, box2, ngrid, idxs_patch_box1, power):
    y1, x1, h1, w1 = box1
    y2, x2, h2, w2 = box2

    n = len(idxs_patch_box1)

    boxs_patch = get_grid_boxs(h1, w1, ngrid, x1 - x2, y1 - y2)

    boxs_patch_select = [boxs_patch[i] for i in idxs_patch_box1]

    ratios = get_boxs_non_overlap_ratio_x1y1x2y2(boxs_patch_select, h2, w2, ngrid)
    ratios = ratios**power
    probs = ratios / np.sum(ratios)

    idxs_patch_box2 = np.random.choice(ngrid*ngrid, n, replace=False, p=probs)

    return idxs_patch_box2


def get_random_patch_sequence_index_pair(boxs1, boxs2, ngrid, sampling_ratio, time=4, power=3):
    npatch = ngrid * ngrid
    npatch_select = int(npatch * sampling_ratio)

    idx_patches = np.arange(npatch)
    idxs1 = []
    idxs2 = []
    np.random.shuffle(idx_patches)
    for i in range(time):
        idx1 = idx_patches[npatch_select*i:npatch_select*(i+1)]
        idx2 = sample_overlap_less_patches_with_box1(boxs1, boxs2, ngrid, idx1, power)
        idxs1.append(idx1)
        idxs2.append(idx2)
    return idxs1, idxs2


def upstream_probabilities(box1, box2, ngrid, idx1, power, monkeypatch):
    """The ``p`` that ``sample_overlap_less_patches_with_box1`` passes to ``np.random.choice``."""
    seen = []
    monkeypatch.setattr(np.random, "choice", lambda a, n, replace, p: seen.append(p) or np.arange(n))
    sample_overlap_less_patches_with_box1(box1, box2, ngrid, idx1, power)
    monkeypatch.undo()
    return torch.tensor(seen[0], dtype=torch.float32)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("grid, power", [(8, 3.0), (5, 2.0)])
def test_coverage_weights_equal_upstream_probabilities(monkeypatch, seed, grid, power):
    generator = torch.Generator().manual_seed(seed)
    boxes = sample_crop_boxes(2, 64, 64, (0.15, 1.0), (3 / 4, 4 / 3), generator).float()  # (top, left, h, w)
    n_keep = int(grid * grid * 0.25)
    keep1 = torch.randperm(grid * grid, generator=generator)[:4 * n_keep].view(1, 4, n_keep)
    no_flip = torch.zeros(1, dtype=torch.bool)
    ours = selective_weights(boxes[None, 0], boxes[None, 1], keep1, grid, power, no_flip, no_flip,
                             track_flip=False)[0]
    compared = 0
    for chunk in range(4):
        if not ours[chunk].any():  # view 2 entirely covered: upstream divides by zero
            continue
        expected = upstream_probabilities(boxes[0].tolist(), boxes[1].tolist(), grid, keep1[0, chunk].tolist(),
                                          power, monkeypatch)
        torch.testing.assert_close(ours[chunk] / ours[chunk].sum(), expected, rtol=1e-4, atol=1e-6)
        assert torch.equal(ours[chunk] == 0, expected == 0)  # fully covered cells are never drawn
        compared += 1
    assert compared


def test_coverage_weights_of_a_view_inside_the_other_equal_upstream(monkeypatch):
    """View 2 inside one view-1 cell row: whole view-2 cells are covered (weight exactly 0) or partly covered."""
    box1, box2 = torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([[12.0, 20.0, 24.0, 24.0]])
    keep1 = torch.tensor([[[0, 1, 5, 6]]])  # cells of 16 px: rows 0-1, columns 0-1 and 1-2 (x 16..48, y 0..32)
    no_flip = torch.zeros(1, dtype=torch.bool)
    ours = selective_weights(box1, box2, keep1, 4, 3.0, no_flip, no_flip, track_flip=False)[0, 0]
    expected = upstream_probabilities(box1[0].tolist(), box2[0].tolist(), 4, [0, 1, 5, 6], 3.0, monkeypatch)
    assert (expected == 0).sum() >= 4 and (expected > 0).sum() >= 4
    torch.testing.assert_close(ours / ours.sum(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours == 0, expected == 0)


@pytest.mark.parametrize("grid, sampling_ratio, n_chunks", [(8, 0.25, 4), (5, 0.3, 2), (6, 0.1, 3)])
def test_chunk_sampler_draws_what_upstream_draws(grid, sampling_ratio, n_chunks):
    """Chunk sizes, disjointness and the uniform law of the permutation, against upstream's sampler on the same
    boxes; and each second-view chunk as large as its first-view chunk."""
    box = [0, 0, 4 * grid, 4 * grid]
    np.random.seed(0)
    draws = 2000
    upstream_counts = np.zeros((n_chunks, grid * grid))
    for _ in range(draws):
        idxs1, idxs2 = get_random_patch_sequence_index_pair(box, box, grid, sampling_ratio, n_chunks, power=3)
        for i, idx in enumerate(idxs1):
            upstream_counts[i, idx] += 1
    view = APSViews(image_size=4 * grid, patch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3,
                    sampling_ratio=sampling_ratio, n_chunks=n_chunks)
    boxes = torch.tensor([box, box], dtype=torch.float32).expand(draws, 2, 4)
    keep, _ = view.sample_keep(boxes, torch.zeros(draws, 2, dtype=torch.bool), torch.Generator().manual_seed(0))
    n_keep = len(idxs1[0])
    assert keep.shape == (draws, 2, n_chunks, n_keep) and [len(i) for i in idxs2] == [n_keep] * n_chunks
    first = keep[:, 0].flatten(1)
    assert (first.sort(1).values.diff(dim=1) > 0).all()  # one permutation cut into disjoint chunks
    ours_counts = torch.zeros(n_chunks, grid * grid)
    for i in range(n_chunks):
        ours_counts[i] = torch.bincount(keep[:, 0, i].flatten(), minlength=grid * grid).float()
    # every cell is in chunk i with probability n_keep / grid², in both samplers
    uniform = n_keep / grid ** 2
    assert np.abs(upstream_counts / draws - uniform).max() < 0.05
    assert (ours_counts / draws - uniform).abs().max() < 0.05


def test_sampling_without_replacement_has_numpy_choice_law():
    """Inclusion frequencies of each cell among 3 drawn without replacement, against ``np.random.choice``."""
    weights = np.array([0.05, 0.1, 0.15, 0.2, 0.5, 0.0])
    draws = 40000
    rng = np.random.RandomState(0)
    numpy_counts = np.zeros(6)
    for _ in range(draws):
        numpy_counts[rng.choice(6, 3, replace=False, p=weights / weights.sum())] += 1
    picks, shortfall = sample_without_replacement(torch.tensor(weights, dtype=torch.float32).expand(draws, -1), 3,
                                                  torch.Generator().manual_seed(0))
    ours = torch.bincount(picks.flatten(), minlength=6).double().numpy()
    assert not shortfall.any()
    np.testing.assert_allclose(ours / draws, numpy_counts / draws, atol=0.015)


# --- module/loss.py ----------------------------------------------------------------------------------------------


def contrastive_loss(q, k, T, labels, offset):
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(k, dim=1)
    logits = torch.einsum('nc,mc->nm', [q, k])
    loss = F.cross_entropy(logits / T, labels)
    similarity_pos = torch.mean(torch.diag(logits, diagonal=offset))
    return loss, similarity_pos


def test_info_nce_equals_upstream_contrastive_loss():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    expected, _ = contrastive_loss(q, k, 0.1, torch.arange(6), 0)
    torch.testing.assert_close(info_nce(q, k, 0.1), expected)


@pytest.mark.parametrize("substep", [0, 3])
def test_objective_loss_is_the_upstream_training_step_loss(substep):
    source = build_dataset("digits")
    torch.manual_seed(0)
    method = build_method(MethodChoice("aps"), BackboneConfig(size="pico", drop_path_rate=0.0), source.mean,
                          source.std)
    views = method.make_views(source.load("train").images[:6], view_generator(0, 0))
    heads, keep = method.objective.student_heads, views.meta["keep"]
    with torch.no_grad():  # model(image1, image2, idx1, idx2): one forward per view, BN statistics per view
        z1, z2 = (heads["projector"](method.student(views.crops[v], keep=keep[:, v, substep])[:, 0]) for v in (0, 1))
        p1, p2 = heads["predictor"](z1), heads["predictor"](z2)
    labels, offset = torch.arange(6), 0
    loss1, _ = contrastive_loss(p1, z2.detach(), 0.1, labels, offset)
    loss2, _ = contrastive_loss(p2, z1.detach(), 0.1, labels, offset)
    out = method.training_step(views, Progress(0, 0, 1, 1), substep)
    torch.testing.assert_close(out["loss"].detach(), loss1 + loss2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [2, 7])
@pytest.mark.parametrize("dim", [4, 16])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_symmetric_info_nce_on_random_tensors_equals_upstream_and_stops_the_gradient(batch, dim, temperature):
    """``main_pretrain.py``'s two ``ctr`` calls on random predictions and projections, no model and no dataset: the
    values, and gradients that reach the predictions only (the projections are detached targets)."""
    generator = torch.Generator().manual_seed(batch * dim)
    p1, p2, z1, z2 = (torch.randn(batch, dim, generator=generator, requires_grad=True) for _ in range(4))
    loss_12, loss_21 = symmetric_info_nce(p1, p2, z1, z2, temperature)
    labels = torch.arange(batch)
    expected_12, _ = contrastive_loss(p1, z2.detach(), temperature, labels, 0)
    expected_21, _ = contrastive_loss(p2, z1.detach(), temperature, labels, 0)
    torch.testing.assert_close(loss_12, expected_12)
    torch.testing.assert_close(loss_21, expected_21)
    grads = torch.autograd.grad(loss_12 + loss_21, (p1, p2, z1, z2), allow_unused=True)
    expected_grads = torch.autograd.grad(expected_12 + expected_21, (p1, p2))
    torch.testing.assert_close(grads[0], expected_grads[0])
    torch.testing.assert_close(grads[1], expected_grads[1])
    assert grads[2] is None and grads[3] is None
