"""SelfPatch: neighbour tables, top-k by cosine, gradient flow and the loss against main_selfpatch.py::DINOLoss
(specs/selfpatch.md §3, §4, §6, §12)."""

import math

import pytest
import torch
import torch.nn.functional as F

from patchbench.methods import BackboneConfig, IncompatiblePairing, MethodChoice, Progress, build_method
from patchbench.methods.selfpatch_head import neighbour_table, top_neighbours


def upstream_local_index(n_patches: int) -> torch.Tensor:
    """The official get_local_index(N, 3) recomputed as it builds it: row/column windows, outer product, ids."""
    side = int(math.sqrt(n_patches))
    rows = []
    for i in range(n_patches):
        in_rows, in_cols = torch.zeros(side), torch.zeros(side)
        for d in (-1, 0, 1):
            in_rows[(i // side + d) % side] = 1
            in_cols[(i % side + d) % side] = 1
        window = (in_rows[:, None] * in_cols[None, :]).flatten()
        window[i] = 0
        rows.append(window.nonzero().squeeze(1))
    return torch.stack(rows)


HAND_LISTED = [
    (196, 0, {1, 13, 14, 15, 27, 182, 183, 195}),  # the 14×14 corner
    (196, 20, {5, 6, 7, 19, 21, 33, 34, 35}),  # 14×14 interior: row 1, col 6
    (36, 0, {1, 5, 6, 7, 11, 30, 31, 35}),  # 6×6 corner, wrapping both ways
    (36, 35, {0, 4, 5, 24, 28, 29, 30, 34}),  # 6×6 opposite corner
    (36, 6, {0, 1, 5, 7, 11, 12, 13, 17}),  # 6×6 left edge, row 1
    (36, 14, {7, 8, 9, 13, 15, 19, 20, 21}),  # 6×6 interior
    (64, 0, {1, 7, 8, 9, 15, 56, 57, 63}),  # 8×8 (32 px globals at patch 4)
    (16, 0, {1, 3, 4, 5, 7, 12, 13, 15}),  # 4×4 (16 px locals)
    (9, 4, {0, 1, 2, 3, 5, 6, 7, 8}),  # 3×3: every other cell
]


@pytest.mark.parametrize("n_patches,patch,expected", HAND_LISTED)
def test_neighbour_table_hand_listed(n_patches, patch, expected):
    assert set(neighbour_table(n_patches)[patch].tolist()) == expected


@pytest.mark.parametrize("n_patches", [196, 36])
def test_neighbour_table_equals_the_official_tables(n_patches):
    assert torch.equal(neighbour_table(n_patches), upstream_local_index(n_patches))


@pytest.mark.parametrize("side", range(3, 16))
def test_every_row_has_8_distinct_symmetric_neighbours(side):
    table = neighbour_table(side * side)
    assert table.shape == (side * side, 8)
    for i, row in enumerate(table.tolist()):
        assert len(set(row)) == 8 and i not in row
        assert all(i in table[j].tolist() for j in row)  # j neighbours i ⇔ i neighbours j


def test_grids_below_3_are_refused():
    for n in (4, 1):
        with pytest.raises(ValueError, match="side ≥ 3"):
            neighbour_table(n)
    with pytest.raises(ValueError, match="square"):
        neighbour_table(12)
    # at build time: 8 px local crops at patch 4 give a 2×2 grid
    with pytest.raises(IncompatiblePairing, match="2×2 patch grid"):
        build_method(MethodChoice("selfpatch", view_kwargs=dict(local_size=8)), BackboneConfig(size="pico"),
                     (0.5,) * 3, (0.25,) * 3)


def test_top_k_by_cosine_similarity_returns_raw_neighbour_tokens():
    # 3×3 grid: token i points at angle 10·i degrees with norm i + 1, so cosine ranks by angle and norms tell
    # the returned tokens apart. Patch 4 (40°): nearest 30°/50° (3, 5), then 20°/60° (2, 6). Patch 0: 1, 2, 3, 4.
    angles = torch.deg2rad(10.0 * torch.arange(9))
    tokens = (torch.stack([angles.cos(), angles.sin()], -1) * (torch.arange(9) + 1.0)[:, None]).unsqueeze(0)
    chosen = top_neighbours(tokens, 4)  # (1, 9, 4, 2)
    ids_of = lambda patch: {round(t.norm().item()) - 1 for t in chosen[0, patch]}  # noqa: E731
    assert ids_of(4) == {2, 3, 5, 6}
    assert ids_of(0) == {1, 2, 3, 4}
    assert ids_of(8) == {4, 5, 6, 7}
    torch.testing.assert_close(chosen[0, 4].norm(dim=-1).sort().values, torch.tensor([3.0, 4.0, 6.0, 7.0]))


def small_method(**objective_kwargs):
    torch.manual_seed(0)
    kwargs = dict(out_dim=32, patch_out_dim=16, hidden_dim=24, bottleneck_dim=8, **objective_kwargs)
    return build_method(MethodChoice("selfpatch", view_kwargs=dict(n_local=2), objective_kwargs=kwargs),
                        BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)


def test_backbone_has_no_cls_token_nor_final_norm():
    method = small_method()
    assert method.student.num_prefix_tokens == 0
    assert isinstance(method.student.vit.norm, torch.nn.Identity)
    assert method.student(torch.randn(2, 3, 32, 32)).shape == (2, 64, 32)


def test_aggregator_learns_through_the_image_level_loss_only():
    method = small_method(patch_loss_weight=0.0)  # the loss is the image-level (CLS) term alone
    student_aggregator = method.objective.student_heads["aggregator"]
    calls = []
    student_aggregator.aggregate_neighbours = lambda *a: calls.append(a)  # the student must never take this path
    views = method.make_views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.Generator())
    method.training_step(views, Progress(epoch=1, step=0, total_epochs=5, steps_per_epoch=10))["loss"].backward()
    assert not calls
    for name, p in student_aggregator.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None or not p.grad.any() for p in method.objective.student_heads["patch"].parameters())


