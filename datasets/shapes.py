"""``shapes``: procedural 32 px scenes of 2-4 coloured shapes on textured backgrounds; embedded, deterministic.

Each scene holds one *labelled* object and 1-3 smaller distractors of distinct classes (any class, the label's
included). The labelled object has an area at least (6/4.5)² ≈ 1.78× that of any distractor and is drawn last, on
top of the others, so its class is also the class with the most visible pixels in the per-pixel mask. Objects have
random colour (contrasting with the background), area, position and rotation; backgrounds are two-colour stripes,
checks or smooth noise under a brightness gradient, plus pixel noise, so that raw pixels carry little of the label.

Rendering is vectorised over a batch of scenes: every object is an inside test on a 3× supersampled coordinate
grid (no loop over pixels), and images are area-downsampled from it (antialiasing). Masks (0 background, c + 1
for class c, later objects occluding earlier ones) give each pixel the layer covering most of its subsamples.
Each split is generated once and kept on disk in the dataset cache (``cache.py``), keyed by its size, seed, this
file's source and numpy's version.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Callable, ClassVar

import numpy as np
import torch

from .base import DatasetSource, ImageSet, Segmentation, Split, register_dataset
from .cache import cached_arrays, source_digest
from .edits import EditedTestSplit

CLASSES = ("disc", "square", "triangle", "cross", "ring", "star")
SIZE = 32
SUPERSAMPLE = 3
MAX_DISTRACTORS = 3
LABELLED_RADIUS = (6.0, 9.0)  # area-equivalent radius (px) of the labelled object: area = pi r^2
DISTRACTOR_RADIUS = (2.5, 4.5)
PIXEL_NOISE = 0.02
CHUNK = 500  # scenes rendered at once (bounds memory)
SPLIT_SIZES = {"train": 4000, "test": 1000}
SPLIT_SEEDS = {"train": 1001, "test": 2002}

CROSS_HALF_WIDTH = 0.33
RING_INNER = 0.5
STAR_INNER = 0.45
_STAR_NORMAL = (STAR_INNER * np.sin(np.pi / 5), 1.0 - STAR_INNER * np.cos(np.pi / 5))  # of the tip-notch edge
_TRIANGLE_NORMALS = [(np.cos(a), np.sin(a)) for a in np.pi / 2 + np.pi / 3 + 2 * np.pi / 3 * np.arange(3)]

Array = np.ndarray


def _disc(u: Array, v: Array) -> Array:
    return u * u + v * v <= 1.0


def _square(u: Array, v: Array) -> Array:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def _triangle(u: Array, v: Array) -> Array:
    """Equilateral, circumradius 1, a vertex on +v (edges at distance 1/2 from the centre)."""
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for nu, nv in _TRIANGLE_NORMALS:
        inside &= u * nu + v * nv <= 0.5
    return inside


def _cross(u: Array, v: Array) -> Array:
    au, av = np.abs(u), np.abs(v)
    return ((au <= CROSS_HALF_WIDTH) & (av <= 1.0)) | ((av <= CROSS_HALF_WIDTH) & (au <= 1.0))


def _ring(u: Array, v: Array) -> Array:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= RING_INNER ** 2)


def _star(u: Array, v: Array) -> Array:
    """Five tips at radius 1 (one on +u), notches at radius STAR_INNER.

    The polar angle is folded into one half-point (0 at the tip); the point is inside when it lies on the centre's
    side of that half-point's tip-notch edge, whose normal n gives |p| |n| cos(angle - angle(n)) <= n_u.
    """
    sector = np.float32(2 * np.pi / 5)
    angle = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)
    nu, nv = _STAR_NORMAL
    projection = np.sqrt(u * u + v * v) * np.cos(angle - np.float32(np.arctan2(nv, nu)))
    return projection * np.float32(np.hypot(nu, nv)) <= nu


def _polygon(radius: float, count: int, start: float = 0.0) -> Array:
    """(count, 2) vertices of a regular polygon."""
    angles = start + 2 * np.pi * np.arange(count) / count
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


@dataclass(frozen=True)
class _Shape:
    inside: Callable[[Array, Array], Array]  # on unit-scale object coordinates
    area: float  # at unit scale
    hull: Array  # (V, 2) vertices of a convex polygon holding the unit-scale shape


_ROUND = _polygon(1 / np.cos(np.pi / 64), 64)  # circumscribes the unit circle
_CROSS_HULL = np.array([(1, CROSS_HALF_WIDTH), (CROSS_HALF_WIDTH, 1)] * 4) * np.repeat(
    [(1, 1), (-1, 1), (-1, -1), (1, -1)], 2, axis=0)
SHAPES = (
    _Shape(_disc, np.pi, _ROUND),
    _Shape(_square, 4.0, np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], dtype=float)),
    _Shape(_triangle, 3 * np.sqrt(3) / 4, _polygon(1, 3, np.pi / 2)),
    _Shape(_cross, 8 * CROSS_HALF_WIDTH - 4 * CROSS_HALF_WIDTH ** 2, _CROSS_HULL),
    _Shape(_ring, np.pi * (1 - RING_INNER ** 2), _ROUND),
    _Shape(_star, 5 * STAR_INNER * np.sin(np.pi / 5), _polygon(1, 5)),
)
_AREA = np.array([s.area for s in SHAPES])
_HULLS = np.stack([np.resize(s.hull, (len(_ROUND), 2)) for s in SHAPES])  # (K, V, 2), vertices repeated


@dataclass(frozen=True)
class _Scenes:
    """A batch of sampled scenes; object slots 0..2 are distractors (class -1: absent), slot 3 the labelled one."""

    background: Array  # (n, 3, S, S) float in [0, 1]
    classes: Array  # (n, 4) int
    centres: Array  # (n, 4, 2) x, y in pixels
    scales: Array  # (n, 4) unit-shape scale in pixels
    angles: Array  # (n, 4)
    colours: Array  # (n, 4, 3)


def _pixel_grid() -> tuple[Array, Array]:
    coords = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE
    return coords[None, None, :], coords[None, :, None]


def _uniform(rng: np.random.Generator, low: float, high: float, shape: tuple[int, ...]) -> Array:
    return np.float32(low) + np.float32(high - low) * rng.random(shape, dtype=np.float32)


def _sample_background(rng: np.random.Generator, n: int) -> tuple[Array, Array]:
    """(backgrounds (n,3,S,S), their two colours (n,2,3)): stripes, checks or smooth noise, under a gradient."""
    x, y = _pixel_grid()
    colours = rng.random((n, 2, 3), dtype=np.float32)
    kind = rng.integers(3, size=n)
    angle, gradient_angle = _uniform(rng, 0, np.pi, (n, 1, 1)), _uniform(rng, 0, 2 * np.pi, (n, 1, 1))
    freq = _uniform(rng, 4 * np.pi, 12 * np.pi, (n, 1, 1))  # 2 to 6 periods per image
    sharp = _uniform(rng, 1, 6, (n, 1, 1))
    phase, slope = _uniform(rng, 0, 2 * np.pi, (n, 1, 1)), _uniform(rng, 0, 0.6, (n, 1, 1))
    interp = _linear_interpolation(5, SIZE)
    weight = interp @ rng.random((n, 5, 5), dtype=np.float32) @ interp.T  # smooth noise
    waves = np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    stripes = kind == 0
    weight[stripes] = 0.5 + 0.5 * np.tanh(sharp[stripes] * waves[stripes])
    checks = kind == 1
    cross_waves = np.sin(freq[checks] * (y * np.cos(angle[checks]) - x * np.sin(angle[checks])))
    weight[checks] = 0.5 + 0.5 * np.tanh(sharp[checks] * waves[checks] * cross_waves)
    gradient = 1 + slope * ((x - 0.5) * np.cos(gradient_angle) + (y - 0.5) * np.sin(gradient_angle))
    mix = colours[:, 0, :, None, None] + (colours[:, 1] - colours[:, 0])[:, :, None, None] * weight[:, None]
    return np.clip(mix * gradient[:, None], 0, 1), colours


def _linear_interpolation(n_in: int, n_out: int) -> Array:
    """(n_out, n_in) matrix of linear interpolation between n_in control points spanning the image."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    low = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - low
    matrix = np.zeros((n_out, n_in), np.float32)
    matrix[np.arange(n_out), low] = 1 - frac
    matrix[np.arange(n_out), low + 1] = frac
    return matrix


