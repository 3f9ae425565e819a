"""Weighted k-NN classification, DINO's protocol (``facebookresearch/dino``, ``eval_knn.py``, ``knn_classifier``).

Features are L2-normalised; each test image's k nearest training images by cosine similarity vote with weight
exp(similarity / T). scikit-learn's brute-force ``KNeighborsClassifier`` with the cosine metric computes exactly
this once its distances (1 − similarity) are turned back into weights exp((1 − d) / T). The training split is the
bank and the test split the queries; nothing is selected: every k of the settings is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from ..features import EvalInputs
from .base import EvalResult, Evaluation, register_evaluation


@dataclass(frozen=True)
class KnnSettings:
    """``k``: the neighbour counts, each reported (DINO reports 20 of 10, 20, 100, 200); ``temperature``: T of the
    exp(s / T) vote (DINO: 0.07)."""

    k: tuple[int, ...] = (10, 20)
    temperature: float = 0.07


def knn_top1(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
             test_labels: np.ndarray, ks: tuple[int, ...], temperature: float) -> dict[int, float]:
    """Top-1 accuracy of the T-weighted k-NN vote for each k in ``ks``."""
    train_features, test_features = normalize(train_features), normalize(test_features)
    results = {}
    for k in ks:
        classifier = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                          weights=lambda d: np.exp((1.0 - d) / temperature))
        classifier.fit(train_features, train_labels)
        results[k] = float((classifier.predict(test_features) == test_labels).mean())
    return results


@register_evaluation("knn")
class Knn(Evaluation):
    settings_class = KnnSettings
    reads = "global"
    needs = frozenset({"labels"})
    description = "DINO's weighted k-NN on the L2-normalised global embedding; every k reported"

    def run(self, inputs: EvalInputs) -> EvalResult:
        s: KnnSettings = self.settings
        train_x = inputs.features("train")
        top1 = knn_top1(np.asarray(train_x), inputs.labels("train"), np.asarray(inputs.features("test")),
                        inputs.labels("test"), s.k, s.temperature)
        return EvalResult(
            metrics={f"top1_k{k}": acc for k, acc in top1.items()},
            protocol=(f"dino-knn: L2-normalised {inputs.readout} features, cosine, exp(s/T)-weighted vote; "
                      "bank = train split, queries = test split, native resolution"),
            probe_hparams={"feature_dim": int(train_x.shape[1])},
            selection_rule="none: every k is reported")
