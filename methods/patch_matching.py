"""Geometric patch matching of Patch-Wise SSL, vectorised over samples and view pairs.

Follows ``augment.py::correspondences`` of alijavidani/Local_Global_Representation_Learning (docs/methods.md, Patch-
Wise SSL): the intersection of the two crop boxes is snapped onto each view's patch grid by rounding (half-to-even,
as Python's ``round``), the column range of a flipped view is mirrored, and the finer grid is decimated to the
coarser one per axis with ``floor(linspace)``. The result is a 1-to-1 list of token pairs, CLS↔CLS first.

Here every quantity is a tensor over N (sample, pair) rows, computed in float64 for exact ties, with no host
synchronisation. Matches come back padded to ``1 + min(P_a, P_b)²`` with a validity mask, in the order of the
reference's row-major flatten.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PatchMatches:
    """Token-index pairs (N, M): ``teacher[n, m]`` ↔ ``student[n, m]`` where ``valid[n, m]``; column 0 is CLS↔CLS.

    Indices are positions in the ViT output sequence (0 = CLS, patch (r, c) of a P×P grid = 1 + r·P + c); padded
    entries point at CLS and are not valid.
    """

    teacher: Tensor
    student: Tensor
    valid: Tensor

    @property
    def n_patch_pairs(self) -> Tensor:
        return self.valid[:, 1:].sum(1)


def floor_linspace(n_big: Tensor, n_small: Tensor, k: Tensor) -> Tensor:
    """``floor(numpy.linspace(0, n_big − 1, n_small))[k]`` in float64, last index exact, as numpy's."""
    n_big, n_small = n_big.to(torch.float64), n_small.to(torch.float64)
    step = (n_big - 1) / (n_small - 1).clamp_min(1)
    index = torch.floor(k.to(torch.float64) * step)
    index = torch.where(k == n_small.long() - 1, n_big - 1, index)
    return torch.where(n_small <= 1, torch.zeros_like(index), index).long()


def _grid_ranges(box: Tensor, inter: Tensor, grid: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(first row, rows, first column, columns) of the intersection on a view's grid, clipped as slicing does."""
    top, left, height, width = box.unbind(-1)
    i_top, i_left, i_bottom, i_right = inter.unbind(-1)
    r0 = torch.round(grid * (i_top - top) / height)
    c0 = torch.round(grid * (i_left - left) / width)
    nr = torch.round(grid * (i_bottom - i_top) / height)
    nc = torch.round(grid * (i_right - i_left) / width)
    r0, c0 = r0.clamp(0, grid), c0.clamp(0, grid)
    nr = (r0 + nr).clamp(0, grid) - r0
    nc = (c0 + nc).clamp(0, grid) - c0
    return r0.long(), nr.long(), c0.long(), nc.long()


def match_patches(boxes_a: Tensor, flips_a: Tensor, grid_a: int, boxes_b: Tensor, flips_b: Tensor,
                  grid_b: int) -> PatchMatches:
    """Matches between teacher view A and student view B for N rows.

    boxes_*: (N, 4) (top, left, height, width) in one reference frame per image; flips_*: (N,) bool; grid_*: the
    side of each view's patch grid.
    """
    boxes_a, boxes_b = boxes_a.to(torch.float64), boxes_b.to(torch.float64)
    a_bottom, a_right = boxes_a[:, 0] + boxes_a[:, 2], boxes_a[:, 1] + boxes_a[:, 3]
    b_bottom, b_right = boxes_b[:, 0] + boxes_b[:, 2], boxes_b[:, 1] + boxes_b[:, 3]
    inter = torch.stack([torch.maximum(boxes_a[:, 0], boxes_b[:, 0]), torch.maximum(boxes_a[:, 1], boxes_b[:, 1]),
                         torch.minimum(a_bottom, b_bottom), torch.minimum(a_right, b_right)], dim=-1)
    overlaps = (inter[:, 0] < inter[:, 2]) & (inter[:, 1] < inter[:, 3])
    r0a, nra, c0a, nca = _grid_ranges(boxes_a, inter, grid_a)
    r0b, nrb, c0b, ncb = _grid_ranges(boxes_b, inter, grid_b)
    rows, cols = torch.minimum(nra, nrb), torch.minimum(nca, ncb)
    rows, cols = torch.where(overlaps, rows, 0), torch.where(overlaps, cols, 0)

    side = min(grid_a, grid_b)
    k = torch.arange(side, device=boxes_a.device)[None, :]  # the k-th kept row (column) of the coarser grid

    def axis(n_self: Tensor, n_other: Tensor) -> Tensor:
        """Offsets (N, side) into a view's range: decimated where it is the finer axis, else the identity."""
        decimated = floor_linspace(n_self[:, None], n_other[:, None], k)
        return torch.where((n_self >= n_other)[:, None], decimated, k)

    def token_ids(r0: Tensor, c0: Tensor, nc: Tensor, flip: Tensor, row_off: Tensor, col_off: Tensor,
                  grid: int) -> Tensor:
        row = r0[:, None] + row_off
        # Flipped view: the range is mirrored into the crop and the columns reversed back to image order.
        col = torch.where(flip[:, None], grid - c0[:, None] - 1 - col_off, c0[:, None] + col_off)
        return 1 + row[:, :, None] * grid + col[:, None, :]  # (N, side, side)

    ids_a = token_ids(r0a, c0a, nca, flips_a.bool(), axis(nra, nrb), axis(nca, ncb), grid_a)
    ids_b = token_ids(r0b, c0b, ncb, flips_b.bool(), axis(nrb, nra), axis(ncb, nca), grid_b)
    valid = (k[:, :, None] < rows[:, None, None]) & (k[:, None, :] < cols[:, None, None])
    valid = valid.flatten(1)
    cls_column = torch.ones(len(valid), 1, dtype=torch.bool, device=valid.device)
    zeros = torch.zeros(len(valid), 1, dtype=torch.long, device=valid.device)
    return PatchMatches(teacher=torch.cat([zeros, torch.where(valid, ids_a.flatten(1), 0)], 1),
                        student=torch.cat([zeros, torch.where(valid, ids_b.flatten(1), 0)], 1),
                        valid=torch.cat([cls_column, valid], 1))