def _sample(rng: np.random.Generator, labels: Array) -> _Scenes:
    """Scenes whose labelled object (slot 3) has class ``labels``."""
    n, k = len(labels), len(SHAPES)
    background, bg_colours = _sample_background(rng, n)
    distractors = np.argsort(rng.random((n, k)), axis=1)[:, :MAX_DISTRACTORS]  # distinct classes
    count = rng.integers(1, MAX_DISTRACTORS + 1, size=n)
    distractors[np.arange(MAX_DISTRACTORS)[None, :] >= count[:, None]] = -1
    classes = np.concatenate([distractors, labels[:, None]], axis=1)
    radius = np.concatenate([rng.uniform(*DISTRACTOR_RADIUS, (n, MAX_DISTRACTORS)),
                             rng.uniform(*LABELLED_RADIUS, (n, 1))], axis=1)
    scales = np.sqrt(np.pi * radius ** 2 / _AREA[np.maximum(classes, 0)])
    angles = rng.uniform(0, 2 * np.pi, (n, MAX_DISTRACTORS + 1))
    cos, sin = np.cos(angles[:, -1, None]), np.sin(angles[:, -1, None])
    hull = _HULLS[labels] * scales[:, -1, None, None]  # the labelled object lies wholly inside the image
    hull_x = hull[..., 0] * cos - hull[..., 1] * sin
    hull_y = hull[..., 0] * sin + hull[..., 1] * cos
    low = -np.stack([hull_x.min(axis=1), hull_y.min(axis=1)], axis=1)
    high = SIZE - np.stack([hull_x.max(axis=1), hull_y.max(axis=1)], axis=1)
    labelled_centre = low + rng.random((n, 2)) * (high - low)
    centres = np.concatenate([rng.uniform(1, SIZE - 1, (n, MAX_DISTRACTORS, 2)), labelled_centre[:, None]], axis=1)
    candidates = rng.random((n, MAX_DISTRACTORS + 1, 8, 3))  # keep the one farthest from both background colours
    distance = np.linalg.norm(candidates[:, :, :, None] - bg_colours[:, None, None], axis=-1).min(axis=-1)
    best = distance.argmax(axis=-1)
    colours = np.take_along_axis(candidates, best[..., None, None], axis=2)[:, :, 0]
    return _Scenes(background, classes, centres, scales, angles, colours)


