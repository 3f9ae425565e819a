"""GTSA's pieces against literal transcriptions of bok3948/GTSA: ``util/gtsa_transforms.py`` (the overlap
sampler's acceptance loop in ``GTSATransforms.__call__``, ``calculate_bboxes`` and ``rotate_bbox``) and
``model_pretrain/gtsa.py`` (``neirest_neighbores_on_l2`` with ``cosine_loss``, ``rot_predict``, ``Projector``,
``Predictor`` and ``rot_predictor``). The transcriptions keep upstream's code; only ``self`` became a namespace and
the image operations around the box logic were left out.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import RandomResizedCrop

import patchbench.methods.gtsa_views as gtsa_views
from patchbench.benchmark.train import view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.gtsa import best_match_cosines, crop_and_pc_losses
from patchbench.methods.gtsa_heads import ConvPredictor, ConvProjector, rotation_head, token_map
from patchbench.methods.gtsa_views import overlap_in_crop_frame, sample_overlapping_boxes

# --- util/gtsa_transforms.py -------------------------------------------------------------------------------------


def _upcast(t):
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    else:
        return t if t.dtype in (torch.int32, torch.int64) else t.int()


def upstream_crop_boxes(self, sample_size, get_params):
    """The box loop of ``GTSATransforms.__call__``: (V, 4) ``crop_bboxes`` (x1, y1, x2, y2)."""
    crop_bboxes = torch.zeros(len(self.rrc_transforms), 4)
    for i, rrc_transform in enumerate(self.rrc_transforms):
        y1, x1, h, w = get_params(rrc_transform.scale, rrc_transform.ratio)
        if i > 0:
            while True:
                bbox = torch.Tensor([x1, y1, x1 + w, y1 + h])
                left_top = torch.max(bbox.unsqueeze(0)[:, None, :2],
                                     crop_bboxes[:min(i, self.nmb_crops[0]), :2])
                right_bottom = torch.min(bbox.unsqueeze(0)[:, None, 2:],
                                         crop_bboxes[:min(i, self.nmb_crops[0]), 2:])
                wh = _upcast(right_bottom - left_top).clamp(min=0)
                inter = wh[:, :, 0] * wh[:, :, 1]

                min_intersection = int((sample_size[0] * sample_size[1]) * self.min_intersection)
                if i in list(range(self.nmb_crops[0])):
                    min_intersection *= 2
                if not torch.all(inter > min_intersection):
                    y1, x1, h, w = get_params(rrc_transform.scale, rrc_transform.ratio)
                else:
                    break
        crop_bboxes[i] = torch.Tensor([x1, y1, x1 + w, y1 + h])
    return crop_bboxes


def rotate_bbox(bbox, angle, img_size):
    x1, y1, x2, y2 = bbox
    new_x1, new_y1, new_x2, new_y2 = 0, 0, 0, 0
    if angle == 0:
        new_x1, new_y1, new_x2, new_y2 = x1, y1, x2, y2
    elif angle == 90:
        new_x1, new_y1, new_x2, new_y2 = y1, img_size - x2, y2, img_size - x1
    elif angle == 180:
        new_x1, new_y1, new_x2, new_y2 = img_size - x2, img_size - y2, img_size - x1, img_size - y1
    elif angle == 270:
        new_x1, new_y1, new_x2, new_y2 = img_size - y2, x1, img_size - y1, x2
    else:
        raise ValueError("Angle must be 0, 90, 180, or 270.")
    return torch.tensor([new_x1, new_y1, new_x2, new_y2])


def calculate_bboxes(self, crop_bboxes, degrees=None):
    gc_bboxes = crop_bboxes[:self.nmb_crops[0]]
    left_top = torch.max(gc_bboxes[:, None, :2], crop_bboxes[:, :2])
    right_bottom = torch.min(gc_bboxes[:, None, 2:], crop_bboxes[:, 2:])
    assert torch.all((right_bottom - left_top) > 0)

    ws_hs = torch.stack((crop_bboxes[:, 2] - crop_bboxes[:, 0], crop_bboxes[:, 3] - crop_bboxes[:, 1])).T[:, None]

    crops_sizes = torch.repeat_interleave(torch.Tensor([self.size_crops[0]]), self.nmb_crops[0] * 2)\
        .reshape(self.nmb_crops[0], 2)
    if len(self.size_crops) == 2:
        lc_crops_sizes = torch.repeat_interleave(torch.Tensor([self.size_crops[1]]), self.nmb_crops[1] * 2)\
            .reshape(self.nmb_crops[1], 2)
        crops_sizes = torch.cat((crops_sizes, lc_crops_sizes))[:, None]

    x1s_y1s = crop_bboxes[:, None, :2]

    left_top_scaled_gc = crops_sizes[:2] * ((left_top - x1s_y1s[:2]) / ws_hs[:2])
    right_bottom_scaled_gc = crops_sizes[:2] * ((right_bottom - x1s_y1s[:2]) / ws_hs[:2])
    left_top_otc_points_per_gc = torch.stack([left_top[i] for i in range(self.nmb_crops[0])], dim=1)
    right_bottom_otc_points_per_gc = torch.stack([right_bottom[i] for i in range(self.nmb_crops[0])], dim=1)
    left_top_scaled_otc = crops_sizes * ((left_top_otc_points_per_gc - x1s_y1s) / ws_hs)
    right_bottom_scaled_otc = crops_sizes * ((right_bottom_otc_points_per_gc - x1s_y1s) / ws_hs)

    gc_bboxes = torch.cat((left_top_scaled_gc, right_bottom_scaled_gc), dim=2)
    otc_bboxes = torch.cat((left_top_scaled_otc, right_bottom_scaled_otc), dim=2)

    for i in range(otc_bboxes.shape[0]):
        for j in range(otc_bboxes.shape[1]):
            if i < self.nmb_crops[0]:
                size = self.size_crops[0]
            else:
                size = self.size_crops[1]
            otc_bboxes[i][j] = rotate_bbox(otc_bboxes[i][j], degrees[i], size)

    for i in range(gc_bboxes.shape[0]):
        for j in range(gc_bboxes.shape[1]):
            if i < self.nmb_crops[0]:
                size = self.size_crops[0]
            else:
                size = self.size_crops[1]
            gc_bboxes[i][j] = rotate_bbox(gc_bboxes[i][j], degrees[i], size)

    return gc_bboxes, otc_bboxes


def transforms(sizes, counts, scales):
    """The attributes of ``GTSATransforms(size_crops, nmb_crops, min/max_scale_crops)`` the box code reads."""
    rrc = []
    for size, count, scale in zip(sizes, counts, scales):
        rrc.extend([RandomResizedCrop(size, scale=scale)] * count)
    return SimpleNamespace(size_crops=sizes, nmb_crops=counts, min_intersection=0.01, rrc_transforms=rrc)


def candidate_stream(seed):
    """torchvision's ``RandomResizedCrop.get_params`` on a 32×32 image, drawn from one seeded generator."""
    torch.manual_seed(seed)
    image = torch.zeros(3, 32, 32)
    return lambda scale, ratio: RandomResizedCrop.get_params(image, list(scale), list(ratio))


