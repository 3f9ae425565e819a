"""Batched RandomResizedCrop + flip against torchvision."""

import math

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from patchbench.methods.crops import resized_crop, sample_crop_boxes


def test_boxes_follow_random_resized_crop_rules():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(5000, 32, 32, (0.05, 0.4), (3 / 4, 4 / 3), g)
    top, left, h, w = boxes.unbind(1)
    assert torch.all(boxes == boxes.round())
    assert torch.all((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32) & (h > 0) & (w > 0))
    # sizes come from a rounded area in scale*1024 and a rounded ratio in [3/4, 4/3]
    assert torch.all(h * w <= (math.sqrt(0.4 * 1024 * 4 / 3) + 0.5) * (math.sqrt(0.4 * 1024 * 3 / 4) + 0.5))
    # offsets are uniform over the valid range: mean relative offset ~ 0.5
    rel_top = top / (32 - h).clamp(min=1)
    assert abs(rel_top[h < 32].mean().item() - 0.5) < 0.03


def test_box_statistics_match_torchvision():
    torch.manual_seed(0)
    ref = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(3, 32, 32), [0.4, 1.0], [3 / 4, 4 / 3])
                        for _ in range(4000)], dtype=torch.float32)
    ours = sample_crop_boxes(4000, 32, 32, (0.4, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    area_ref, area_ours = ref[:, 2] * ref[:, 3], ours[:, 2] * ours[:, 3]
    assert abs(area_ref.mean() - area_ours.mean()) < 0.02 * 1024
    assert abs(ref[:, 0].mean() - ours[:, 0].mean()) < 0.3
    assert abs((ref[:, 3] / ref[:, 2]).mean() - (ours[:, 3] / ours[:, 2]).mean()) < 0.02


def test_fallback_is_centre_crop():
    # scale > 1 is never valid: every sample falls back to the full (square) image
    boxes = sample_crop_boxes(4, 20, 20, (1.5, 2.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 4))


def test_resized_crop_matches_torchvision_inside_the_crop():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32)
    boxes = torch.tensor([[4.0, 6.0, 16.0, 16.0], [0.0, 0.0, 32.0, 32.0], [10.0, 3.0, 20.0, 12.0]])
    flips = torch.tensor([False, False, False])
    ours = resized_crop(images, boxes, flips, 32, mode="bilinear")
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(images[i], top, left, h, w, [32, 32], antialias=False,
                              interpolation=v2.InterpolationMode.BILINEAR)
        # away from the crop border, where torchvision replicates the crop edge and we read the true neighbours
        torch.testing.assert_close(ours[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], images[1], atol=1e-5, rtol=0)  # the full box is the identity


def test_flip_mirrors_the_crop():
    images = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[3.0, 5.0, 20.0, 24.0]] * 2)
    plain = resized_crop(images, boxes, torch.tensor([False, False]), 16)
    flipped = resized_crop(images, boxes, torch.tensor([True, False]), 16)
    torch.testing.assert_close(flipped[0], plain[0].flip(-1))
    torch.testing.assert_close(flipped[1], plain[1])
