"""Copy detection, DINO's Copydays protocol (``facebookresearch/dino``, ``eval_copy_detection.py``).

Each image's descriptor is the method's global readout (the CLS token for DINO; SelfPatch has no CLS token and GTSA
does not train it, so their global readout stands in, and the record says which) concatenated with the GeM pooling
(p = 4) of its last-layer patch tokens: ( mean over the map of clamp(t, 1e-6)^p )^(1/p), as upstream's
``extract_features``. Descriptors are PCA-whitened with a transform learned on the distractors, L2-normalised and
compared by cosine similarity; each query's ranked database (the originals and the distractors) is cut to its first
``keep`` (20) results and scored with the Holidays trapezoid AP (:mod:`.ranking`); mAP and recall@1 are reported per
block of queries (``strong``, and the other blocks the dataset has).

Whitening (``whitening``): ``dino`` is upstream's: the mean of the whitening features is subtracted from every
descriptor, but the covariance is the *un-centred* second moment XᵀX / n of the whitening features (a quirk of
``eval_copy_detection.py`` kept on purpose), eigenvalues below 1e-5 × the largest are raised to it and the projection
is diag(λ^-1/2)·Vᵀ (``utils.PCA``, ``whit=0.5``, all dimensions kept); ``centred`` uses the centred covariance, so
that the whitened whitening set has identity covariance; ``none`` skips it. Deviation: upstream learns the whitening
on 20k other YFCC100M images, not on its 10k distractors; here the distractors serve both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from patchbench.methods.typecheck import ranged

from ..features import EvalInputs
from .base import EvalResult, Evaluation, register_evaluation
from .ranking import copy_detection_scores, rank_database

EIGENVALUE_FLOOR = 1e-5  # relative to the largest eigenvalue, as upstream's utils.PCA.train_pca


@dataclass(frozen=True)
class CopyDetectionSettings:
    """``gem_p``: the GeM exponent over the patch tokens (DINO: 4); ``whitening``: ``dino``, ``centred`` or
    ``none`` (module docstring); ``keep``: the results kept per query for the AP (DINO: 20)."""

    gem_p: float = ranged(4.0, above=0)
    whitening: Literal["dino", "centred", "none"] = "dino"
    keep: int = ranged(20, min=1)


def gem(patch_map: Tensor, p: float) -> Tensor:
    """Generalised-mean pooling of a patch map (B, h, w, D) → (B, D), values clamped at 1e-6 first."""
    return patch_map.clamp(min=1e-6).pow(p).mean(dim=(1, 2)).pow(1.0 / p)


@dataclass(frozen=True)
class Whitening:
    """PCA whitening with every dimension kept: x − mean in the eigenbasis of the whitening covariance C, each
    coordinate divided by the square root of its eigenvalue, eigenvalues floored at EIGENVALUE_FLOOR × the largest.

    The eigenvectors whose eigenvalue is above the floor are the ``components``; every other direction has the
    floored eigenvalue, so it is kept as the residual (x − mean − its projection on the components) divided by the
    floor's square root, in the original coordinates: a rotation of upstream's diag(λ^-1/2)·Vᵀ within those
    directions, which leaves inner products, norms and cosine similarities as they are. With N features of D > N
    dimensions the eigenvectors come from the N × N Gram matrix (O(N²D), not O(D³))."""

    mean: np.ndarray
    components: np.ndarray  # (k, D) orthonormal rows, eigenvalues decreasing
    scales: np.ndarray  # (k,) λ^-1/2
    residual_scale: float  # floor^-1/2, for the directions outside the components

    @classmethod
    def learn(cls, features: np.ndarray, centred: bool) -> "Whitening":
        """From ``features`` (N, D); C is the centred covariance or, as DINO's code computes it, the un-centred
        second moment XᵀX / N (module docstring); the mean is subtracted when applied in both cases."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(0)
        basis = x - mean if centred else x
        n, dim = basis.shape
        if dim <= n:
            eigenvalues, vectors = np.linalg.eigh(basis.T @ basis / n)
        else:  # C's non-zero eigenvalues are those of the Gram matrix; Xᵀu / ‖Xᵀu‖ are its eigenvectors
            eigenvalues, gram_vectors = np.linalg.eigh(basis @ basis.T / n)
            vectors = basis.T @ gram_vectors
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = eigenvalues[order], vectors[:, order]
        floor = eigenvalues[0] * EIGENVALUE_FLOOR
        kept = eigenvalues > floor
        components = vectors[:, kept].T
        components /= np.linalg.norm(components, axis=1, keepdims=True)
        return cls(mean, components, 1.0 / np.sqrt(eigenvalues[kept]), float(1.0 / np.sqrt(floor)))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """(M, D) → (M, k), or (M, k + D) when k < D (the residual block)."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        projected = centred @ self.components.T
        whitened = projected * self.scales
        if len(self.components) == centred.shape[1]:
            return whitened
        return np.concatenate([whitened, (centred - projected @ self.components) * self.residual_scale], axis=1)


def metric_suffix(block: str) -> str:
    """A block name as part of a metric name: ``jpegqual/30`` → ``jpegqual_30``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", block).strip("_")