def upstream_selfpatch_loss(s_cls, s_patch, t_cls, t_patch, center, patch_center, temp):
    """main_selfpatch.py::DINOLoss.forward as a literal loop over (teacher view, student view)."""
    c_loss, p_loss, n, m = 0.0, 0.0, 0, 0
    for iq in range(len(t_cls)):
        q_cls = F.softmax((t_cls[iq] - center) / temp, -1)
        for v in range(len(s_cls)):
            if v == iq:
                q_pat = F.softmax((t_patch[iq] - patch_center) / temp, -1)
                p_loss += (-q_pat * F.log_softmax(s_patch[v] / 0.1, -1)).sum(-1).mean()
                m += 1
            elif iq <= 1:
                c_loss += (-q_cls * F.log_softmax(s_cls[v] / 0.1, -1)).sum(-1).mean()
                n += 1
    return c_loss / n, p_loss / m


@pytest.mark.parametrize("batch", [1, 2])
def test_loss_and_centres_equal_upstream(batch):
    method = small_method()
    objective = method.objective
    objective.cls_criterion.center.normal_()
    objective.patch_center.normal_()
    center, patch_center = objective.cls_criterion.center.clone().view(1, 32), objective.patch_center.clone()
    outputs = {"teacher_cls": [], "teacher_patch": [], "student_cls": [], "student_patch": []}
    for side, heads in (("teacher", objective.teacher_heads), ("student", objective.student_heads)):
        for part in ("cls", "patch"):
            heads[part].register_forward_hook(lambda m, i, o, key=f"{side}_{part}": outputs[key].append(o.detach()))
    views = method.make_views(torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8), torch.Generator())
    losses = method.training_step(views, Progress(epoch=0, step=0, total_epochs=5, steps_per_epoch=10))

    per_view = {k: [c for o in v for c in o.chunk(o.shape[0] // batch)] for k, v in outputs.items()}
    assert len(per_view["teacher_cls"]) == 4  # the teacher sees all views (2 globals + 2 locals)
    assert [p.shape[1] for p in per_view["teacher_patch"]] == [64, 64, 16, 16]
    c_loss, p_loss = upstream_selfpatch_loss(per_view["student_cls"], per_view["student_patch"],
                                             per_view["teacher_cls"], per_view["teacher_patch"], center,
                                             patch_center, 0.04)
    torch.testing.assert_close(losses["cls_loss"], c_loss)
    torch.testing.assert_close(losses["patch_loss"], p_loss)
    torch.testing.assert_close(losses["loss"].detach(), c_loss + 0.1 * p_loss)
    # CLS centre over all 4 teacher views; patch centre over every token of every view (token-weighted)
    all_cls = torch.cat(per_view["teacher_cls"])
    torch.testing.assert_close(objective.cls_criterion.center.view(1, 32), 0.9 * center + 0.1 * all_cls.mean(0))
    tokens = torch.cat([t.flatten(0, 1) for t in per_view["teacher_patch"]])
    torch.testing.assert_close(objective.patch_center, 0.9 * patch_center + 0.1 * tokens.mean(0, keepdim=True))


def test_eval_embedding_is_the_teacher_aggregator_token():
    method = small_method()
    encoder = method.encoder_for_eval()
    images = torch.randn(3, 3, 32, 32)
    expected = method.objective.teacher_heads["aggregator"](method.teacher(images))[:, 0]
    torch.testing.assert_close(encoder(images), expected)
    assert encoder.dim == 32 and encoder.readout == "aggregator"
