"""The reference of Patch-Wise SSL's geometric patch matching (methods/patch_matching.py):
``augment.py::correspondences`` of alijavidani/Local_Global_Representation_Learning transcribed line by line, with
Python ``round`` and numpy ``floor(linspace)``, one view pair at a time. Used by tests/methods/test_patch_matching.py
and test_patchwise.py."""

from __future__ import annotations

import numpy as np


def reference_correspond(box_a, flip_a, grid_a, box_b, flip_b, grid_b):
    """Lists (teacher ids, student ids), CLS first; boxes are (top, left, height, width)."""
    def edges(box):
        top, left, h, w = box
        return top, top + h, left, left + w

    a, b = edges(box_a), edges(box_b)
    top, bottom = max(a[0], b[0]), min(a[1], b[1])
    left, right = max(a[2], b[2]), min(a[3], b[3])
    if not (top < bottom and left < right):
        return [0], [0]

    def grid_ids(view, grid, flip):
        v_top, v_bottom, v_left, v_right = view
        width, height = v_right - v_left, v_bottom - v_top
        c0 = int(round(grid * (left - v_left) / width))
        nc = round(grid * (right - left) / width)
        r0 = int(round(grid * (top - v_top) / height))
        nr = round(grid * (bottom - top) / height)
        c1, r1 = c0 + nc, r0 + nr
        if flip:
            c0, c1 = grid - c1, grid - c0
        ids = np.arange(1, grid * grid + 1).reshape(grid, grid)[r0:r1, c0:c1]
        return np.fliplr(ids) if flip else ids

    ga, gb = grid_ids(a, grid_a, flip_a), grid_ids(b, grid_b, flip_b)
    def sub(n_big, n_small):
        return np.floor(np.linspace(0, n_big - 1, n_small)).astype(int)

    (ra, ca), (rb, cb) = ga.shape, gb.shape
    if ca >= cb:
        ga = ga[:, sub(ca, cb)]
    else:
        gb = gb[:, sub(cb, ca)]
    if ra >= rb:
        ga = ga[sub(ra, rb), :]
    else:
        gb = gb[sub(rb, ra), :]
    return [0] + ga.flatten().tolist(), [0] + gb.flatten().tolist()