def _block_sum(x: Array) -> Array:
    """Sums over the SUPERSAMPLE × SUPERSAMPLE blocks of (n, side, side) → (n, S, S)."""
    rows = reduce(np.add, (x[:, i::SUPERSAMPLE] for i in range(SUPERSAMPLE)))
    return reduce(np.add, (rows[:, :, i::SUPERSAMPLE] for i in range(SUPERSAMPLE)))


def _render(scenes: _Scenes, rng: np.random.Generator) -> tuple[Array, Array]:
    """(uint8 images (n,3,S,S), uint8 masks (n,S,S)) of a batch of scenes."""
    n, side = len(scenes.classes), SIZE * SUPERSAMPLE
    coords = (np.arange(side, dtype=np.float32) + 0.5) / SUPERSAMPLE
    top = np.zeros((n, side, side), dtype=np.uint8)  # 0: background, slot + 1: the topmost object
    for slot in range(MAX_DISTRACTORS + 1):
        for c, shape in enumerate(SHAPES):
            sel = np.flatnonzero(scenes.classes[:, slot] == c)
            if sel.size == 0:
                continue
            cos = np.cos(scenes.angles[sel, slot]).astype(np.float32)[:, None, None]
            sin = np.sin(scenes.angles[sel, slot]).astype(np.float32)[:, None, None]
            scale = scenes.scales[sel, slot].astype(np.float32)[:, None, None]
            dx = (coords[None, None, :] - scenes.centres[sel, slot, 0, None, None].astype(np.float32)) / scale
            dy = (coords[None, :, None] - scenes.centres[sel, slot, 1, None, None].astype(np.float32)) / scale
            covered = top[sel]
            covered[shape.inside(dx * cos + dy * sin, dy * cos - dx * sin)] = slot + 1
            top[sel] = covered
    slots = MAX_DISTRACTORS + 2  # background and the objects
    counts = np.stack([_block_sum((top == slot).view(np.uint8)) for slot in range(slots)], axis=-1)
    cover = counts.astype(np.float32) / SUPERSAMPLE ** 2
    objects = np.matmul(cover[..., 1:].reshape(n, SIZE * SIZE, -1), scenes.colours.astype(np.float32))
    images = (objects.transpose(0, 2, 1).reshape(n, 3, SIZE, SIZE) + cover[:, None, :, :, 0] * scenes.background
              + np.float32(PIXEL_NOISE) * rng.standard_normal(scenes.background.shape, dtype=np.float32))
    slot_class = np.concatenate([np.zeros((n, 1), np.int64), scenes.classes + 1], axis=1).astype(np.uint8)
    masks = np.take_along_axis(slot_class, counts.argmax(axis=-1).reshape(n, -1), axis=1)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), masks.reshape(n, SIZE, SIZE)


