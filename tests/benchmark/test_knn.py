"""Weighted k-NN against hand-computed votes (facebookresearch/dino ``eval_knn.py::knn_classifier``)."""

import numpy as np

from patchbench.benchmark.evaluations.knn import knn_top1


def test_weighted_vote_by_hand():
    # Train bank: two of class 0 near the x axis, one of class 1 exactly on the query direction.
    train = np.array([[1.0, 0.1], [1.0, -0.1], [1.0, 0.35]])
    labels = np.array([0, 0, 1])
    query = np.array([[1.0, 0.35]])
    # cosine sims: class-1 point = 1.0; class-0 points = cos of the angle between them
    sims = (train / np.linalg.norm(train, axis=1, keepdims=True)) @ (query[0] / np.linalg.norm(query[0]))
    w = np.exp(sims / 0.07)
    expected = 0 if w[0] + w[1] > w[2] else 1
    assert knn_top1(train, labels, query, np.array([expected]), (3,), 0.07)[3] == 1.0
    # k = 1: only the identical point votes -> class 1
    assert knn_top1(train, labels, query, np.array([1]), (1,), 0.07)[1] == 1.0
    # a very high temperature makes the vote a plain majority -> class 0
    assert knn_top1(train, labels, query, np.array([0]), (3,), 100.0)[3] == 1.0


def test_features_are_l2_normalised():
    # Scaling a feature vector must not change anything (cosine on normalised features).
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(50, 8)), rng.integers(0, 3, 50)
    test, test_labels = rng.normal(size=(20, 8)), rng.integers(0, 3, 20)
    scaled = train * rng.uniform(0.1, 10, size=(50, 1))
    assert knn_top1(train, labels, test, test_labels, (10, 20), 0.07) == \
        knn_top1(scaled, labels, test, test_labels, (10, 20), 0.07)


def test_matches_bruteforce_reference():
    rng = np.random.default_rng(1)
    train, labels = rng.normal(size=(200, 16)), rng.integers(0, 5, 200)
    test, test_labels = rng.normal(size=(60, 16)), rng.integers(0, 5, 60)
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    sim = qn @ tn.T
    for k in (10, 20):
        idx = np.argsort(-sim, axis=1)[:, :k]
        scores = np.zeros((60, 5))
        for i in range(60):
            for j in idx[i]:
                scores[i, labels[j]] += np.exp(sim[i, j] / 0.07)
        expected = float((scores.argmax(1) == test_labels).mean())
        assert knn_top1(train, labels, test, test_labels, (k,), 0.07)[k] == expected
