"""``roxford5k`` and ``rparis6k``: the revisited Oxford and Paris retrieval sets on disk (Radenović et al., CVPR 2018).

The layout is revisitop's (``filipradenovic/revisitop``, ``python/dataset.py``, ``configdataset``):
``<root>/roxford5k/gnd_roxford5k.pkl`` (a pickled dict: ``imlist`` and ``qimlist``, the database and query image
names, and ``gnd``, one dict per query with ``bbx`` (x1, y1, x2, y2) and the database indices ``easy``, ``hard`` and
``junk``) and the images ``<root>/roxford5k/jpg/<name>.jpg``. Queries are cropped to their ``bbx`` before anything
else (revisitop's ``example_process_images.py``); then every image is shrunk so that its longer side is at most the
dataset's size, keeping its aspect ratio (PIL ``thumbnail`` with Lanczos resampling, as ``facebookresearch/dino``,
``eval_image_retrieval.py``). The sizes and the multi-scale default are those of DINO's README: Oxford 224 px,
single scale; Paris 512 px, multi-scale.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from .base import (
    NO_LABEL,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    RetrievalSet,
    Split,
    register_dataset,
)
from .segmentation import IMAGENET_MEAN, IMAGENET_STD

GROUND_TRUTH_KEYS = ("bbx", "easy", "hard", "junk")


def read_thumbnail(paths: tuple[Path, ...], size: int, boxes: tuple | None, index: int) -> torch.Tensor:
    """uint8 (3, h, w) image ``paths[index]``, cropped to ``boxes[index]`` if given, longer side shrunk to ``size``."""
    with Image.open(paths[index]) as image:
        image = image.convert("RGB")
        if boxes is not None:
            image = image.crop(tuple(float(v) for v in boxes[index]))
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


class _RevisitedSource(DatasetSource):
    """A revisited retrieval set under ``<root>/<name>/``; see the module docstring."""

    num_classes = 0
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    embedded: ClassVar[bool] = False
    provides: ClassVar[frozenset[str]] = frozenset({"retrieval"})
    multiscale: ClassVar[bool]

    @property
    def ground_truth_path(self) -> Path:
        return self.expected_path() / f"gnd_{self.name}.pkl"

    def expected_path(self) -> Path:
        return self.root / self.name

    def files_present(self) -> bool:
        return self.ground_truth_path.is_file() and (self.expected_path() / "jpg").is_dir()

    def check(self) -> None:
        missing = [str(p) for p in (self.ground_truth_path, self.expected_path() / "jpg") if not p.exists()]
        if missing:
            raise DatasetFilesMissing(
                f"dataset '{self.name}': {' and '.join(missing)} not found; it needs gnd_{self.name}.pkl and jpg/ "
                f"(revisitop's download), or point --data-root / $PATCHBENCH_DATA at the folder holding {self.name}/")

    def load(self, split: Split) -> ImageSet:
        raise DatasetError(f"dataset '{self.name}' serves retrieval only (the retrieval evaluation), not a {split} "
                           "split; pretrain on another dataset")

    def _ground_truth(self) -> dict:
        try:
            with open(self.ground_truth_path, "rb") as f:
                config = pickle.load(f)
            names = {key: [str(n) for n in config[key]] for key in ("imlist", "qimlist")}
            queries = [{key: q[key] for key in GROUND_TRUTH_KEYS} for q in config["gnd"]]
        except Exception as err:  # any damage to the pickle: one line naming it
            raise DatasetError(f"dataset '{self.name}': unreadable ground truth {self.ground_truth_path} "
                               f"({type(err).__name__}: {err}); download gnd_{self.name}.pkl again") from None
        if len(queries) != len(names["qimlist"]):
            raise DatasetError(f"dataset '{self.name}': {self.ground_truth_path} has {len(queries)} gnd entries for "
                               f"{len(names['qimlist'])} queries; download it again")
        n = len(names["imlist"])
        outside = [i for i, q in enumerate(queries) for key in ("easy", "hard", "junk")
                   if np.any((np.asarray(q[key]) < 0) | (np.asarray(q[key]) >= n))]
        if outside:
            raise DatasetError(f"dataset '{self.name}': the gnd of query {outside[0]} in {self.ground_truth_path} "
                               f"lists database indices outside 0..{n - 1}; download it again")
        return {**names, "gnd": queries}

    def retrieval(self) -> RetrievalSet:
        self.check()
        config = self._ground_truth()
        images = self.expected_path() / "jpg"
        database = tuple(images / f"{n}.jpg" for n in config["imlist"])
        queries = tuple(images / f"{n}.jpg" for n in config["qimlist"])
        missing = [str(p) for p in dict.fromkeys(database + queries) if not p.is_file()]
        if missing:
            raise DatasetError(f"dataset '{self.name}': {len(missing)} image(s) listed in "
                               f"{self.ground_truth_path.name} are missing, e.g. {', '.join(missing[:3])}")
        gnd = config["gnd"]

        def indices(key: str) -> tuple[np.ndarray, ...]:
            return tuple(np.asarray(q[key], dtype=np.int64).reshape(-1) for q in gnd)

        return RetrievalSet(
            ImageSet(np.full(len(database), NO_LABEL), loader=partial(read_thumbnail, database, self.image_size, None)),
            ImageSet(np.full(len(queries), NO_LABEL),
                     loader=partial(read_thumbnail, queries, self.image_size, tuple(q["bbx"] for q in gnd))),
            easy=indices("easy"), hard=indices("hard"), junk=indices("junk"), multiscale=self.multiscale)


@register_dataset
class ROxford5kSource(_RevisitedSource):
    """Revisited Oxford: 4993 database images, 70 cropped queries; 224 px, single scale (DINO's README)."""

    name: ClassVar[str] = "roxford5k"
    image_size = 224
    multiscale: ClassVar[bool] = False
    description: ClassVar[str] = "revisited Oxford5k (revisitop gnd + jpg): retrieval only, longer side 224 px"
    layout: ClassVar[str] = ("<data root>/roxford5k/\n    gnd_roxford5k.pkl    (revisitop ground truth)\n"
                             "    jpg/<name>.jpg       (the Oxford5k images)")


@register_dataset
class RParis6kSource(_RevisitedSource):
    """Revisited Paris: 6322 database images, 70 cropped queries; 512 px, multi-scale (DINO's README)."""

    name: ClassVar[str] = "rparis6k"
    image_size = 512
    multiscale: ClassVar[bool] = True
    description: ClassVar[str] = "revisited Paris6k (revisitop gnd + jpg): retrieval only, longer side 512 px, "\
                                 "multi-scale"
    layout: ClassVar[str] = ("<data root>/rparis6k/\n    gnd_rparis6k.pkl     (revisitop ground truth)\n"
                             "    jpg/<name>.jpg       (the Paris6k images)")
