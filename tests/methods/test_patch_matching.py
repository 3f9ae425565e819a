"""Geometric patch matching against a literal per-pair transcription of the official algorithm
(``patch_matching_reference.py``) and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from patch_matching_reference import reference_correspond

from patchbench.methods.patch_matching import floor_linspace, match_patches


def matched_lists(matches, row=0):
    valid = matches.valid[row]
    return matches.teacher[row][valid].tolist(), matches.student[row][valid].tolist()


def one(box_a, flip_a, grid_a, box_b, flip_b, grid_b):
    m = match_patches(torch.tensor([box_a], dtype=torch.float32), torch.tensor([flip_a]), grid_a,
                      torch.tensor([box_b], dtype=torch.float32), torch.tensor([flip_b]), grid_b)
    return matched_lists(m)


def test_identical_views_give_the_identity():
    teacher, student = one((3, 5, 20, 24), False, 8, (3, 5, 20, 24), False, 8)
    assert teacher == student == list(range(65))


def test_both_flipped_is_the_identity_and_one_flipped_mirrors_columns():
    box = (0, 0, 32, 32)
    teacher, student = one(box, True, 4, box, True, 4)
    assert teacher == student and sorted(teacher) == list(range(17))  # i↔i, listed in image order
    teacher, student = one(box, False, 4, box, True, 4)
    expected = [0] + [1 + r * 4 + (3 - c) for r in range(4) for c in range(4)]
    assert teacher == list(range(17)) and student == expected


def test_half_overlap_by_hand():
    # A covers x in [0, 32), B covers x in [16, 48); same rows. The overlap is A's right half and B's left half.
    teacher, student = one((0, 0, 32, 32), False, 4, (0, 16, 32, 32), False, 4)
    assert teacher == [0, 3, 4, 7, 8, 11, 12, 15, 16]
    assert student == [0, 1, 2, 5, 6, 9, 10, 13, 14]


def test_global_and_local_grids_decimate_the_finer_grid():
    # Same box, an 8x8 global grid against a 4x4 local grid: rows/cols 0,2,4,7 of the global (floor(linspace)).
    teacher, student = one((0, 0, 32, 32), False, 8, (0, 0, 32, 32), False, 4)
    keep = [0, 2, 4, 7]
    assert teacher == [0] + [1 + r * 8 + c for r in keep for c in keep]
    assert student == list(range(17))


def test_disjoint_boxes_give_only_cls():
    assert one((0, 0, 10, 10), False, 8, (10, 10, 10, 10), True, 4) == ([0], [0])
    assert one((0, 0, 10, 10), False, 8, (0, 10, 10, 10), False, 8) == ([0], [0])  # touching edges


def test_round_ties_are_half_to_even():
    # A's first column is round(4·5/8) = round(2.5) = 2 (half-to-even; floor(x + .5) would give 3), and it spans
    # round(4·3/8) = round(1.5) = 2 columns: 2 and 3.
    teacher, _ = one((0, 0, 8, 8), False, 4, (0, 5, 8, 3), False, 4)
    assert reference_correspond((0, 0, 8, 8), False, 4, (0, 5, 8, 3), False, 4)[0] == teacher
    assert sorted({(t - 1) % 4 for t in teacher[1:]}) == [2, 3]


@pytest.mark.parametrize("grids", [(4, 4), (8, 4), (8, 8), (6, 6), (12, 6), (14, 6), (28, 12), (14, 14)])
def test_vectorised_equals_reference_on_seeded_draws(grids):
    grid_a, grid_b = grids
    gen = np.random.default_rng(sum(grids))
    n, frame = 1500, 64
    boxes = []
    for _ in range(2 * n):
        h, w = gen.integers(1, frame + 1, size=2)
        boxes.append((gen.integers(0, frame - h + 1), gen.integers(0, frame - w + 1), h, w))
    boxes = torch.tensor(boxes, dtype=torch.float32).view(2, n, 4)
    flips = torch.from_numpy(gen.random((2, n)) < 0.5)
    matches = match_patches(boxes[0], flips[0], grid_a, boxes[1], flips[1], grid_b)
    for i in range(n):
        expected = reference_correspond(tuple(boxes[0, i].int().tolist()), bool(flips[0, i]), grid_a,
                                        tuple(boxes[1, i].int().tolist()), bool(flips[1, i]), grid_b)
        assert matched_lists(matches, i) == expected, i


def test_structure_one_to_one_and_counts():
    gen = torch.Generator().manual_seed(0)
    n = 2000
    sizes = torch.randint(4, 33, (2, n, 2), generator=gen)
    tops = (torch.rand(2, n, generator=gen) * (33 - sizes[..., 0])).floor()
    lefts = (torch.rand(2, n, generator=gen) * (33 - sizes[..., 1])).floor()
    boxes = torch.stack([tops, lefts, sizes[..., 0].float(), sizes[..., 1].float()], -1)
    flips = torch.rand(2, n, generator=gen) < 0.5
    m = match_patches(boxes[0], flips[0], 8, boxes[1], flips[1], 4)
    assert m.teacher.shape == m.student.shape == m.valid.shape == (n, 17)
    assert m.valid[:, 0].all() and (m.teacher[:, 0] == 0).all() and (m.student[:, 0] == 0).all()
    for i in range(n):
        t, s = matched_lists(m, i)
        assert len(set(t)) == len(t) and len(set(s)) == len(s)
        assert all(1 <= x <= 64 for x in t[1:]) and all(1 <= x <= 16 for x in s[1:])


def test_matched_centres_are_close_in_the_source_frame():
    gen = torch.Generator().manual_seed(1)
    n = 500
    sizes = torch.randint(12, 33, (2, n, 1), generator=gen).float().expand(2, n, 2)
    corner = (torch.rand(2, n, 2, generator=gen) * (33 - sizes)).floor()
    boxes = torch.cat([corner, sizes], -1)
    flips = torch.rand(2, n, generator=gen) < 0.5
    m = match_patches(boxes[0], flips[0], 8, boxes[1], flips[1], 4)

    def centres(box, flip, ids, grid):
        r, c = (ids - 1) // grid, (ids - 1) % grid
        c = torch.where(flip, grid - 1 - c, c)
        return box[0] + (r + 0.5) * box[2] / grid, box[1] + (c + 0.5) * box[3] / grid

    for i in range(n):
        valid = m.valid[i, 1:]
        ya, xa = centres(boxes[0, i], flips[0, i], m.teacher[i, 1:][valid], 8)
        yb, xb = centres(boxes[1, i], flips[1, i], m.student[i, 1:][valid], 4)
        # Snapping the overlap to each grid moves its ends by up to half a patch per grid, and decimation picks
        # the nearest-below fine patch: a pair lies within 1.5 coarse-grid patches (a bound).
        bound = 1.5 * boxes[1, i, 2] / 4
        assert ((ya - yb).abs() <= bound).all() and ((xa - xb).abs() <= bound).all(), i


def test_floor_linspace_matches_numpy_beyond_the_integer_formula():
    for n in range(1, 40):
        for m in range(1, n + 1):
            k = torch.arange(m)
            expected = np.floor(np.linspace(0, n - 1, m)).astype(int)
            got = floor_linspace(torch.full((m,), n), torch.full((m,), m), k)
            assert got.tolist() == expected.tolist(), (n, m)
    # The integer formula k·(n−1)//(m−1) differs from numpy first at (n=31, m=23); ours must not.
    assert [k * 30 // 22 for k in range(23)] != np.floor(np.linspace(0, 30, 23)).astype(int).tolist()


def test_match_counts_at_the_native_cifar_frame():
    """32 px frame, patch 4, grids 8/4 with DINO's scales: ≈ 42 of 64 (g–g) and ≈ 12 of 16 (g–l)."""
    from patchbench.methods.crops import sample_crop_boxes
    gen = torch.Generator().manual_seed(0)
    n = 5000
    g1, g2 = (sample_crop_boxes(n, 32, 32, (0.4, 1.0), (3 / 4, 4 / 3), gen) for _ in range(2))
    local = sample_crop_boxes(n, 32, 32, (0.05, 0.4), (3 / 4, 4 / 3), gen)
    flips = torch.rand(3, n, generator=gen) < 0.5
    gg = match_patches(g1, flips[0], 8, g2, flips[1], 8).n_patch_pairs.float().mean()
    gl = match_patches(g1, flips[0], 8, local, flips[2], 4).n_patch_pairs.float().mean()
    assert abs(gg.item() - 42) < 3 and abs(gl.item() - 12) < 1.5, (gg, gl)
