"""SelfPatch against alinlab/SelfPatch: the neighbour tables (``get_local_index``), top-k by cosine, gradient flow,
the loss and centres against ``main_selfpatch.py::DINOLoss``, and the aggregator against ``SelfPatchHead`` on copied
weights (docs/methods.md#selfpatch)."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss

from patchbench.methods import BackboneConfig, IncompatiblePairing, MethodChoice, Progress, build_method
from patchbench.methods.selfpatch import neighbour_patch_loss, updated_centers
from patchbench.methods.selfpatch_head import SelfPatchAggregator, neighbour_table, top_neighbours


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


def upstream_selfpatch_loss(s_cls, s_patch, t_cls, t_patch, center, patch_center, temp, student_temp=0.1):
    """main_selfpatch.py::DINOLoss.forward as a literal loop over (teacher view, student view)."""
    c_loss, p_loss, n, m = 0.0, 0.0, 0, 0
    for iq in range(len(t_cls)):
        q_cls = F.softmax((t_cls[iq] - center) / temp, -1)
        for v in range(len(s_cls)):
            if v == iq:
                q_pat = F.softmax((t_patch[iq] - patch_center) / temp, -1)
                p_loss += (-q_pat * F.log_softmax(s_patch[v] / student_temp, -1)).sum(-1).mean()
                m += 1
            elif iq <= 1:
                c_loss += (-q_cls * F.log_softmax(s_cls[v] / student_temp, -1)).sum(-1).mean()
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


# ``selfpatch_vision_transformer.py`` (alinlab/SelfPatch): the aggregator's modules, transcribed (dropouts at 0 and
# the attention/mask branches, unused by the head, left out).


class UpstreamMlp(torch.nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=torch.nn.GELU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = torch.nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = torch.nn.Linear(hidden_features, out_features)
        self.drop = torch.nn.Dropout(drop)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.fc2(x)
        x = self.drop(x)
        return x


class Class_Attention(torch.nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        self.q = torch.nn.Linear(dim, dim, bias=qkv_bias)
        self.k = torch.nn.Linear(dim, dim, bias=qkv_bias)
        self.v = torch.nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = torch.nn.Dropout(attn_drop)
        self.proj = torch.nn.Linear(dim, dim)
        self.proj_drop = torch.nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)

        q = q * self.scale
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)

        attn = (q @ k.transpose(-2, -1))
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)

        x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        x_cls = self.proj(x_cls)
        x_cls = self.proj_drop(x_cls)
        return x_cls


class LayerScale_Block_CA(torch.nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop=0., attn_drop=0.,
                 act_layer=torch.nn.GELU, norm_layer=torch.nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Class_Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = torch.nn.Identity()
        self.norm2 = norm_layer(dim)
        mlp_hidden_dim = int(dim * mlp_ratio)
        self.mlp = UpstreamMlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

    def forward(self, x, x_cls):
        u = torch.cat((x_cls, x), dim=1)
        u_ = self.attn(self.norm1(u))
        x_cls = x_cls + self.drop_path(u_)
        x_cls = x_cls + self.drop_path(self.mlp(self.norm2(x_cls)))
        return x_cls


class SelfPatchHead(torch.nn.Module):
    def __init__(self, in_dim, num_heads, k_num):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, in_dim))
        self.cls_blocks = torch.nn.ModuleList([
            LayerScale_Block_CA(
                dim=in_dim, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                drop=0.0, attn_drop=0.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                act_layer=torch.nn.GELU)
            for i in range(2)])
        self.norm = partial(torch.nn.LayerNorm, eps=1e-6)(in_dim)
        self.k_num = k_num
        self.k_size = 3
        self.loc224 = upstream_local_index(196)
        self.loc96 = upstream_local_index(36)
        self.embed_dim = in_dim

    def forward(self, x, loc=False):
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        if loc:
            k_size = self.k_size
            if x.shape[1] == 196:
                local_idx = self.loc224
            elif x.shape[1] == 36:
                if self.k_size == 14:
                    k_size = 6
                local_idx = self.loc96
            else:
                print(x.shape)
                assert (False)

            x_norm = torch.nn.functional.normalize(x, dim=-1)
            sim_matrix = x_norm[:, local_idx] @ x_norm.unsqueeze(2).transpose(-2, -1)
            top_idx = sim_matrix.squeeze().topk(k=self.k_num, dim=-1)[1].view(-1, self.k_num, 1)

            x_loc = x[:, local_idx].view(-1, k_size**2 - 1, self.embed_dim)
            x_loc = torch.gather(x_loc, 1, top_idx.expand(-1, -1, self.embed_dim))
            for i, blk in enumerate(self.cls_blocks):
                if i == 0:
                    glo_tokens = blk(x, cls_tokens)
                    loc_tokens = blk(x_loc, cls_tokens.repeat(x.shape[1], 1, 1))
                else:
                    glo_tokens = blk(x, glo_tokens)
                    loc_tokens = blk(x_loc, loc_tokens)
            loc_tokens = loc_tokens.view(x.shape)
            x = self.norm(torch.cat([glo_tokens, loc_tokens], dim=1))
        else:
            for i, blk in enumerate(self.cls_blocks):
                cls_tokens = blk(x, cls_tokens)
            x = self.norm(torch.cat([cls_tokens, x], dim=1))

        return x


@pytest.mark.parametrize("n_patches", [36, 196])  # the two grids upstream's head has tables for
def test_aggregator_equals_upstream_selfpatch_head_on_copied_weights(n_patches):
    torch.manual_seed(0)
    ours = SelfPatchAggregator(32, 4, k_num=4)
    for p in ours.parameters():  # non-trivial LayerNorm affines and biases, so that every weight is compared
        torch.nn.init.normal_(p, std=0.2)
    upstream = SelfPatchHead(32, 4, 4)
    renamed = {k.replace("query", "cls_token").replace("blocks.", "cls_blocks."): v
               for k, v in ours.state_dict().items()}
    upstream.load_state_dict(renamed)
    patches = torch.randn(3, n_patches, 32)
    torch.testing.assert_close(ours(patches), upstream(patches), rtol=1e-6, atol=1e-6)
    # the teacher's path: one query per patch over its 4 most similar neighbours (row order as upstream's view)
    torch.testing.assert_close(ours.aggregate_neighbours(patches), upstream(patches, loc=True), rtol=1e-6, atol=1e-6)


# --- The loss on random tensors, no model and no dataset (as lightly's tests/loss/test_dino_loss.py sweeps its
# DINOLoss): the objective's CLS term (lightly's DINOLoss with the CLS centre, momentum 1), its patch term and its
# centre update against the transcription of main_selfpatch.py::DINOLoss and the documented centre EMA, over views,
# temperatures, momenta and batch sizes, with non-zero centres.

@pytest.mark.parametrize("n_local", [0, 1, 3])
@pytest.mark.parametrize("teacher_temp,student_temp", [(0.04, 0.1), (0.07, 0.2)])
@pytest.mark.parametrize("momentum", [0.9, 0.5])
@pytest.mark.parametrize("batch", [1, 3])
def test_loss_functions_on_random_tensors_equal_upstream(n_local, teacher_temp, student_temp, momentum, batch):
    generator = torch.Generator().manual_seed(10 * n_local + batch)
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    tokens = [64, 64] + [16] * n_local
    t_cls, s_cls = [randn(batch, 12) for _ in tokens], [randn(batch, 12) for _ in tokens]
    t_patch, s_patch = [randn(batch, n, 6) for n in tokens], [randn(batch, n, 6) for n in tokens]
    center, patch_center = randn(1, 12), randn(1, 6)
    criterion = DINOLoss(output_dim=12, student_temp=student_temp, center_momentum=1.0)
    criterion.center.copy_(center.view(1, 1, 12))
    cls_loss = criterion(t_cls[:2], s_cls, teacher_temp=teacher_temp)
    patch = neighbour_patch_loss(t_patch, s_patch, patch_center, teacher_temp, student_temp)
    new_center, new_patch_center = updated_centers(criterion.center, patch_center, t_cls, t_patch, momentum)

    expected_cls, expected_patch = upstream_selfpatch_loss(s_cls, s_patch, t_cls, t_patch, center, patch_center,
                                                           teacher_temp, student_temp)
    torch.testing.assert_close(cls_loss, expected_cls)
    torch.testing.assert_close(patch, expected_patch)
    # CLS centre over the image logits of all views; patch centre over every token of every view (token-weighted)
    all_tokens = torch.cat([t.flatten(0, 1) for t in t_patch])
    torch.testing.assert_close(new_center.view(1, 12), momentum * center + (1 - momentum) * torch.cat(t_cls).mean(0))
    torch.testing.assert_close(new_patch_center,
                               momentum * patch_center + (1 - momentum) * all_tokens.mean(0, keepdim=True))
