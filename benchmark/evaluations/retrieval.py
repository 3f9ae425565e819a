"""Instance retrieval, the revisited Oxford / Paris protocol (Radenović et al., CVPR 2018) as DINO runs it
(``facebookresearch/dino``, ``eval_image_retrieval.py``).

The descriptor is the method's global readout (DINO: the CLS token) of each image, read one image at a time at the
dataset's size (the longer side capped at ``image_size``, aspect ratio kept: DINO's README uses 224 px for Oxford,
512 for Paris); with ``multiscale`` it is the mean of the readouts at scales 1, 1/√2 and 1/2 (bilinear resizing of the
normalised image; ``utils.multi_scale``). Descriptors are L2-normalised, the database is ranked by cosine similarity
for each query, and the mAP is computed as revisitop's ``compute_map`` (``filipradenovic/revisitop``,
``python/evaluate.py``; :mod:`.ranking`) for the two settings: Medium (positives: easy and hard; junk ignored) and
Hard (positives: hard; junk and easy ignored).

Queries are cropped to their bounding box (``bbx``) before anything else, as the revisited protocol requires
(revisitop's ``example_process_images.py``); DINO's script feeds the whole query image (a deviation from DINO, whose
published numbers therefore differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..features import EXTRACT_BATCH, EvalInputs
from .base import EvalResult, Evaluation, register_evaluation
from .ranking import rank_database, revisited_map

SCALES = (1.0, 1 / math.sqrt(2), 0.5)  # DINO's utils.multi_scale


@dataclass(frozen=True)
class RetrievalSettings:
    """``multiscale``: average the readout over three scales; null (the default) follows the dataset's protocol
    (DINO's README: on for Paris, off for Oxford)."""

    multiscale: bool | None = None


def whole_patches(embed, patch_size: int):
    """``embed`` of images cut to whole patches: the last H mod p rows and W mod p columns are dropped, which is what
    DINO's patch embedding (a stride-p convolution) does with them."""
    def cut(images: Tensor) -> Tensor:
        height, width = images.shape[-2] // patch_size * patch_size, images.shape[-1] // patch_size * patch_size
        return embed(images[..., :height, :width])
    return cut


def multiscale_features(embed, images: Tensor) -> Tensor:
    """The mean of ``embed`` at the SCALES of normalised images (B, 3, H, W), each row then L2-normalised."""
    total = torch.zeros((), device=images.device)
    for scale in SCALES:
        resized = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                            align_corners=False)
        total = total + embed(resized).float()
    mean = total / len(SCALES)
    return mean / mean.norm(dim=1, keepdim=True)


@register_evaluation("retrieval")
class Retrieval(Evaluation):
    settings_class = RetrievalSettings
    reads = "global"
    needs = frozenset({"retrieval"})
    description = "revisited Oxford/Paris protocol: global readout, cosine ranking; mAP Medium and Hard"

    def check_dataset(self, source) -> None:
        """An on-disk set is listed (and its ground truth read) at load, so that missing or damaged files stop the
        matrix before anything runs; embedded sets are built when the evaluation runs."""
        if not source.embedded:
            source.retrieval()

    def run(self, inputs: EvalInputs) -> EvalResult:
        s: RetrievalSettings = self.settings
        data = inputs.source.retrieval()
        multiscale = data.multiscale if s.multiscale is None else s.multiscale
        single = whole_patches(inputs.embed, inputs.spec.backbone.patch_size)
        embed = (lambda images: multiscale_features(single, images)) if multiscale else single
        descriptor = f"{inputs.readout}-multiscale" if multiscale else inputs.readout
        one_size = data.database.images is not None and data.queries.images is not None
        database, queries = (inputs.cached_features(part, images, descriptor, embed,
                                                    batch_size=EXTRACT_BATCH if one_size else 1)
                             for part, images in (("database", data.database), ("queries", data.queries)))
        rankings, _ = rank_database(queries, database)
        medium, medium_aps = revisited_map(rankings, [np.concatenate([e, h]) for e, h in zip(data.easy, data.hard)],
                                           list(data.junk))
        hard, hard_aps = revisited_map(rankings, list(data.hard),
                                       [np.concatenate([j, e]) for j, e in zip(data.junk, data.easy)])
        return EvalResult(
            metrics={"map_medium": medium, "map_hard": hard},
            protocol=(f"revisited-retrieval: {inputs.readout} of each image (longer side <= {inputs.resolution} px, "
                      f"queries cropped to their box){', mean over scales 1, 1/sqrt2, 1/2' if multiscale else ''}; "
                      "L2-normalised, cosine ranking of the whole database; mAP as revisitop's compute_map, Medium "
                      "(easy + hard positive, junk ignored) and Hard (hard positive, junk and easy ignored)"),
            probe_hparams={"multiscale": multiscale, "database": len(database), "queries": len(queries),
                           "queries_scored": {"medium": int(np.isfinite(medium_aps).sum()),
                                              "hard": int(np.isfinite(hard_aps).sum())}},
            selection_rule="none: nothing is tuned")