@register_evaluation("copydetect")
class CopyDetection(Evaluation):
    settings_class = CopyDetectionSettings
    reads = "global+patches"
    needs = frozenset({"copies"})
    description = "DINO's Copydays protocol: [global readout, GeM-4 of the patch tokens], whitened; mAP, recall@1"

    def check_dataset(self, source) -> None:
        """An on-disk set is listed (and its ground truth read) at load, so that missing or damaged files stop the
        matrix before anything runs; embedded sets are built when the evaluation runs."""
        if not source.embedded:
            source.copies()

    def run(self, inputs: EvalInputs) -> EvalResult:
        s: CopyDetectionSettings = self.settings
        copies = inputs.source.copies()
        encoder = inputs.encoder
        descriptor = f"{encoder.global_readout}+gem{s.gem_p:g}-{encoder.patch_readout}"

        def embed(images: Tensor) -> Tensor:
            return torch.cat([encoder.global_features(images).float(),
                              gem(encoder.patch_features(images).float(), s.gem_p)], dim=1)

        originals, distractors, queries = (inputs.cached_features(part, data, descriptor, embed)
                                           for part, data in (("originals", copies.originals),
                                                              ("distractors", copies.distractors),
                                                              ("queries", copies.queries)))
        whiten = (Whitening.learn(distractors, centred=s.whitening == "centred") if s.whitening != "none"
                  else np.asarray)
        rankings, _ = rank_database(whiten(queries), np.concatenate([whiten(originals), whiten(distractors)]))
        aps, first_right = copy_detection_scores(rankings, copies.positives, s.keep)
        blocks = np.asarray(copies.subsets)
        metrics = {}
        for block in dict.fromkeys(copies.subsets):
            chosen = blocks == block
            metrics[f"map_{metric_suffix(block)}"] = float(aps[chosen].mean())
            metrics[f"recall1_{metric_suffix(block)}"] = float(first_right[chosen].mean())
        stand_in = "" if encoder.global_readout == "cls" else (
            f" (this row has no trained CLS token: its global readout '{encoder.global_readout}' stands in)")
        return EvalResult(
            metrics=metrics,
            protocol=(f"dino-copydetect: descriptor = [{encoder.global_readout} | GeM p={s.gem_p:g} of the "
                      f"{encoder.patch_readout}]{stand_in} at {inputs.resolution} px; "
                      + {"dino": "PCA-whitened as DINO (mean removed, un-centred covariance)",
                         "centred": "PCA-whitened (centred covariance)", "none": "not whitened"}[s.whitening]
                      + f" with {len(distractors)} distractors as the whitening set; L2-normalised, cosine; database "
                      f"= {len(originals)} originals + {len(distractors)} distractors; Holidays AP over the top "
                      f"{s.keep} per query, mean per block"),
            probe_hparams={"descriptor": descriptor, "descriptor_dim": int(queries.shape[1]),
                           "global_readout": encoder.global_readout, "originals": len(originals),
                           "distractors": len(distractors),
                           "queries": {block: int((blocks == block).sum()) for block in dict.fromkeys(copies.subsets)}},
            selection_rule="none: nothing is tuned")
