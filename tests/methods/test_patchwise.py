"""The Patch-Wise objective against explicit loops over view pairs and matched tokens, with zero, per-position and
shared centres (docs/methods.md#patch-wise-ssl; upstream ``patch_wise_dino.py::DINOLoss``)."""

from __future__ import annotations

import pytest
import torch
from patch_matching_reference import reference_correspond

from patchbench.benchmark.train import view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.dino import DINOObjective
from patchbench.methods.patch_matching import PatchMatches, match_patches
from patchbench.methods.patchwise import pair_entries, patchwise_cross_entropy, token_weights, updated_center

PROGRESS = Progress(epoch=1, step=10, total_epochs=5, steps_per_epoch=10)
HEAD = dict(out_dim=16, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)


@pytest.fixture(scope="module")
def digits():
    source = build_dataset("digits")
    return source.load("train").images[:3], source


def build(source, seed=0, view_kwargs=None, **objective_kwargs):
    torch.manual_seed(seed)
    backbone = BackboneConfig(size="pico", patch_size=4, img_size=32, drop_path_rate=0.0)
    choice = MethodChoice("patchwise", view_kwargs={"n_local": 2, **(view_kwargs or {})},
                          objective_kwargs={**HEAD, **objective_kwargs})
    return build_method(choice, backbone, source.mean, source.std)


def explicit_loss(method, views, variant="mean", cls_weight=0.9, temp=0.04, centre=None):
    """Project every token, then loop over pairs, samples and the reference matcher's token pairs.

    centre: None (zero), (T, K) one row per teacher token position, or (2, K) the CLS row and one shared patch row.
    """
    def centre_of(i):
        return 0.0 if centre is None else centre[i if len(centre) > 2 else min(i, 1)]

    objective = method.objective
    with torch.no_grad():
        teacher = [objective.teacher_heads["dino"](method.teacher(c)) for c in views.global_crops]
    student = [objective.student_heads["dino"](method.student(c)) for c in views.crops]
    boxes, flips = views.meta["boxes"], views.meta["flips"]
    pair_losses = []
    for v in range(views.n_global):
        for u in range(views.n_views):
            if u == v:
                continue
            per_sample = []
            for b in range(views.batch_size):
                t_ids, s_ids = reference_correspond(
                    tuple(boxes[b, v].int().tolist()), bool(flips[b, v]), views.crops[v].shape[-1] // 4,
                    tuple(boxes[b, u].int().tolist()), bool(flips[b, u]), views.crops[u].shape[-1] // 4)
                ces = [-(torch.softmax((teacher[v][b, i] - centre_of(i)) / temp, -1)
                         * torch.log_softmax(student[u][b, j] / 0.1, -1)).sum() for i, j in zip(t_ids, s_ids)]
                if variant == "mean":
                    per_sample.append(torch.stack(ces).mean())
                else:
                    patches = torch.stack(ces[1:]).mean() if len(ces) > 1 else torch.tensor(0.0)
                    per_sample.append(cls_weight * ces[0] + (1 - cls_weight) * patches)
            pair_losses.append(torch.stack(per_sample).mean())
    return torch.stack(pair_losses).mean()


@pytest.mark.parametrize("variant", ["mean", "lambda"])
def test_loss_equals_explicit_loop_over_pairs_and_tokens(digits, variant):
    images, source = digits
    method = build(source, view_kwargs={"patch_augmentation": False}, loss_variant=variant, cls_weight=0.7)
    views = method.make_views(images, view_generator(0, 0))
    expected = explicit_loss(method, views, variant, cls_weight=0.7)
    got = method.training_step(views, PROGRESS)["loss"]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_gather_then_project_gives_the_projected_gradients(digits):
    images, source = digits
    method = build(source, view_kwargs={"patch_augmentation": False})
    views = method.make_views(images, view_generator(0, 1))
    method.training_step(views, PROGRESS)["loss"].backward()
    ours = [p.grad.clone() for p in method.objective.student_heads.parameters()]
    method.zero_grad()
    method.objective.center.zero_()
    explicit_loss(method, views).backward()
    for got, expected in zip(ours, [p.grad for p in method.objective.student_heads.parameters()]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_token_weights_by_hand():
    valid = torch.tensor([[True, True, True, False], [True, False, False, False]])
    m = PatchMatches(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), valid)
    torch.testing.assert_close(token_weights(m, "mean", 0.9), torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0], [1, 0, 0, 0]]))
    # λ·CLS + (1 − λ)·mean over the two patches; a pair without patch matches keeps only λ·CLS.
    torch.testing.assert_close(token_weights(m, "lambda", 0.8),
                               torch.tensor([[0.8, 0.1, 0.1, 0], [0.8, 0, 0, 0]]))