SCALES = [(0.05, 0.3), (0.02, 0.1)]  # small crops, so that many candidates are rejected


@pytest.mark.parametrize("seed", range(12))
def test_overlap_sampler_keeps_the_candidates_upstream_accepts(monkeypatch, seed):
    """Both samplers consume one candidate stream (batch of 1: ours redraws one row at a time, as upstream's
    loop); they must keep the same candidate for every view."""
    self = transforms([16, 8], [2, 4], SCALES)
    expected = upstream_crop_boxes(self, (32, 32), candidate_stream(seed))

    draw, drawn = candidate_stream(seed), []

    def scripted(n, height, width, scale, ratio, generator):
        assert n == 1
        drawn.append(draw(scale, ratio))
        return torch.tensor([drawn[-1]])

    monkeypatch.setattr(gtsa_views, "sample_crop_boxes", scripted)
    scales = [SCALES[0]] * 2 + [SCALES[1]] * 4
    boxes, fallback = sample_overlapping_boxes(1, 32, 32, scales, (3 / 4, 4 / 3), 2, torch.Generator(),
                                               max_redraws=10_000)
    top, left, height, width = boxes[0].unbind(-1)
    assert not fallback.any()
    assert len(drawn) > 6  # candidates were rejected
    ours = torch.stack([left, top, left + width, top + height], -1).float()
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_overlap_boxes_in_rotated_crop_frames_equal_calculate_bboxes(seed):
    sizes, counts = [32, 16], [2, 4]
    generator = torch.Generator().manual_seed(seed)
    boxes, _ = sample_overlapping_boxes(1, 64, 64, [(0.3, 1.0)] * 2 + [(0.1, 0.3)] * 4, (3 / 4, 4 / 3), 2, generator)
    boxes = boxes[0].float()  # (V, 4) top, left, height, width
    turns = torch.randint(0, 4, (6,), generator=generator)
    top, left, height, width = boxes.unbind(-1)
    gc, otc = calculate_bboxes(SimpleNamespace(size_crops=sizes, nmb_crops=counts),
                               torch.stack([left, top, left + width, top + height], -1), [90 * int(k) for k in turns])
    def size(i):
        return sizes[0] if i < 2 else sizes[1]

    for i in range(2):  # gc[i][j]: global i's overlap with crop j, in global i's rotated frame
        for j in range(6):
            torch.testing.assert_close(overlap_in_crop_frame(boxes[i], boxes[j], size(i), turns[i]), gc[i][j])
    for i in range(6):  # otc[i][j]: crop i's overlap with global j, in crop i's rotated frame
        for j in range(2):
            torch.testing.assert_close(overlap_in_crop_frame(boxes[i], boxes[j], size(i), turns[i]), otc[i][j])


