"""Weighted k-NN classification, DINO protocol (``eval_knn.py``; specs/evaluation-protocols.md §2).

Features are L2-normalised; each test image's k nearest training images by cosine similarity vote with weight
exp(similarity / T). scikit-learn's brute-force ``KNeighborsClassifier`` with the cosine metric computes exactly
this once its distances (1 − similarity) are turned back into weights exp((1 − d) / T).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize


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