def test_centre_has_a_row_per_global_token_and_follows_the_ema(digits):
    images, source = digits
    method = build(source)
    objective = method.objective
    assert objective.center.shape == (1, 1 + 8 * 8, 16)
    views = method.make_views(images, view_generator(0, 0))
    with torch.no_grad():
        logits = torch.cat([objective.teacher_heads["dino"](method.teacher(c)) for c in views.global_crops])
    method.training_step(views, PROGRESS)
    torch.testing.assert_close(objective.center, 0.1 * logits.mean(0, keepdim=True), rtol=1e-5, atol=1e-6)
    shared = build(source, patch_centre="shared").objective
    assert shared.center.shape == (1, 2, 16)


@pytest.mark.parametrize("patch_centre", ["per_position", "shared"])
def test_loss_and_centre_update_with_a_non_zero_centre_equal_the_explicit_loop(digits, patch_centre):
    images, source = digits
    method = build(source, view_kwargs={"patch_augmentation": False}, patch_centre=patch_centre)
    objective = method.objective
    rows = 1 + 8 * 8 if patch_centre == "per_position" else 2
    assert objective.center.shape == (1, rows, 16)
    objective.center.copy_(torch.randn(1, rows, 16, generator=torch.Generator().manual_seed(4)))
    before = objective.center[0].clone()
    views = method.make_views(images, view_generator(0, 2))
    expected = explicit_loss(method, views, centre=before)
    torch.testing.assert_close(method.training_step(views, PROGRESS)["loss"], expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # the batch mean of each position's teacher logits over the globals and the batch
        position_mean = torch.cat([objective.teacher_heads["dino"](method.teacher(c)) for c in views.global_crops]
                                  ).mean(0)  # (1 + 64, K)
    if patch_centre == "shared":  # the CLS row, and one row for the mean over every patch position
        position_mean = torch.stack([position_mean[0], position_mean[1:].mean(0)])
    torch.testing.assert_close(objective.center[0], 0.9 * before + 0.1 * position_mean, rtol=1e-5, atol=1e-6)


def test_patch_loss_off_is_dino_with_tracked_crops(digits):
    images, source = digits
    method = build(source, view_kwargs={"patch_augmentation": False}, patch_loss=False, freeze_last_layer=0)
    views = method.make_views(images, view_generator(0, 0))
    dino = DINOObjective(32, **HEAD, freeze_last_layer=0)
    dino.student_heads.load_state_dict(method.objective.student_heads.state_dict())
    dino.teacher_heads.load_state_dict(method.objective.teacher_heads.state_dict())
    expected = dino.loss(method.student, method.teacher, views, PROGRESS)["loss"]
    torch.testing.assert_close(method.training_step(views, PROGRESS)["loss"], expected, rtol=1e-6, atol=1e-6)
    assert method.objective.center.shape == (1, 1, 16)
    torch.testing.assert_close(method.objective.center[0], dino.criterion.center[0], rtol=1e-5, atol=1e-7)


def test_without_global_local_patches_only_the_global_pairs_match_patches(digits):
    images, source = digits
    method = build(source, view_kwargs={"patch_augmentation": False}, global_local_patches=False)
    views = method.make_views(images, view_generator(0, 0))
    objective = method.objective
    assert objective.matches(views, [0], [1]).valid[:, 1:].any()
    assert objective.matches(views, [0], [2]).valid.shape == (3, 1)
    with_local = build(source, view_kwargs={"patch_augmentation": False})
    assert with_local.objective.matches(views, [0], [2]).valid[:, 1:].any()


def test_same_batch_geometry_shares_boxes_flips_and_one_matching(digits, monkeypatch):
    import patchbench.methods.patchwise as patchwise
    rows_matched = []
    def spy(boxes_a, *args):
        rows_matched.append(len(boxes_a))
        return match_patches(boxes_a, *args)

    monkeypatch.setattr(patchwise, "match_patches", spy)
    images, source = digits
    method = build(source, view_kwargs={"same_batch_geometry": True, "patch_augmentation": False})
    views = method.make_views(images, view_generator(0, 0))
    boxes, flips = views.meta["boxes"], views.meta["flips"]
    assert views.shared_geometry
    assert (boxes == boxes[:1]).all() and (flips == flips[:1]).all()
    shared = method.objective.matches(views, [0, 1], [3, 2])
    views.shared_geometry = False
    per_sample = method.objective.matches(views, [0, 1], [3, 2])
    assert rows_matched == [2, 2 * 3]  # once per view pair, then once per (pair, sample)
    assert torch.equal(shared.teacher, per_sample.teacher) and torch.equal(shared.valid, per_sample.valid)
    # The same crop of different images: every sample's view is the same window of its own image.
    plain = build(source, view_kwargs={"patch_augmentation": False}).make_views(images, view_generator(0, 0))
    assert not (plain.meta["boxes"] == plain.meta["boxes"][:1]).all()


def test_patchwise_views_add_the_per_patch_augmentation_on_the_same_geometry(digits):
    images, source = digits
    on = build(source).make_views(images, view_generator(0, 0))
    off = build(source, view_kwargs={"patch_augmentation": False}).make_views(images, view_generator(0, 0))
    assert torch.equal(on.meta["boxes"], off.meta["boxes"]) and torch.equal(on.meta["flips"], off.meta["flips"])
    for a, b in zip(on.crops, off.crops):
        assert a.shape == b.shape and not torch.allclose(a, b)
    torch.manual_seed(0)
    dino = build_method(MethodChoice("dino", view_kwargs={"n_local": 2}), BackboneConfig(size="pico"), source.mean,
                        source.std)
    plain = dino.make_views(images, view_generator(0, 0))  # DINO's multicrop draws the same views
    assert all(torch.equal(a, b) for a, b in zip(plain.crops, off.crops))
    # Per-patch: cells differ in how they change, so the change is not one global colour transform.
    diff = (on.crops[0] - off.crops[0]).unfold(2, 4, 4).unfold(3, 4, 4).mean(dim=(-1, -2))  # (B, 3, 8, 8)
    assert diff.flatten(2).std(dim=2).min() > 1e-3


# --- The loss functions on random tensors, no model and no dataset (the way lightly's tests/loss/test_dino_loss.py
# sweeps its DINOLoss): random crop boxes, flips and logits against a per-pair, per-sample loop over the reference
# matcher's token pairs, with a non-zero centre, and the centre after the update.

def random_geometry(generator, batch, n_views, same_batch_geometry):
    """Integer boxes (B, V, 4) (top, left, height, width) inside a 32 px image, overlapping often, and flips."""
    rows = 1 if same_batch_geometry else batch
    top, left = torch.randint(0, 13, (2, rows, n_views), generator=generator)
    height = 12 + (torch.rand(rows, n_views, generator=generator) * (20 - top)).long()
    width = 12 + (torch.rand(rows, n_views, generator=generator) * (20 - left)).long()
    boxes = torch.stack([top, left, height, width], -1).expand(batch, -1, -1)
    flips = (torch.rand(rows, n_views, generator=generator) < 0.5).expand(batch, -1)
    return boxes.contiguous(), flips.contiguous()


def reference_patchwise(teacher_logits, student_logits, boxes, flips, grids, centre, teacher_temp, student_temp,
                        momentum, variant, cls_weight, patch_loss, global_local_patches):
    """The loss (mean over view pairs of the mean over samples), the matched teacher entropy averaged the same way
    and the updated centre, one pair at a time.

    teacher_logits: (G, B, T, K); student_logits: per view (B, 1 + grid², K); centre: (T, K) per position or
    (2, K) CLS + one shared patch row.
    """
    n_global, batch, n_tokens, _ = teacher_logits.shape
    def centre_row(i):
        return centre[i] if len(centre) == n_tokens else centre[min(i, 1)]

    pair_losses, pair_entropies = [], []
    for v in range(n_global):
        for u in range(len(student_logits)):
            if u == v:
                continue
            per_sample, per_sample_entropy = [], []
            for b in range(batch):
                if patch_loss and (global_local_patches or u < n_global):
                    t_ids, s_ids = reference_correspond(
                        tuple(boxes[b, v].tolist()), bool(flips[b, v]), grids[v],
                        tuple(boxes[b, u].tolist()), bool(flips[b, u]), grids[u])
                else:
                    t_ids, s_ids = [0], [0]
                teacher = [torch.softmax((teacher_logits[v, b, i] - centre_row(i)) / teacher_temp, -1) for i in t_ids]
                ces = torch.stack([-(q * torch.log_softmax(student_logits[u][b, j] / student_temp, -1)).sum()
                                   for q, j in zip(teacher, s_ids)])
                entropies = torch.stack([-torch.special.xlogy(q, q).sum() for q in teacher])
                for values, into in ((ces, per_sample), (entropies, per_sample_entropy)):
                    if variant == "mean":
                        into.append(values.mean())
                    else:
                        patches = values[1:].mean() if len(values) > 1 else torch.tensor(0.0)
                        into.append(cls_weight * values[0] + (1 - cls_weight) * patches)
            pair_losses.append(torch.stack(per_sample).mean())
            pair_entropies.append(torch.stack(per_sample_entropy).mean())
    position_mean = teacher_logits.mean((0, 1))  # (T, K)
    if len(centre) != n_tokens:
        position_mean = torch.stack([position_mean[0], position_mean[1:].mean(0)])
    new_centre = momentum * centre + (1 - momentum) * position_mean
    return torch.stack(pair_losses).mean(), torch.stack(pair_entropies).mean(), new_centre


def patchwise_functions(teacher_logits, student_logits, boxes, flips, grids, centre, teacher_temp, student_temp,
                        momentum, variant, cls_weight, patch_loss, global_local_patches, shared_geometry):
    """The objective's path through the loss functions: entries, gather the used student tokens, cross-entropy."""
    student_rows, teacher_rows, weights, _ = pair_entries(
        boxes, flips, grids, teacher_logits.shape[0], [s.shape[1] for s in student_logits], teacher_logits.shape[2],
        patch_loss=patch_loss, global_local_patches=global_local_patches, loss_variant=variant,
        cls_weight=cls_weight, shared_geometry=shared_geometry)
    used, compact = torch.unique(student_rows, return_inverse=True)
    flat = torch.cat([s.flatten(0, 1) for s in student_logits])
    loss, entropy = patchwise_cross_entropy(teacher_logits, centre[None], teacher_temp, flat[used], student_temp,
                                            compact, teacher_rows, weights)
    return loss, entropy, updated_center(centre[None], teacher_logits, momentum)[0]


@pytest.mark.parametrize("n_local", [0, 1, 3])
@pytest.mark.parametrize("temps,momentum", [((0.04, 0.1), 0.9), ((0.07, 0.2), 0.5)])
@pytest.mark.parametrize("patch_centre", ["per_position", "shared"])
@pytest.mark.parametrize("same_batch_geometry", [False, True])
@pytest.mark.parametrize("variant,patch_loss,global_local_patches",
                         [("mean", True, True), ("lambda", True, True), ("mean", True, False), ("mean", False, True)])
def test_loss_functions_on_random_tensors_equal_the_pair_loop(n_local, temps, momentum, patch_centre,
                                                              same_batch_geometry, variant, patch_loss,
                                                              global_local_patches):
    generator = torch.Generator().manual_seed(n_local * 7 + int(same_batch_geometry))
    batch, n_views, out_dim = 3, 2 + n_local, 16
    grids = [8, 8] + [4] * n_local  # 32 px globals and 16 px locals at patch 4
    boxes, flips = random_geometry(generator, batch, n_views, same_batch_geometry)
    n_tokens = 1 + 8 * 8 if patch_loss else 1
    teacher_logits = torch.randn(2, batch, n_tokens, out_dim, generator=generator)
    student_logits = [torch.randn(batch, 1 + g * g, out_dim, generator=generator, requires_grad=True) for g in grids]
    rows = (n_tokens if patch_centre == "per_position" else 2) if patch_loss else 1
    centre = torch.randn(rows, out_dim, generator=generator)
    settings = dict(teacher_temp=temps[0], student_temp=temps[1], momentum=momentum, variant=variant,
                    cls_weight=0.7, patch_loss=patch_loss, global_local_patches=global_local_patches)
    loss, entropy, new_centre = patchwise_functions(teacher_logits, student_logits, boxes, flips, grids, centre,
                                                    shared_geometry=same_batch_geometry, **settings)
    expected, expected_entropy, expected_centre = reference_patchwise(teacher_logits, student_logits, boxes, flips,
                                                                      grids, centre,
                                                    **settings)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_centre, expected_centre, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy, expected_entropy, rtol=1e-5, atol=1e-5)
    got_grads = torch.autograd.grad(loss, student_logits)
    for got, want in zip(got_grads, torch.autograd.grad(expected, student_logits)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