# --- model_pretrain/gtsa.py --------------------------------------------------------------------------------------


def batched_index_select(input, dim, index):
    for ii in range(1, len(input.shape)):
        if ii != dim:
            index = index.unsqueeze(ii)
    expanse = list(input.shape)
    expanse[0] = -1
    expanse[dim] = -1
    index = index.expand(expanse)
    return torch.gather(input, dim, index)


def neirest_neighbores(input_maps, candidate_maps, distances, num_matches):
    batch_size = input_maps.size(0)

    if num_matches is None or num_matches == -1:
        num_matches = input_maps.size(1)

    topk_values, topk_indices = distances.topk(k=1, largest=False)
    topk_values = topk_values.squeeze(-1)
    topk_indices = topk_indices.squeeze(-1)

    sorted_values, sorted_values_indices = torch.sort(topk_values, dim=1)
    sorted_indices, sorted_indices_indices = torch.sort(sorted_values_indices, dim=1)

    mask = torch.stack(
        [
            torch.where(sorted_indices_indices[i] < num_matches, True, False)
            for i in range(batch_size)
        ]
    )
    topk_indices_selected = topk_indices.masked_select(mask)
    topk_indices_selected = topk_indices_selected.reshape(batch_size, num_matches)

    indices = (
        torch.arange(0, topk_values.size(1))
        .unsqueeze(0)
        .repeat(batch_size, 1)
        .to(topk_values.device)
    )
    indices_selected = indices.masked_select(mask)
    indices_selected = indices_selected.reshape(batch_size, num_matches)

    filtered_input_maps = batched_index_select(input_maps, 1, indices_selected)
    filtered_candidate_maps = batched_index_select(
        candidate_maps, 1, topk_indices_selected
    )

    return filtered_input_maps, filtered_candidate_maps


def neirest_neighbores_on_l2(input_maps, candidate_maps, num_matches):
    input_maps_normalized = F.normalize(input_maps, p=2, dim=-1)
    candidate_maps_normalized = F.normalize(candidate_maps, p=2, dim=-1)
    cosine_similarities = -(torch.bmm(input_maps_normalized, candidate_maps_normalized.transpose(1, 2)))
    return neirest_neighbores(input_maps, candidate_maps, cosine_similarities, num_matches)


