"""iBOT: the mask sampler against upstream's loop, the masked-patch loss by hand, the objective against iBOTLoss
(bytedance/ibot ``loader.py::ImageFolderMask``, ``main_ibot.py::iBOTLoss``)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import IBOTPatchLoss

from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.ibot import masked_patch_loss
from patchbench.methods.masking import (
    MaskedMultiCropViews,
    block_masks,
    place_blocks,
    propose_blocks,
    sample_mask_ratios,
)

LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


def reference_block_mask(ratio: float, height: int, width: int, rng: random.Random) -> torch.Tensor:
    """A literal, one-crop transcription of loader.py::ImageFolderMask's 'block' branch (Python's random)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    high, count = ratio * height * width, 0
    while count < high:
        remaining, added = high - count, 0
        for _ in range(10):
            area = rng.uniform((min(height, width) // 3) ** 2, remaining)
            aspect = math.exp(rng.uniform(*LOG_ASPECT))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= remaining:
                    mask[top:top + h, left:left + w] = True
                    added = new
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return mask


def test_mask_ratio_distribution_half_unmasked_else_uniform_01_05():
    views = MaskedMultiCropViews(image_size=32, patch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    generator = torch.Generator().manual_seed(0)
    ratios = sample_mask_ratios(8000, views.pred_ratio, views.pred_ratio_var, generator)
    masked = ratios[ratios > 0]
    assert abs(len(masked) / 8000 - 0.5) < 0.025  # 4.5 sigma of a fair coin over 8000 crops
    assert masked.min() >= 0.1 and masked.max() <= 0.5
    for q, expected in ((0.25, 0.2), (0.5, 0.3), (0.75, 0.4)):  # quartiles of U(0.1, 0.5)
        assert abs(masked.quantile(q).item() - expected) < 0.015
    masks = views.sample_masks(4000, torch.Generator().manual_seed(1))
    counts = masks.flatten(1).sum(1)
    assert masks.shape == (4000, 8, 8)
    assert abs((counts == 0).float().mean().item() - 0.5) < 0.035
    assert counts.max() <= 32  # never above 0.5 of the 8x8 grid


@pytest.mark.parametrize("ratio,side", [(0.3, 8), (0.5, 8), (0.12, 8), (0.4, 14)])
def test_block_masks_match_upstream_loop_in_distribution(ratio, side):
    n = 3000
    ours = block_masks(torch.full((n,), ratio, dtype=torch.float64), side, side, torch.Generator().manual_seed(2))
    rng = random.Random(3)
    theirs = torch.stack([reference_block_mask(ratio, side, side, rng) for _ in range(n)])
    for stat in (lambda m: m.flatten(1).sum(1).float(),  # masked patches
                 lambda m: m.any(2).sum(1).float(),  # rows touched: sensitive to the block shapes
                 lambda m: (m[:, 1:] ^ m[:, :-1]).flatten(1).sum(1).float()):  # vertical edges: compactness
        a, b = stat(ours), stat(theirs)
        stderr = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4.5 * stderr + 1e-6, (a.mean(), b.mean())
    assert (ours.flatten(1).sum(1) <= ratio * side * side).all()


def test_block_proposal_by_hand():
    # area = 4 + (10 - 4)·0.5 = 7, aspect = exp(0) = 1 → 3×3 (√7 ≈ 2.65); top = ⌊0·6⌋, left = ⌊0.999·6⌋ = 5
    u = torch.tensor([0.5, 0.5, 0.0, 0.999], dtype=torch.float64)
    top, left, h, w = propose_blocks(u, torch.tensor(10.0, dtype=torch.float64), 8, 8, LOG_ASPECT)
    assert (top.item(), left.item(), h.item(), w.item()) == (0, 5, 3, 3)
    # the largest aspect 1/0.3 with area 4 + 6·1 = 10 → h = round(√33.3) = 6, w = round(√3) = 2
    u = torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    assert [t.item() for t in propose_blocks(u, torch.tensor(10.0, dtype=torch.float64), 8, 8, LOG_ASPECT)] \
        == [1, 3, 6, 2]


def test_one_block_is_one_filled_rectangle_within_its_budget():
    n, remaining = 2000, 20.0
    mask = torch.zeros(n, 8, 8, dtype=torch.bool)
    added = place_blocks(mask, torch.full((n,), remaining, dtype=torch.float64), torch.ones(n, dtype=torch.bool),
                         torch.Generator().manual_seed(4), LOG_ASPECT)
    rows, cols = mask.any(2), mask.any(1)
    h, w = rows.sum(1), cols.sum(1)
    placed = added > 0
    assert placed.float().mean() > 0.99
    assert torch.equal(mask.flatten(1).sum(1), added) and torch.equal(h * w, added)  # filled bounding box
    first_row, last_row = rows.long().argmax(1), 7 - rows.flip(1).long().argmax(1)
    assert torch.equal((last_row - first_row + 1)[placed], h[placed])  # contiguous rows
    assert (h[placed] < 8).all() and (w[placed] < 8).all() and (added <= remaining).all()
    aspect = h[placed].float() / w[placed].float()
    # an aspect in [0.3, 1/0.3] before rounding each side to the nearest integer
    assert ((h[placed] + 0.5) / (w[placed] - 0.5).clamp(min=0.5) >= 0.3).all()
    assert ((h[placed] - 0.5) / (w[placed] + 0.5) <= 1 / 0.3).all()
    assert (aspect > 1).any() and (aspect < 1).any()


def test_patch_loss_by_hand():
    # 2 crops × 2 tokens × K = 2; crop 0 masks token 0, crop 1 masks nothing. Student logits are divided by 0.1.
    masks = torch.tensor([[True, False], [False, False]])
    teacher_probs = torch.tensor([[0.5, 0.5]])  # the one masked token
    student_logits = torch.tensor([[0.0, 0.1 * math.log(3)]])  # log-softmax = (ln 1/4, ln 3/4)
    loss = masked_patch_loss(teacher_probs, student_logits, masks, 0.1)
    # crop 0: −½(ln ¼ + ln ¾) = ½ ln(16/3); crop 1 adds 0 but counts: mean = ¼ ln(16/3)
    torch.testing.assert_close(loss, torch.tensor(0.25 * math.log(16 / 3)))
    # two masked tokens in one crop are averaged: (½ ln(16/3) + ln 2) / 2, then over the 2 crops
    masks = torch.tensor([[True, True], [False, False]])
    loss = masked_patch_loss(torch.tensor([[0.5, 0.5], [0.25, 0.75]]),
                             torch.tensor([[0.0, 0.1 * math.log(3)], [0.0, 0.0]]), masks, 0.1)
    torch.testing.assert_close(loss, torch.tensor((0.5 * math.log(16 / 3) + math.log(2)) / 4))


def test_patch_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    masks = torch.rand(3, 16) < 0.3
    masks[2] = False  # an unmasked crop
    teacher = torch.softmax(torch.randn(3, 16, 8), -1)
    student = torch.randn(3, 16, 8, requires_grad=True)
    loss = masked_patch_loss(teacher[masks], student[masks], masks, 0.1)
    loss.backward()
    assert (student.grad[~masks] == 0).all() and (student.grad[masks].abs().sum(-1) > 0).all()
    # per-crop mean over masked tokens, the unmasked crop counted as 0 in the mean over 3 crops
    ce = -(teacher * F.log_softmax(student.detach() / 0.1, -1)).sum(-1)
    expected = sum((ce[i][masks[i]].mean() if masks[i].any() else 0.0) for i in range(3)) / 3
    torch.testing.assert_close(loss.detach(), torch.as_tensor(expected))


def test_masked_centre_mode_equals_lightly_ibot_patch_loss():
    torch.manual_seed(0)
    masks = torch.rand(4, 3, 3) < 0.4
    flat = masks.flatten(1)
    teacher_out, student_out = torch.randn(int(flat.sum()), 16), torch.randn(int(flat.sum()), 16)
    lightly_loss = IBOTPatchLoss(output_dim=16, center_momentum=0.9)
    lightly_loss.center.center.normal_()
    center = lightly_loss.center.value.clone()
    expected = lightly_loss(teacher_out, student_out, masks, teacher_temp=0.05)
    ours = masked_patch_loss(F.softmax((teacher_out - center) / 0.05, -1), student_out, flat, 0.1)
    torch.testing.assert_close(ours, expected)


def upstream_ibot_loss(s_cls, s_patch, t_cls, t_patch, masks, center, center2, temp, temp2):
    """main_ibot.py::iBOTLoss.forward as a literal loop (λ1 = λ2 = 1), on per-view tensors."""
    tc = [F.softmax((t - center) / temp, -1) for t in t_cls]
    tp = [F.softmax((t - center2) / temp2, -1) for t in t_patch]
    cls_loss, n1, patch_loss, n2 = 0.0, 0, 0.0, 0
    for q in range(len(t_cls)):
        for v in range(len(s_cls)):
            if v == q:
                ce = (-tp[q] * F.log_softmax(s_patch[v] / 0.1, -1)).sum(-1)
                m = masks[v].float()
                patch_loss += ((ce * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
                n2 += 1
            else:
                cls_loss += (-tc[q] * F.log_softmax(s_cls[v] / 0.1, -1)).sum(-1).mean()
                n1 += 1
    return cls_loss / n1, patch_loss / n2


@pytest.mark.parametrize("centre_tokens", ["all", "masked"])
def test_objective_equals_upstream_loss_and_centres(centre_tokens):
    torch.manual_seed(0)
    method = build_method(MethodChoice("ibot", view_kwargs=dict(n_local=2),
                                       objective_kwargs=dict(out_dim=32, hidden_dim=24, bottleneck_dim=8,
                                                             patch_center_tokens=centre_tokens)),
                          BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
    objective = method.objective
    objective.cls_criterion.center.normal_()
    objective.patch_center.normal_()
    center, center2 = objective.cls_criterion.center.clone().view(1, 32), objective.patch_center.clone()
    captured = {}
    objective.teacher_heads["ibot"].register_forward_hook(lambda m, i, o: captured.update(teacher=o))
    objective.student_heads["ibot"].register_forward_hook(lambda m, i, o: captured.update(student=o))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    views = method.make_views(images, torch.Generator().manual_seed(5))
    progress = Progress(epoch=4, step=0, total_epochs=100, steps_per_epoch=10)
    losses = method.training_step(views, progress)

    batch, n_views = 3, 4
    masks = [views.meta["masks"][:, v].flatten(1) for v in range(2)]
    crop_masked = torch.cat(masks).any(1)
    assert crop_masked.any() and not crop_masked.all()  # both kinds of crops are exercised
    teacher = captured["teacher"].detach()
    t_cls, t_patch = teacher[:, 0].chunk(2), teacher[:, 1:].chunk(2)
    student = captured["student"].detach()
    s_cls = student[:n_views * batch].chunk(n_views)
    # the student projects only the masked tokens; scatter them into a full grid (other positions are ignored)
    s_patch_all = torch.full((2 * batch, 64, 32), float("nan")).masked_scatter_(
        torch.cat(masks)[..., None].expand(-1, -1, 32), student[n_views * batch:])
    s_patch = [s.nan_to_num(0.0) for s in s_patch_all.chunk(2)]
    temp = 0.04 + (0.07 - 0.04) * 4 / 29  # epoch 4 of the 30-epoch warm-up, both temperatures
    cls_loss, patch_loss = upstream_ibot_loss(s_cls, s_patch, t_cls, t_patch, masks, center, center2, temp, temp)
    torch.testing.assert_close(losses["cls_loss"], cls_loss)
    torch.testing.assert_close(losses["patch_loss"], patch_loss)
    torch.testing.assert_close(losses["loss"].detach(), cls_loss + patch_loss)
    torch.testing.assert_close(objective.cls_criterion.center.view(1, 32), 0.9 * center + 0.1 * teacher[:, 0].mean(0))
    all_patches = torch.cat(t_patch)
    used = all_patches.flatten(0, 1) if centre_tokens == "all" else all_patches[torch.cat(masks)]
    torch.testing.assert_close(objective.patch_center, 0.9 * center2 + 0.1 * used.mean(0, keepdim=True))


def test_student_sees_mask_tokens_teacher_the_unmasked_view_and_mim_waits_for_its_epoch():
    torch.manual_seed(0)
    method = build_method(MethodChoice("ibot", view_kwargs=dict(n_local=2, pred_ratio=(0.5,), pred_ratio_var=(0.0,)),
                                       objective_kwargs=dict(out_dim=32, mim_start_epoch=2)),
                          BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
    seen = {"student": [], "teacher": []}
    method.student.register_forward_hook(lambda m, a, kw, o: seen["student"].append(kw.get("mask")), with_kwargs=True)
    method.teacher.register_forward_hook(lambda m, a, kw, o: seen["teacher"].append(kw.get("mask")), with_kwargs=True)
    views = method.make_views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.Generator())
    losses = method.training_step(views, Progress(epoch=2, step=0, total_epochs=5, steps_per_epoch=10))
    assert seen["teacher"] == [None]
    global_mask, local_mask = seen["student"]
    assert torch.equal(global_mask, views.meta["masks"].transpose(0, 1).flatten(0, 1)) and local_mask is None
    assert losses["patch_loss"] > 0
    seen["student"].clear()
    losses = method.training_step(views, Progress(epoch=1, step=0, total_epochs=5, steps_per_epoch=10))
    assert not seen["student"][0].any() and losses["patch_loss"] == 0  # before mim_start_epoch: no masking


def test_mask_token_replaces_patch_embeddings_before_the_position_embedding():
    torch.manual_seed(0)
    encoder = build_method(MethodChoice("ibot", objective_kwargs=dict(out_dim=32)), BackboneConfig(size="pico"),
                           (0.5,) * 3, (0.25,) * 3).student
    entering = []
    encoder.vit.blocks.register_forward_pre_hook(lambda m, args: entering.append(args[0]))
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0] = True  # image 0 fully masked, image 1 not at all
    encoder(torch.randn(2, 3, 32, 32), mask=mask)
    pos = encoder.vit.pos_embed[0, encoder.num_prefix_tokens:]
    torch.testing.assert_close(entering[0][0, encoder.num_prefix_tokens:], encoder.mask_token[0] + pos)
    assert not torch.allclose(entering[0][1, encoder.num_prefix_tokens:], encoder.mask_token[0] + pos)
