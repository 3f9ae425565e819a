"""Copy detection and retrieval against independent references: literal transcriptions of the upstream scoring code
(revisitop's ``compute_map``, DINO's Holidays AP and PCA whitening), hand-computed values, the embedded sets'
determinism, a sanity band for raw pixels, and the on-disk loaders on tiny fixtures written in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from search_fixtures import solid, write_copydays, write_revisited

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.evaluate import evaluate, resolve_evaluations
from patchbench.benchmark.evaluations.copydetect import Whitening, gem
from patchbench.benchmark.evaluations.ranking import (
    average_precision,
    copy_detection_scores,
    rank_database,
    revisited_map,
)
from patchbench.benchmark.store import run_dir
from patchbench.datasets import DatasetError, DatasetFilesMissing, build_dataset
from patchbench.datasets.edits import embedded_copy_set, embedded_retrieval_set

# --- literal transcriptions of the upstream scoring code (the independent references) -------------------------------

def revisitop_compute_ap(ranks, nres):
    """filipradenovic/revisitop, python/evaluate.py, compute_ap (transcribed)."""
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1. / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.
    return ap


def revisitop_compute_map(ranks, gnd):
    """filipradenovic/revisitop, python/evaluate.py, compute_map (transcribed; ranks is db_size × #queries; np.in1d,
    removed in NumPy 2, written np.isin; the precision-at-k part left out)."""
    map = 0.
    nq = len(gnd)
    aps = np.zeros(nq)
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]['ok'])
        if qgnd.shape[0] == 0:
            aps[i] = float('nan')
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]['junk'])
        except Exception:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while (ip < len(pos)):
                while (ij < len(junk) and pos[ip] > junk[ij]):
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = revisitop_compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
    map = map / (nq - nempty)
    return map, aps


def dino_score_ap_from_ranks_1(ranks, nres):
    """facebookresearch/dino, eval_copy_detection.py, score_ap_from_ranks_1 (transcribed)."""
    ap = 0.0
    recall_step = 1.0 / nres
    for ntp, rank in enumerate(ranks):
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = ntp / float(rank)
        precision_1 = (ntp + 1) / float(rank + 1)
        ap += (precision_1 + precision_0) * recall_step / 2.0
    return ap


def dino_whitening(whitening_features, database, queries):
    """facebookresearch/dino, eval_copy_detection.py (whitening block) with utils.PCA(dim=D, whit=0.5) (transcribed)."""
    mean_feature = whitening_features.mean(0)
    database = database - mean_feature
    queries = queries - mean_feature
    cov = whitening_features.T @ whitening_features / whitening_features.shape[0]
    d, v = np.linalg.eigh(cov)
    eps = d.max() * 1e-5
    d[d < eps] = eps
    idx = np.argsort(d)[::-1][:database.shape[-1]]
    d = d[idx]
    v = v[:, idx]
    dvt = np.dot(np.diag(1. / d ** 0.5), v.T)
    return np.dot(dvt, database.T).T, np.dot(dvt, queries.T).T


# --- scoring ----------------------------------------------------------------------------------------------------------

def test_average_precision_equals_a_hand_computed_value():
    # positives at ranks 0 and 2 of 2: (1 + 1) / 2 · 1/2 + (1/2 + 2/3) / 2 · 1/2 = 0.5 + 0.291666…
    assert average_precision(np.array([0, 2]), 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert average_precision(np.array([], dtype=int), 3) == 0.0
    assert average_precision(np.array([1]), 1) == pytest.approx((0.0 + 0.5) / 2)


def protocol_ground_truth(easy, hard, junk, hard_setting: bool):
    if hard_setting:
        return [{"ok": h, "junk": np.concatenate([j, e])} for e, h, j in zip(easy, hard, junk)]
    return [{"ok": np.concatenate([e, h]), "junk": j} for e, h, j in zip(easy, hard, junk)]


def test_revisited_map_equals_compute_map_with_junk_no_positives_and_ties():
    n = 12
    rng = np.random.default_rng(3)
    similarity = rng.integers(0, 4, size=(5, n)).astype(float)  # few levels: many ties
    rankings = np.argsort(-similarity, axis=1, kind="stable")
    easy = [np.array([0, 5]), np.array([], int), np.array([2]), np.array([], int), np.array([7, 8, 9])]
    hard = [np.array([3]), np.array([1, 4]), np.array([], int), np.array([], int), np.array([10])]
    junk = [np.array([1, 6]), np.array([0]), np.array([3, 11]), np.array([5]), np.array([])]
    for hard_setting in (False, True):
        gnd = protocol_ground_truth(easy, hard, junk, hard_setting)
        expected_map, expected_aps = revisitop_compute_map(rankings.T.copy(), gnd)
        ours, aps = revisited_map(rankings, [g["ok"] for g in gnd], [g["junk"] for g in gnd])
        assert ours == pytest.approx(expected_map)
        np.testing.assert_allclose(aps, expected_aps, equal_nan=True)
        assert np.isnan(aps[3])  # no positives in either setting: left out of the mean
    assert np.isnan(revisited_map(rankings[:1], [np.array([], int)], [np.array([], int)])[0])


def test_junk_ranked_above_a_positive_does_not_count():
    ranking = np.array([[4, 0, 1, 2, 3]])  # junk 4 first, then the positive 0
    assert revisited_map(ranking, [np.array([0])], [np.array([4])])[0] == 1.0
    assert revisited_map(ranking, [np.array([0])], [np.array([], int)])[0] == pytest.approx(0.25)  # (0 + 1/2) / 2


def test_ranking_breaks_ties_by_database_order():
    database = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    rankings, similarity = rank_database(np.array([[1.0, 0.0]]), database)
    assert rankings.tolist() == [[0, 2, 3, 1]]  # 0 and 2 tie at cosine 1
    assert similarity[0, 3] == pytest.approx(np.sqrt(0.5))


def test_copy_detection_ap_equals_dinos_over_the_kept_results():
    rng = np.random.default_rng(0)
    rankings = np.stack([rng.permutation(60) for _ in range(25)])
    positives = tuple(rng.choice(60, rng.integers(1, 4), replace=False) for _ in range(25))
    aps, first_right = copy_detection_scores(rankings, positives, keep=20)
    for q, (ranking, ok) in enumerate(zip(rankings, positives)):
        ranks = [rank for rank, b in enumerate(ranking[:20]) if b in ok]  # DINO's eval_result loop over top-20 ids
        assert aps[q] == pytest.approx(dino_score_ap_from_ranks_1(ranks, len(ok)))
        assert first_right[q] == (ranking[0] in ok)


# --- descriptor and whitening -----------------------------------------------------------------------------------------

def test_gem_with_p_one_is_average_pooling_and_large_p_approaches_max():
    tokens = torch.rand(3, 4, 5, 8) + 0.01
    torch.testing.assert_close(gem(tokens, 1.0), tokens.mean(dim=(1, 2)))
    torch.testing.assert_close(gem(tokens.double(), 500.0), tokens.double().amax(dim=(1, 2)), rtol=0.01, atol=0)
    negative = -torch.rand(1, 2, 2, 3)
    torch.testing.assert_close(gem(negative, 4.0), torch.full((1, 3), 1e-6))  # clamped at 1e-6 as upstream


def test_centred_whitening_gives_the_distractors_identity_covariance():
    rng = np.random.default_rng(1)
    distractors = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 3.0
    whitened = Whitening.learn(distractors, centred=True)(distractors)
    np.testing.assert_allclose(np.cov(whitened.T, bias=True), np.eye(6), atol=1e-8)
    np.testing.assert_allclose(whitened.mean(0), 0.0, atol=1e-10)


@pytest.mark.parametrize("n, dim", [(300, 10), (12, 40)], ids=["more-images-than-dims", "more-dims-than-images"])
def test_dino_whitening_equals_upstreams_pca_in_every_inner_product(n, dim):
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(dim, dim))
    whitening_set, database, queries = (rng.normal(size=(m, dim)) @ mixing + 1.0 for m in (n, 30, 7))
    expected_db, expected_q = dino_whitening(whitening_set, database, queries)
    ours = Whitening.learn(whitening_set, centred=False)
    db, q = ours(database), ours(queries)
    scale = np.abs(expected_q @ expected_db.T).max()
    np.testing.assert_allclose(q @ db.T, expected_q @ expected_db.T, atol=1e-6 * scale)
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), np.linalg.norm(expected_db, axis=1), rtol=1e-6)


# --- embedded sets ----------------------------------------------------------------------------------------------------

def test_embedded_copy_set_is_identical_for_a_seed_and_pairs_queries_with_their_originals():
    images = build_dataset("digits").load("test").images
    first, again, other = embedded_copy_set(images, 0), embedded_copy_set(images, 0), embedded_copy_set(images, 1)
    assert torch.equal(first.queries.images, again.queries.images)
    assert torch.equal(first.originals.images, again.originals.images)
    assert not torch.equal(first.queries.images, other.queries.images)
    assert len(first.originals) == 100 and len(first.distractors) == len(images) - 100
    assert first.subsets == ("strong",) * 100 + ("crops",) * 100 + ("jpegqual",) * 100
    # a JPEG copy is closest (in pixels) to its own original: the pairing of queries and positives is right
    jpeg = first.queries.images[200:].float().flatten(1)
    nearest = torch.cdist(jpeg, first.originals.images.float().flatten(1)).argmin(1)
    assert nearest.tolist() == [int(p[0]) for p in first.positives[200:]] == list(range(100))
    # originals and distractors partition the test split
    together = torch.cat([first.originals.images, first.distractors.images]).flatten(1)
    assert len(torch.unique(together, dim=0)) == len(torch.unique(images.flatten(1), dim=0))


def test_embedded_retrieval_set_is_identical_for_a_seed_and_keeps_positives_apart():
    images = build_dataset("digits").load("test").images
    first, again = embedded_retrieval_set(images, 0), embedded_retrieval_set(images, 0)
    assert torch.equal(first.database.images, again.database.images)
    assert torch.equal(first.queries.images, again.queries.images)
    assert len(first.queries) == 50 and len(first.database) == 50 * 5 + len(images) - 50
    for e, h, j in zip(first.easy, first.hard, first.junk):
        assert len(e) == 2 and len(h) == 2 and len(j) == 1
        assert not set(e) & set(h) and not (set(e) | set(h)) & set(j)


def evaluate_reference(tmp_path, method: str, dataset: str, name: str, settings=None, data_root=None,
                       patch_size: int = 4):
    evaluations = resolve_evaluations({name: settings or {}}, dataset, {}, data_root, "test")
    spec = make_spec(matrix="test", method=method, dataset=dataset, seed=0, image_size=32,
                     backbone={"size": "pico", "patch_size": patch_size}, evaluations=evaluations,
                     runtime={"data_root": data_root} if data_root else None)
    return evaluate(spec, run_dir(tmp_path, spec), name)


def chance_map(database: int, keep: int) -> float:
    """Expected AP of a single positive at a uniformly random rank, over the first ``keep`` results."""
    return (1.0 + sum(1.0 / (2 * (r + 1)) for r in range(1, keep))) / database


@pytest.mark.slow
def test_raw_pixels_copy_detection_is_far_from_perfect_but_above_chance(tmp_path):
    record = evaluate_reference(tmp_path, "raw-pixels", "shapes", "copydetect")
    metrics = record["metrics"]
    chance = chance_map(1000, 20)  # 100 originals + 900 distractors, one positive per query
    assert 10 * chance < metrics["map_strong"] < 0.5, metrics
    assert 10 * chance < metrics["map_crops"] < 0.5, metrics
    assert 0.01 < metrics["recall1_strong"] < 0.5, metrics
    assert record["probe_hparams"]["readout"] == "pixels+pixel_patches"
    assert record["probe_hparams"]["descriptor_dim"] == 3 * 32 * 32 + 3 * 4 * 4


# --- on-disk loaders --------------------------------------------------------------------------------------------------

def test_copydays_loader_reads_the_blocks_and_pairs_queries_as_upstream(tmp_path):
    write_copydays(tmp_path)
    copies = build_dataset("copydays", tmp_path).copies()
    assert copies.subsets == ("strong", "strong", "jpegqual/30", "jpegqual/30", "jpegqual/30")
    assert [p.tolist() for p in copies.positives] == [[0], [2], [0], [1], [2]]
    assert len(copies.distractors) == 4 and copies.originals[0][0].shape == (3, 320, 320)


def test_copydays_evaluation_finds_unaltered_copies(tmp_path):
    write_copydays(tmp_path / "data")
    record = evaluate_reference(tmp_path, "random-init", "digits", "copydetect", {"dataset": "copydays"},
                                str(tmp_path / "data"), patch_size=16)  # 20 x 20 patches at 320 px: quick on a CPU
    assert record["metrics"]["copydays/map_jpegqual_30"] == 1.0  # the same pixels as their originals
    assert set(record["metrics"]) == {f"copydays/{m}_{b}" for m in ("map", "recall1")
                                      for b in ("strong", "jpegqual_30")}
    assert record["probe_hparams"]["resolution"] == 320


def test_copydays_missing_root_and_orphan_queries_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetFilesMissing, match=r"no original/, strong/, distractors/ folder in") as missing:
        build_dataset("copydays", tmp_path).check()
    assert "\n" not in str(missing.value)
    base = write_copydays(tmp_path)
    solid(base / "strong" / "999901.jpg", (1, 2, 3))
    with pytest.raises(DatasetError, match=r"1 query image\(s\) match no original, e.g. .*999901.jpg") as orphan:
        build_dataset("copydays", tmp_path).copies()
    assert "\n" not in str(orphan.value)


def test_revisited_loader_crops_queries_to_their_box_and_keeps_aspect_ratio(tmp_path):
    write_revisited(tmp_path)
    data = build_dataset("roxford5k", tmp_path).retrieval()
    assert data.queries[0][0].shape == (3, 168, 224)  # the 300 × 225 box, longer side shrunk to 224
    assert data.queries[1][0].shape == (3, 100, 100)  # thumbnail never enlarges
    assert data.database[0][0].shape == (3, 149, 224) and data.database[1][0].shape == (3, 224, 103)
    assert [h.tolist() for h in data.hard] == [[1], [3]] and data.junk[1].tolist() == []
    assert data.multiscale is False and build_dataset("rparis6k").multiscale is True


@pytest.mark.parametrize("multiscale", [False, True])
def test_retrieval_evaluation_runs_on_images_of_different_sizes(tmp_path, multiscale):
    write_revisited(tmp_path / "data")
    record = evaluate_reference(tmp_path, "random-init", "digits", "retrieval",
                                {"dataset": "roxford5k", "multiscale": multiscale}, str(tmp_path / "data"))
    assert set(record["metrics"]) == {"roxford5k/map_medium", "roxford5k/map_hard"}
    assert record["probe_hparams"]["queries_scored"] == {"medium": 2, "hard": 2}
    assert all(0.0 < v <= 1.0 for v in record["metrics"].values())


def test_revisited_missing_or_damaged_ground_truth_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetFilesMissing, match=r"gnd_roxford5k.pkl and .*jpg not found") as missing:
        build_dataset("roxford5k", tmp_path).check()
    assert "\n" not in str(missing.value)
    base = write_revisited(tmp_path)
    (base / "gnd_roxford5k.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"unreadable ground truth .*UnpicklingError"):
        build_dataset("roxford5k", tmp_path).retrieval()
    write_revisited(tmp_path)
    (base / "jpg" / "c.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in gnd_roxford5k.pkl are missing, e.g. .*c.jpg"):
        build_dataset("roxford5k", tmp_path).retrieval()