def cosine_loss(feats_1, feats_2):
    cosine_similarity = nn.CosineSimilarity(dim=-1)
    cos_similarity = cosine_similarity(feats_1, feats_2)
    loss = - cos_similarity
    return loss


@pytest.mark.parametrize("n_student, n_teacher", [(64, 64), (16, 64)])
def test_best_half_patch_loss_equals_upstream_matching(n_student, n_teacher):
    """The pair's patch-correspondence loss of ``GTSA.roi_align`` on the maps of one (teacher, student) pair."""
    generator = torch.Generator().manual_seed(n_student)
    stu_feats = torch.randn(3, n_student, 12, generator=generator)
    tea_feats = torch.randn(3, n_teacher, 12, generator=generator)
    num_matches = n_student // 2
    maps_1_filtered, maps_1_nn = neirest_neighbores_on_l2(stu_feats, tea_feats, num_matches)
    maps_1_filtered_sym, maps_1_nn_sym = neirest_neighbores_on_l2(tea_feats, stu_feats, num_matches)
    pc_loss_1 = cosine_loss(maps_1_filtered, maps_1_nn)
    pc_loss_2 = cosine_loss(maps_1_filtered_sym, maps_1_nn_sym)
    expected = 0.5 * (pc_loss_1.mean() + pc_loss_2.mean())

    forward, backward = best_match_cosines(stu_feats, tea_feats, num_matches)
    torch.testing.assert_close(-0.5 * (forward.mean() + backward.mean()), expected)


def test_rotation_loss_equals_upstream_rot_predict():
    source = build_dataset("digits")
    torch.manual_seed(0)
    n_local = 2
    method = build_method(MethodChoice("gtsa", view_kwargs={"n_local": n_local}),
                          BackboneConfig(size="pico", drop_path_rate=0.0), source.mean, source.std)
    views = method.make_views(source.load("train").images[:4], view_generator(0, 3))
    assert len(set(views.meta["rotations"].flatten().tolist())) > 1
    out = method.training_step(views, Progress(epoch=0, step=0, total_epochs=1, steps_per_epoch=1))

    with torch.no_grad():
        backbone_out_list = [method.student(torch.cat(views.global_crops))[:, 1:],
                             method.student(torch.cat(views.local_crops))[:, 1:]]
    # default_collate of the per-sample float16 angles in degrees: one (B,) tensor per view
    bbox = {"angles": [(90 * views.meta["rotations"][:, v]).to(torch.float16) for v in range(views.n_views)]}
    rot_predictor = method.objective.student_heads["rotation"]
    args = SimpleNamespace(num_crops=[2, n_local])

    global_student_out_list = backbone_out_list[0].chunk(args.num_crops[0])
    local_student_out_list = backbone_out_list[1].chunk(args.num_crops[1])
    total_student_out_list = []
    for i in range(args.num_crops[0]):
        total_student_out_list.append(global_student_out_list[i])
    for i in range(args.num_crops[1]):
        total_student_out_list.append(local_student_out_list[i])
    total_loss = 0
    with torch.no_grad():
        for v in range(len(total_student_out_list)):
            global_avg_output = total_student_out_list[v].mean(dim=1)
            rot_logits = rot_predictor(global_avg_output)
            bbox["angles"][v][bbox["angles"][v] == 0] = 0
            bbox["angles"][v][bbox["angles"][v] == 90] = 1
            bbox["angles"][v][bbox["angles"][v] == 180] = 2
            bbox["angles"][v][bbox["angles"][v] == 270] = 3
            rot_labels = bbox["angles"][v].long()
            rot_loss = torch.nn.functional.cross_entropy(rot_logits, rot_labels)
            total_loss += rot_loss
    total_loss /= len(total_student_out_list)
    torch.testing.assert_close(out["rot_loss"], total_loss, rtol=1e-5, atol=1e-6)


