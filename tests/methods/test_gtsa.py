"""GTSA's mechanisms against hand-built cases: boxes in rotated frames, rot90 alignment, overlap, gating."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from patchbench.benchmark.train import view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.crops import resized_crop
from patchbench.methods.gtsa import aligned_rois, best_match_cosines, pc_coefficient
from patchbench.methods.gtsa_views import GTSAViews, overlap_in_crop_frame, rotate_boxes, sample_overlapping_boxes

BOX = torch.tensor([2.0, 4.0, 10.0, 20.0])  # (x1, y1, x2, y2) in a 32×32 crop


@pytest.mark.parametrize("k, expected", [(0, (2, 4, 10, 20)), (1, (4, 22, 20, 30)), (2, (22, 12, 30, 28)),
                                         (3, (12, 2, 28, 10))])
def test_rotate_boxes_hand_cases(k, expected):
    assert rotate_boxes(BOX, torch.tensor(k), 32).tolist() == list(expected)


@pytest.mark.parametrize("k", range(4))
def test_rotate_boxes_matches_rot90_of_a_box_mask(k):
    mask = torch.zeros(32, 32)
    mask[4:20, 2:10] = 1  # rows y1:y2, columns x1:x2
    ys, xs = torch.nonzero(torch.rot90(mask, k, dims=(0, 1)), as_tuple=True)
    bbox = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert rotate_boxes(BOX, torch.tensor(k), 32).tolist() == bbox


def test_rotations_compose_to_identity():
    def one(b):
        return rotate_boxes(b, torch.tensor(1), 32)

    assert torch.equal(one(one(one(one(BOX)))), BOX)
    assert torch.equal(rotate_boxes(one(BOX), torch.tensor(3), 32), BOX)
    assert torch.equal(rotate_boxes(rotate_boxes(BOX, torch.tensor(2), 32), torch.tensor(2), 32), BOX)


def test_overlap_in_crop_frames_hand_cases():
    a = torch.tensor([0.0, 0.0, 16.0, 16.0])  # top, left, height, width (source pixels)
    b = torch.tensor([8.0, 8.0, 16.0, 16.0])
    # the overlap is source [8, 16]²: in a's 32 px frame (16, 16, 32, 32), turned 90° → (16, 0, 32, 16)
    assert overlap_in_crop_frame(a, b, 32, torch.tensor(1)).tolist() == [16, 0, 32, 16]
    # in b's 16 px frame (0, 0, 8, 8), turned 180° → (8, 8, 16, 16)
    assert overlap_in_crop_frame(b, a, 16, torch.tensor(2)).tolist() == [8, 8, 16, 16]
    # anisotropic scaling: a = rows 4..12, columns 0..16 at 32 px (×2 in x, ×4 in y); overlap x 8..16, y 4..12
    a, b = torch.tensor([4.0, 0.0, 8.0, 16.0]), torch.tensor([0.0, 8.0, 32.0, 24.0])
    assert overlap_in_crop_frame(a, b, 32, torch.tensor(0)).tolist() == [16, 0, 32, 32]
    assert overlap_in_crop_frame(a, b, 32, torch.tensor(3)).tolist() == [0, 16, 32, 32]


def coordinate_map(box: torch.Tensor, size: int, turns: int) -> torch.Tensor:
    """A (1, 2, S, S) 'feature map' holding the source (x, y) of each pixel centre of a crop, then rotated."""
    top, left, height, width = box.tolist()
    centres = (torch.arange(size) + 0.5) / size
    x = (left + centres * width).expand(size, size)
    y = (top + centres * height)[:, None].expand(size, size)
    return torch.rot90(torch.stack([x, y])[None], turns, dims=(-2, -1))


@pytest.mark.parametrize("k_teacher, k_student", list(itertools.product(range(4), range(4))))
def test_teacher_roi_rotated_into_the_student_frame(k_teacher, k_student):
    teacher_box, student_box = torch.tensor([2.0, 4.0, 24.0, 24.0]), torch.tensor([12.0, 14.0, 16.0, 12.0])
    t_map, s_map = coordinate_map(teacher_box, 32, k_teacher), coordinate_map(student_box, 16, k_student)
    t_roi_box = overlap_in_crop_frame(teacher_box, student_box, 32, torch.tensor(k_teacher))[None]
    s_roi_box = overlap_in_crop_frame(student_box, teacher_box, 16, torch.tensor(k_student))[None]
    delta = torch.tensor([(k_student - k_teacher) % 4])
    t_roi, s_roi = aligned_rois(t_map, t_roi_box, s_map, s_roi_box, delta, 4, 1)
    # equal up to the bilinear clamping at the map border (half a pixel of the coarser map: < 1 source pixel)
    assert (t_roi - s_roi).abs().max() < 1.0
    if k_teacher != k_student:  # without the rotation the RoIs disagree by several pixels
        unrotated, _ = aligned_rois(t_map, t_roi_box, s_map, s_roi_box, torch.zeros(1), 4, 1)
        assert (unrotated - s_roi).abs().max() > 4.0


def check_overlaps(boxes: torch.Tensor, n_global: int = 2, image_area: int = 1024):
    threshold = int(0.01 * image_area)
    top, left, h, w = boxes.unbind(-1)
    for v in range(1, boxes.shape[1]):
        for g in range(min(v, n_global)):
            dx = (torch.minimum(left[:, v] + w[:, v], left[:, g] + w[:, g]) - torch.maximum(left[:, v], left[:, g]))
            dy = (torch.minimum(top[:, v] + h[:, v], top[:, g] + h[:, g]) - torch.maximum(top[:, v], top[:, g]))
            overlap = dx.clamp(min=0) * dy.clamp(min=0)
            assert (overlap > threshold * (2 if v < n_global else 1)).all(), (v, g)


def test_overlap_constraint_holds_for_every_sample_over_many_draws():
    scales = [(0.3, 1.0)] * 2 + [(0.1, 0.3)] * 8
    for seed in range(40):
        boxes, fallback = sample_overlapping_boxes(64, 32, 32, scales, (3 / 4, 4 / 3), 2,
                                                   torch.Generator().manual_seed(seed))
        check_overlaps(boxes)
        assert not fallback.any()


def test_capped_redraws_fall_back_to_a_box_that_satisfies_the_constraint():
    scales = [(0.3, 1.0)] * 2 + [(0.01, 0.02)] * 8  # tiny locals miss the globals' overlap most of the time
    boxes, fallback = sample_overlapping_boxes(256, 32, 32, scales, (3 / 4, 4 / 3), 2,
                                               torch.Generator().manual_seed(0), max_redraws=0)
    assert fallback[:, 2:].any() and not fallback[:, 0].any()
    check_overlaps(boxes)


def test_views_are_the_rotated_crops_of_the_recorded_boxes():
    images = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    view = GTSAViews(image_size=32, patch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, n_local=2, jitter_p=0.0,
                     gray_p=0.0, blur_p=0.0)
    views = view(images, torch.Generator().manual_seed(1))
    check_overlaps(views.meta["boxes"])
    for v, crop in enumerate(views.crops):
        plain = resized_crop(images.float() / 255, views.meta["boxes"][:, v], torch.zeros(3, dtype=torch.bool),
                             crop.shape[-1], mode="bilinear")
        for b in range(3):
            expected = torch.rot90((plain[b] - 0.5) / 0.25, int(views.meta["rotations"][b, v]), dims=(-2, -1))
            torch.testing.assert_close(crop[b], expected)


def test_best_match_cosines_against_a_reference_loop():
    q, c = torch.randn(2, 6, 5, requires_grad=True), torch.randn(2, 9, 5, requires_grad=True)
    forward, backward = best_match_cosines(q, c, 3)
    for b in range(2):
        for queries, candidates, got in ((q[b], c[b], forward[b]), (c[b], q[b], backward[b])):
            best = [max(F.cosine_similarity(x, y, dim=0).item() for y in candidates) for x in queries]
            torch.testing.assert_close(got, torch.tensor(sorted(best, reverse=True)[:3]))
    (forward.sum() + backward.sum()).backward()
    assert q.grad.abs().sum() > 0 and c.grad.abs().sum() > 0


def test_pc_coefficient_gating():
    assert [pc_coefficient(e, 10, 0.5) for e in (0, 9, 10, 11, 50)] == [0.0, 0.0, 0.0, 0.5, 0.5]


def test_loss_switches_the_patch_loss_on_after_its_epoch_and_keeps_the_metadata():
    source = build_dataset("digits")
    torch.manual_seed(0)
    method = build_method(MethodChoice("gtsa", view_kwargs={"n_local": 2}), BackboneConfig(size="pico"),
                          source.mean, source.std).eval()
    views = method.make_views(source.load("train").images[:4], view_generator(0, 0))
    rotations = views.meta["rotations"].clone()
    for epoch, coef in ((10, 0.0), (11, 0.5)):
        out = method.training_step(views, Progress(epoch=epoch, step=0, total_epochs=100, steps_per_epoch=1))
        assert out["pc_coef"].item() == coef and out["pc_loss"].item() < 0
        expected = out["crop_loss"] + coef * out["pc_loss"] + 0.5 * out["rot_loss"]
        torch.testing.assert_close(out["loss"].detach(), expected)
    assert torch.equal(views.meta["rotations"], rotations)
