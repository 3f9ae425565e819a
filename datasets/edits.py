"""Embedded copy-detection and retrieval sets, built deterministically from an embedded dataset's test split.

The edits follow the families of Copydays' attacks (Douze et al., "Evaluation of GIST descriptors for web-scale
image search", CIVR 2009; ``facebookresearch/dino``, ``eval_copy_detection.py`` reads its blocks), applied to 32 px
images with PIL: a crop to 20–60 % of the area (resized back to the full square, as DINO resizes every image to one
square), a rotation by 10–30°, a JPEG re-encoding at quality 30–75, a colour change (per-channel gains), a Gaussian
blur and an overlaid patch of solid colour.

Copy detection (:func:`embedded_copy_set`): ``ORIGINALS`` test images are the originals; each gets one query in each
of three blocks, ``strong`` (a crop, then each of rotation, colour change, blur and overlaid patch with probability
1/2, then JPEG), ``crops`` (the crop alone) and ``jpegqual`` (the JPEG re-encoding alone), as Copydays' ``strong``,
``crops/*`` and ``jpegqual/*`` blocks; every other test image is a distractor.

Retrieval (:func:`embedded_retrieval_set`), in the revisited Oxford / Paris form: ``RETRIEVAL_QUERIES`` test images
are the queries, cropped to a box covering 50–90 % of the image (the query's region of interest, as ``bbx``) and
resized back to the square; the database holds, per query, ``EASY_COPIES`` mild copies (a crop to 70–100 % of the
area and a JPEG re-encoding at quality 60–90: easy), ``HARD_COPIES`` strong copies (hard) and one crop to 4–8 % of
the area (too little of the image left to tell: junk), plus every other test image. The query images themselves
are not in the database (as in the revisited protocol).

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, block, index): the same seed gives the same
set, byte for byte.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

from .base import NO_LABEL, CopyDetectionSet, DatasetSource, ImageSet, RetrievalSet

ORIGINALS = 100
RETRIEVAL_QUERIES = 50
EASY_COPIES = 2
HARD_COPIES = 2
SET_SEED = 0  # the seed of the sets the embedded sources serve

CROP_AREA = (0.2, 0.6)
CROP_RATIO = (3 / 4, 4 / 3)
ROTATION_DEGREES = (10.0, 30.0)
JPEG_QUALITY = (30, 75)
COLOUR_GAIN = (0.6, 1.4)
BLUR_RADIUS = (0.5, 1.2)
PATCH_AREA = (0.08, 0.2)
QUERY_BOX_AREA = (0.5, 0.9)
EASY_AREA, EASY_QUALITY = (0.7, 1.0), (60, 90)
JUNK_AREA = (0.04, 0.08)

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def _box(size: int, rng: np.random.Generator, area: tuple[float, float]) -> tuple[int, int, int, int]:
    """A random (left, top, right, bottom) box of ``area`` × the square's area and aspect ratio in CROP_RATIO."""
    fraction = rng.uniform(*area)
    ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
    width = int(np.clip(round(size * np.sqrt(fraction * ratio)), 1, size))
    height = int(np.clip(round(size * np.sqrt(fraction / ratio)), 1, size))
    left, top = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    return left, top, left + width, top + height


def crop(image: Image.Image, rng: np.random.Generator, area: tuple[float, float] = CROP_AREA) -> Image.Image:
    """A crop of ``area`` of the image, resized back to the full square (bilinear)."""
    return image.crop(_box(image.width, rng, area)).resize(image.size, Image.Resampling.BILINEAR)


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A rotation by ±10–30° about the centre; the uncovered corners take the image's mean colour."""
    angle = float(rng.uniform(*ROTATION_DEGREES) * rng.choice([-1, 1]))
    fill = tuple(int(c) for c in np.asarray(image).reshape(-1, 3).mean(0).round())
    return image.rotate(angle, Image.Resampling.BILINEAR, fillcolor=fill)


def jpeg(image: Image.Image, rng: np.random.Generator, quality: tuple[int, int] = JPEG_QUALITY) -> Image.Image:
    """Re-encoded as a JPEG of a quality drawn from ``quality`` (inclusive), with PIL."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def recolour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Each channel scaled by its own gain (a tint that also changes grey images)."""
    gains = rng.uniform(*COLOUR_GAIN, size=3)
    return Image.fromarray(np.clip(np.asarray(image) * gains, 0, 255).round().astype(np.uint8))


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*BLUR_RADIUS))))


def overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A rectangle of solid random colour covering PATCH_AREA of the image."""
    edited = image.copy()
    edited.paste(tuple(int(c) for c in rng.integers(0, 256, 3)), _box(image.width, rng, PATCH_AREA))
    return edited


OPTIONAL_STRONG_EDITS: tuple[Edit, ...] = (rotate, recolour, blur, overlay)


def strong(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Crop, then each optional edit with probability 1/2 (in a fixed order), then JPEG."""
    image = crop(image, rng)
    for edit, chosen in zip(OPTIONAL_STRONG_EDITS, rng.random(len(OPTIONAL_STRONG_EDITS)) < 0.5):
        if chosen:
            image = edit(image, rng)
    return jpeg(image, rng)


def easy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return jpeg(crop(image, rng, EASY_AREA), rng, EASY_QUALITY)


def junk(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return crop(image, rng, JUNK_AREA)


def query_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return crop(image, rng, QUERY_BOX_AREA)


COPY_BLOCKS: dict[str, Edit] = {"strong": strong, "crops": crop, "jpegqual": jpeg}


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def _to_tensor(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).contiguous()


def _unlabelled(images: torch.Tensor) -> ImageSet:
    return ImageSet(np.full(len(images), NO_LABEL), images=images)


def _edited(images: torch.Tensor, chosen: np.ndarray, edit: Edit, seed: int, block: int) -> list[Image.Image]:
    return [edit(_to_pil(images[i]), np.random.default_rng([seed, block, k])) for k, i in enumerate(chosen)]


def _split_originals(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(originals, the rest): ``count`` test indices drawn with ``seed``, both sorted."""
    if n <= count:
        raise ValueError(f"{n} test images cannot give {count} originals and distractors")
    chosen = np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
    return chosen, np.setdiff1d(np.arange(n), chosen)


def embedded_copy_set(images: torch.Tensor, seed: int = SET_SEED) -> CopyDetectionSet:
    """The copy-detection set of uint8 test images (N, 3, S, S); see the module docstring."""
    originals, distractors = _split_originals(len(images), ORIGINALS, seed)
    queries, subsets = [], []
    for block, (name, edit) in enumerate(COPY_BLOCKS.items()):
        queries += _edited(images, originals, edit, seed, block)
        subsets += [name] * len(originals)
    positives = tuple(np.array([k]) for _ in COPY_BLOCKS for k in range(len(originals)))
    return CopyDetectionSet(_unlabelled(images[torch.from_numpy(originals)]),
                            _unlabelled(images[torch.from_numpy(distractors)]), _unlabelled(_to_tensor(queries)),
                            tuple(subsets), positives)


def embedded_retrieval_set(images: torch.Tensor, seed: int = SET_SEED) -> RetrievalSet:
    """The retrieval set of uint8 test images (N, 3, S, S); see the module docstring."""
    chosen, others = _split_originals(len(images), RETRIEVAL_QUERIES, seed)
    queries = _edited(images, chosen, query_crop, seed, 0)
    kinds = [easy] * EASY_COPIES + [strong] * HARD_COPIES + [junk]
    copies = [_edited(images, chosen, edit, seed, 1 + k) for k, edit in enumerate(kinds)]  # one list per kind
    database = [image for per_kind in copies for image in per_kind] + [_to_pil(images[i]) for i in others]
    n = len(chosen)

    def of_kinds(first: int, count: int) -> tuple[np.ndarray, ...]:
        return tuple(np.array([(first + c) * n + q for c in range(count)]) for q in range(n))

    return RetrievalSet(_unlabelled(_to_tensor(database)), _unlabelled(_to_tensor(queries)),
                        easy=of_kinds(0, EASY_COPIES), hard=of_kinds(EASY_COPIES, HARD_COPIES),
                        junk=of_kinds(EASY_COPIES + HARD_COPIES, 1))


def _test_images(source: type[DatasetSource]) -> torch.Tensor:
    images = source().load("test").images
    assert images is not None  # an embedded source holds its splits in memory
    return images


@lru_cache(maxsize=None)
def _copy_set_of(source: type[DatasetSource]) -> CopyDetectionSet:
    return embedded_copy_set(_test_images(source))


@lru_cache(maxsize=None)
def _retrieval_set_of(source: type[DatasetSource]) -> RetrievalSet:
    return embedded_retrieval_set(_test_images(source))


class EditedTestSplit:
    """For embedded sources (mixed in before :class:`DatasetSource`): the copy-detection and retrieval sets built
    from the test split with SET_SEED, once per process."""

    def copies(self) -> CopyDetectionSet:
        return _copy_set_of(self._source())

    def retrieval(self) -> RetrievalSet:
        return _retrieval_set_of(self._source())

    def _source(self) -> type[DatasetSource]:
        source = type(self)
        assert issubclass(source, DatasetSource)  # mixed in before DatasetSource
        return source