def counter_clockwise_quarter_turns(maps, angles):
    """``kornia.geometry.transform.rotate(maps, angles)`` for angles that are multiples of 90° on square maps: each
    sample's content turned counter-clockwise about the map centre, pixel for pixel (out[i, j] = in[j, S−1−i] per
    quarter turn)."""
    out = maps.clone()
    size = maps.shape[-1]
    for b, angle in enumerate(angles.tolist()):
        for _ in range(int(angle) // 90 % 4):
            turned = torch.empty_like(out[b])
            for i in range(size):
                for j in range(size):
                    turned[:, i, j] = out[b, :, j, size - 1 - i]
            out[b] = turned
    return out


def upstream_roi_align(tea_out, stu_out, bbox, args):
    """``GTSA.roi_align`` with ``self.cosine_loss`` (4-D branch) and ``self.neirest_neighbores_on_l2``; kornia's rotate
    as above. ``args.roi_out_size`` and ``args.num_matches`` are indexed by the student view instead of by
    ``h_s*w_s > 100`` (docs/methods.md, GTSA, Deviations)."""
    def cosine_loss_4d(feats_1, feats_2):
        feats_1_normalized = F.normalize(feats_1, dim=1)
        feats_2_normalized = F.normalize(feats_2, dim=1)
        return -torch.einsum("bchw,bchw->bhw", feats_1_normalized, feats_2_normalized)

    global_student_out_list = stu_out[0].chunk(args.num_crops[0])
    local_student_out_list = stu_out[1].chunk(args.num_crops[1]) if args.num_crops[1] else []
    total_student_out_list = []
    for i in range(args.num_crops[0]):
        total_student_out_list.append(global_student_out_list[i])
    for i in range(args.num_crops[1]):
        total_student_out_list.append(local_student_out_list[i])
    total_teacher_out_list = tea_out[0].detach().chunk(args.num_crops[0])

    total_pc_loss, total_loss, count = 0, 0, 0
    for iq, q in enumerate(total_teacher_out_list):
        for v in range(len(total_student_out_list)):
            if v == iq:
                continue
            B_s, C_s, h_s, w_s = total_student_out_list[v].shape
            B_t, C_t, h_t, w_t = q.shape
            output_size = args.roi_out_size[v]
            tea_bbox_list = [bbox["gc"][i, iq, v, :].unsqueeze(dim=0) / args.patch_size
                             for i in range(bbox["gc"].shape[0])]
            tea_aligned = roi_align(q, tea_bbox_list, output_size=output_size, aligned=True)
            stu_bbox_list = [bbox["all"][i, v, iq, :].unsqueeze(dim=0) / args.patch_size
                             for i in range(bbox["all"].shape[0])]
            stu_aligned = roi_align(total_student_out_list[v], stu_bbox_list, output_size=output_size, aligned=True)
            offset = bbox["angles"][v] - bbox["angles"][iq]
            tea_aligned = counter_clockwise_quarter_turns(tea_aligned, offset)
            loss = cosine_loss_4d(stu_aligned, tea_aligned)
            total_loss += loss.mean()
            count += 1
            stu_feats = total_student_out_list[v].reshape(B_s, C_s, h_s * w_s).permute(0, 2, 1)
            tea_feats = q.reshape(B_t, C_t, h_t * w_t).permute(0, 2, 1)
            num_matches_on_l2 = int(args.num_matches[v])
            maps_1_filtered, maps_1_nn = neirest_neighbores_on_l2(stu_feats, tea_feats, num_matches_on_l2)
            maps_1_filtered_sym, maps_1_nn_sym = neirest_neighbores_on_l2(tea_feats, stu_feats, num_matches_on_l2)
            pc_loss_1 = cosine_loss(maps_1_filtered, maps_1_nn)
            pc_loss_2 = cosine_loss(maps_1_filtered_sym, maps_1_nn_sym)
            total_pc_loss += 0.5 * (pc_loss_1.mean() + pc_loss_2.mean())
    total_loss /= count
    total_pc_loss /= count
    return total_loss, total_pc_loss


@pytest.mark.parametrize("n_local", [0, 1, 3])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("match_fraction", [0.5, 0.25])
@pytest.mark.parametrize("roi_out_size", [(6, 3), (4, 2)])
def test_crop_and_pc_losses_on_random_maps_equal_upstream_roi_align(n_local, batch, match_fraction, roi_out_size):
    """The loss functions on random maps, boxes and rotations, no model and no dataset: 32 px globals (8×8 maps) and
    16 px locals (4×4) at patch 4. Boxes 16 or 32 px a side at offsets up to 12 px: every pair overlaps, and every box
    coordinate is exact in float32 on both sides (RoIAlign's sample count, ceil(RoI side / output side), jumps at
    integers, so a rounding difference in a box would change the value)."""
    generator = torch.Generator().manual_seed(100 * n_local + 10 * batch + int(4 * match_fraction))
    n_views, channels, sizes = 2 + n_local, 5, [32, 16]
    top_left = torch.randint(0, 13, (batch, n_views, 2), generator=generator)
    sides = 16 * 2 ** torch.randint(0, 2, (batch, n_views, 2), generator=generator)
    boxes = torch.cat([top_left, sides], -1).float()  # (top, left, height, width)
    turns = torch.randint(0, 4, (batch, n_views), generator=generator)
    teacher_maps = torch.randn(2 * batch, channels, 8, 8, generator=generator)
    global_maps = torch.randn(2 * batch, channels, 8, 8, generator=generator)
    local_maps = torch.randn(n_local * batch, channels, 4, 4, generator=generator) if n_local else None
    crop, pc = crop_and_pc_losses(teacher_maps, global_maps, local_maps, boxes, turns, (32, 16), roi_out_size, 4,
                                  match_fraction)

    gc, all_ = [], []
    for b in range(batch):
        top, left, height, width = boxes[b].unbind(-1)
        g, o = calculate_bboxes(SimpleNamespace(size_crops=sizes, nmb_crops=[2, n_local]),
                                torch.stack([left, top, left + width, top + height], -1),
                                [90 * int(k) for k in turns[b]])
        gc.append(g)
        all_.append(o)
    bbox = {"gc": torch.stack(gc), "all": torch.stack(all_), "angles": [90 * turns[:, v] for v in range(n_views)]}
    is_global = [v < 2 for v in range(n_views)]
    args = SimpleNamespace(num_crops=[2, n_local], patch_size=4,
                           roi_out_size=[roi_out_size[0] if g else roi_out_size[1] for g in is_global],
                           num_matches=[int(match_fraction * (64 if g else 16)) for g in is_global])
    stu_out = [global_maps, local_maps if n_local else torch.empty(0)]
    expected_crop, expected_pc = upstream_roi_align([teacher_maps], stu_out, bbox, args)
    torch.testing.assert_close(crop, expected_crop)
    torch.testing.assert_close(pc, expected_pc)


class TransposeLast(nn.Module):
    def __init__(self, deconstruct_idx=None, tranpose_dim=-2):
        super().__init__()
        self.deconstruct_idx = deconstruct_idx
        self.tranpose_dim = tranpose_dim

    def forward(self, x):
        if self.deconstruct_idx is not None:
            x = x[self.deconstruct_idx]
        return x.transpose(self.tranpose_dim, -1)


class Projector(nn.Module):
    def __init__(self, input_dim=384, projector_dim=384, out_dim=768, projector_kernel=3, projector_layers=2):
        super(Projector, self).__init__()
        self.projector_dim = projector_dim
        self.blocks = nn.Sequential(
            *[
                self.make_block(input_dim if i == 0 else projector_dim)
                for i in range(projector_layers)
            ]
        )
        self.proj = nn.Conv2d(projector_dim, out_dim, kernel_size=1)

    def make_block(self, in_channels):
        block = [
            nn.Conv2d(in_channels, self.projector_dim, kernel_size=(3, 3), padding=(1, 1), stride=(1, 1)),
            TransposeLast(tranpose_dim=-3),
            nn.LayerNorm(self.projector_dim, elementwise_affine=False),
            TransposeLast(tranpose_dim=-3),
            nn.GELU(),
        ]
        return nn.Sequential(*block)

    def add_residual(self, x, residual):
        if (
            residual is None
            or residual.size(1) != x.size(1)
        ):
            return x
        ret = x + residual
        return ret

    def forward(self, x):
        B, T, C = x.shape
        h_size, w_size = int(math.sqrt(T)), int(math.sqrt(T))
        x = x.transpose(1, 2).reshape(B, C, h_size, w_size)
        residual = x
        for i, layer in enumerate(self.blocks):
            x = layer(x)
            x = self.add_residual(x, residual)
            residual = x
        x = self.proj(x)
        return x


class Predictor(nn.Module):
    def __init__(self, input_dim=768, predictor_dim=768, out_dim=768, predictor_layers=1):
        super(Predictor, self).__init__()
        self.predictor_dim = predictor_dim
        self.blocks = nn.Sequential(
            *[
                self.make_block(input_dim if i == 0 else predictor_dim)
                for i in range(predictor_layers)
            ]
        )
        self.proj = nn.Conv2d(predictor_dim, out_dim, kernel_size=1)

    def make_block(self, in_dim):
        block = [
            nn.Conv2d(in_dim, self.predictor_dim, kernel_size=(3, 3), padding=(1, 1), stride=(1, 1)),
            TransposeLast(tranpose_dim=-3),
            nn.LayerNorm(self.predictor_dim, elementwise_affine=False),
            TransposeLast(tranpose_dim=-3),
            nn.GELU(),
        ]
        return nn.Sequential(*block)

    def forward(self, x):
        for i, layer in enumerate(self.blocks):
            x = layer(x)
        x = self.proj(x)
        return x


def rot_predictor(embed_dim):
    """``GTSA.__init__``'s ``rot_predictor``, its input width ``embed_dim`` (upstream hard-codes ViT-S's 384)."""
    return nn.Sequential(nn.Linear(embed_dim, 768),
                         nn.LayerNorm(768),
                         nn.GELU(),
                         nn.Linear(768, 768),
                         nn.LayerNorm(768),
                         nn.GELU(),
                         nn.Linear(768, 128),
                         nn.LayerNorm(128),
                         nn.Linear(128, 4))


def copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target``'s, in registration order (their names differ)."""
    pairs = list(zip(source.parameters(), target.parameters(), strict=True))
    with torch.no_grad():
        for s, t in pairs:
            assert s.shape == t.shape
            t.copy_(s)


@pytest.mark.parametrize("in_dim, hidden, out", [(32, 32, 64), (32, 48, 64)])  # residual kept / skipped
def test_conv_heads_equal_upstream_projector_and_predictor_on_copied_weights(in_dim, hidden, out):
    torch.manual_seed(0)
    ours_projector, ours_predictor = ConvProjector(in_dim, hidden, out), ConvPredictor(out, out, out)
    for m in (*ours_projector.modules(), *ours_predictor.modules()):  # non-zero biases, so they are compared
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.bias)
    upstream_projector, upstream_predictor = Projector(in_dim, hidden, out), Predictor(out, out, out)
    copy_parameters(ours_projector, upstream_projector)
    copy_parameters(ours_predictor, upstream_predictor)
    tokens = torch.randn(3, 1 + 36, in_dim)  # CLS + a 6×6 grid
    ours = ours_predictor(ours_projector(token_map(tokens, 1)))
    expected = upstream_predictor(upstream_projector(tokens[:, 1:]))
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_rotation_head_equals_upstream_rot_predictor_on_copied_weights():
    torch.manual_seed(0)
    ours, upstream = rotation_head(32, 768, 128), rot_predictor(32)
    upstream.load_state_dict(ours.state_dict())
    x = torch.randn(5, 32)
    torch.testing.assert_close(ours(x), upstream(x), rtol=1e-6, atol=1e-6)