def visible_class_pixels(masks: Array) -> Array:
    """(n, K) count of mask pixels of each class."""
    flat = masks.reshape(len(masks), -1).astype(np.int64)
    offsets = np.arange(len(masks))[:, None] * (len(SHAPES) + 1)
    counts = np.bincount((flat + offsets).ravel(), minlength=len(masks) * (len(SHAPES) + 1))
    return counts.reshape(len(masks), len(SHAPES) + 1)[:, 1:]


def _labelled_class_dominates(masks: Array, labels: Array) -> Array:
    """Whether the label is strictly the class with the most visible pixels, per scene."""
    counts = visible_class_pixels(masks)
    own = counts[np.arange(len(labels)), labels]
    counts[np.arange(len(labels)), labels] = -1
    return own > counts.max(axis=1)


def generate_shapes(n: int, seed: int) -> tuple[Array, Array, Array]:
    """(uint8 images (n,3,32,32), uint8 masks (n,32,32), int64 labels (n,)): deterministic for (n, seed).

    Classes are balanced (n // K or n // K + 1 scenes each). A scene whose label is not strictly the most visible
    class (possible only through pixel quantisation of tiny objects) is redrawn.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPES))
    images = np.empty((n, 3, SIZE, SIZE), np.uint8)
    masks = np.empty((n, SIZE, SIZE), np.uint8)
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        images[part], masks[part] = _render(_sample(rng, labels[part]), rng)
        while not (ok := _labelled_class_dominates(masks[part], labels[part])).all():
            redo = np.flatnonzero(~ok) + start
            images[redo], masks[redo] = _render(_sample(rng, labels[redo]), rng)
    return images, masks, labels.astype(np.int64)


def cache_key(split: Split) -> dict:
    """What a split's arrays depend on: its size and seed, this generator's source (which holds every other
    setting) and numpy's version (``Generator`` streams may change between versions)."""
    return {"n": SPLIT_SIZES[split], "seed": SPLIT_SEEDS[split], "generator": source_digest(__file__),
            "numpy": np.__version__}


@lru_cache(maxsize=None)
def _split(split: Split) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A split, generated once and kept in the dataset cache (``cache.py``), and in memory for this process."""
    def generate() -> dict[str, np.ndarray]:
        images, masks, labels = generate_shapes(SPLIT_SIZES[split], SPLIT_SEEDS[split])
        return {"images": images, "masks": masks, "labels": labels}

    arrays = cached_arrays(f"shapes-{split}", cache_key(split), generate)
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["masks"]), arrays["labels"]


@register_dataset
class ShapesSource(EditedTestSplit, DatasetSource):
    """Label = the class of the largest of 2-4 shapes (disc, square, triangle, cross, ring, star); with masks."""

    name: ClassVar[str] = "shapes"
    num_classes = len(CLASSES)
    classes: ClassVar[tuple[str, ...]] = CLASSES
    image_size = SIZE
    mean: ClassVar[tuple[float, float, float]] = (0.4993, 0.4993, 0.4971)  # of the train split
    std: ClassVar[tuple[float, float, float]] = (0.2700, 0.2710, 0.2692)
    embedded: ClassVar[bool] = True
    description: ClassVar[str] = "class of the largest of 2-4 shapes on textures, 6 classes, 32 px, masks (embedded)"
    provides: ClassVar[frozenset[str]] = frozenset({"labels", "masks", "copies", "retrieval"})  # datasets/edits.py
    segmentation: ClassVar[Segmentation] = Segmentation(("background", *CLASSES))  # mask value c + 1: class c

    def load(self, split: Split) -> ImageSet:
        images, masks, labels = _split(split)
        return ImageSet(labels, images=images, masks=masks)
