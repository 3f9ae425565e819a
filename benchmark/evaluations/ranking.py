"""Ranking by cosine similarity and the average precision both search evaluations report.

The average precision is the trapezoid rule over the precision-recall curve of the Holidays evaluation package,
which both upstream protocols use: ``score_ap_from_ranks_1`` in ``facebookresearch/dino``, ``eval_copy_detection.py``,
and ``compute_ap`` in ``filipradenovic/revisitop``, ``python/evaluate.py``. The positive at 0-based rank r, the j-th
positive found (0-based), adds recall step 1 / n_positives times the mean of the precisions j / r (1 at r = 0) and
(j + 1) / (r + 1). The revisited protocol (``compute_map``) first moves every positive up by the number of junk images
ranked above it, and leaves queries without positives out of the mean.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import normalize


def rank_database(queries: np.ndarray, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rankings (Q, N) of database indices by decreasing cosine similarity, the similarities (Q, N)); ties keep
    database order (a stable sort)."""
    similarity = normalize(np.asarray(queries, np.float64)) @ normalize(np.asarray(database, np.float64)).T
    return np.argsort(-similarity, axis=1, kind="stable"), similarity


def average_precision(positive_ranks: np.ndarray, n_positives: int) -> float:
    """Trapezoid-rule AP of one query from the sorted 0-based ranks of the positives it retrieved."""
    ranks = np.asarray(positive_ranks, dtype=np.float64)
    found = np.arange(len(ranks), dtype=np.float64)
    before = np.divide(found, ranks, out=np.ones_like(ranks), where=ranks > 0)
    after = (found + 1) / (ranks + 1)
    return float(((before + after) / 2).sum() / n_positives)


def revisited_map(rankings: np.ndarray, positives: list[np.ndarray],
                  junk: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """(mAP, per-query AP with NaN for queries without positives) of rankings (Q, N), as revisitop's
    ``compute_map``: junk images are removed from the ranking before the positives' ranks are read."""
    aps = np.full(len(rankings), np.nan)
    for query, (ranking, ok, ignored) in enumerate(zip(rankings, positives, junk)):
        if len(ok) == 0:
            continue
        ok_ranks = np.flatnonzero(np.isin(ranking, ok))
        junk_ranks = np.flatnonzero(np.isin(ranking, ignored))
        aps[query] = average_precision(ok_ranks - np.searchsorted(junk_ranks, ok_ranks), len(ok))
    answered = ~np.isnan(aps)
    return (float(aps[answered].mean()) if answered.any() else float("nan")), aps


def copy_detection_scores(rankings: np.ndarray, positives: tuple[np.ndarray, ...],
                          keep: int) -> tuple[np.ndarray, np.ndarray]:
    """(AP per query over the first ``keep`` results, whether the first result is a positive) for rankings (Q, N),
    as DINO's ``eval_copy_detection.py`` (positives beyond rank ``keep`` add nothing)."""
    aps, first_right = np.zeros(len(rankings)), np.zeros(len(rankings), dtype=bool)
    for query, (ranking, ok) in enumerate(zip(rankings, positives)):
        aps[query] = average_precision(np.flatnonzero(np.isin(ranking[:keep], ok)), len(ok))
        first_right[query] = ranking[0] in ok
    return aps, first_right
