"""The linear and dense probes against independent expectations: hand-computed scores, planted labels, shuffled
labels, and a selection that never reads the test split."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from patchbench.benchmark.evaluations.dense import (
    DenseLinearProbe,
    DenseSettings,
    confusion_matrix,
    segmentation_scores,
)
from patchbench.benchmark.evaluations.linear import LinearProbe, LinearSettings
from patchbench.benchmark.evaluations.probe import Standardizer, held_out_split
from patchbench.datasets import Segmentation


class Inputs:
    """The part of ``EvalInputs`` a probe reads, over arrays given by the test. Records which splits were read, in
    order; ``forbid_test`` makes reading the test split an error until ``allow_test()``."""

    seed = 0
    device = torch.device("cpu")
    readout = "planted"
    resolution = 32

    def __init__(self, features: dict, labels: dict | None = None, masks: dict | None = None,
                 classes: int = 0, segmentation: Segmentation | None = None):
        self._features, self._labels, self._masks = features, labels or {}, masks or {}
        self.source = SimpleNamespace(name="planted", num_classes=classes, segmentation=segmentation)
        self.reads: list[tuple[str, str]] = []

    def features(self, split):
        self.reads.append(("features", split))
        return self._features[split]

    def labels(self, split):
        self.reads.append(("labels", split))
        return self._labels[split]

    def masks(self, split):
        self.reads.append(("masks", split))
        return self._masks[split]


def planted_classification(n: int = 1200, dim: int = 24, classes: int = 12, seed: int = 0):
    """Features that carry their class linearly: a class direction plus noise (the nearest direction, an argmax of
    a linear function, is right for all but a vanishing fraction)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, n)
    x = directions[y] + 0.5 * rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def linear_inputs(x, y, split: int = 1000, **kw):
    return Inputs({"train": x[:split], "test": x[split:]}, {"train": y[:split], "test": y[split:]},
                  classes=int(y.max()) + 1, **kw)


QUICK_LINEAR = LinearSettings(epochs=30, lrs=(0.1, 1.0), weight_decays=(0.0,))


def test_linear_probe_learns_a_planted_linear_label():
    x, y = planted_classification()
    result = LinearProbe(QUICK_LINEAR).run(linear_inputs(x, y))
    assert result.metrics["top1"] >= 0.99, result.metrics
    assert result.metrics["top5"] == 1.0  # 12 classes: top-5 is reported
    assert result.probe_hparams["chosen"] in result.probe_hparams["grid"]


def test_linear_probe_stays_at_chance_with_shuffled_training_labels():
    x, y = planted_classification()
    shuffled = y.copy()
    shuffled[:1000] = np.random.default_rng(1).permutation(y[:1000])
    accuracy = LinearProbe(QUICK_LINEAR).run(linear_inputs(x, shuffled)).metrics["top1"]
    assert accuracy < 1 / 12 + 0.08, accuracy  # chance is 1/12; 200 test points


def test_linear_selection_never_reads_the_test_split():
    x, y = planted_classification(n=600, classes=4)
    inputs = linear_inputs(x, y, split=500)
    clean = LinearProbe(QUICK_LINEAR).run(inputs)
    scrambled_labels = y.copy()
    scrambled_labels[500:] = np.random.default_rng(5).permutation(y[500:])[::-1]
    scrambled = LinearProbe(QUICK_LINEAR).run(linear_inputs(x, scrambled_labels, split=500))
    assert scrambled.probe_hparams["chosen"] == clean.probe_hparams["chosen"]
    assert scrambled.probe_hparams["val_top1"] == clean.probe_hparams["val_top1"]
    assert scrambled.metrics != clean.metrics  # the test labels did change what is reported
    # the test split is read once, after everything read from the training split
    first_test = inputs.reads.index(("features", "test"))
    assert all(split == "train" for _, split in inputs.reads[:first_test] if _ == "features")
    assert inputs.reads.count(("features", "test")) == 1


def test_held_out_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), [40, 40, 80, 40])
    fit, val = held_out_split(len(labels), 0.1, labels)
    again = held_out_split(len(labels), 0.1, labels)
    assert np.array_equal(fit, again[0]) and np.array_equal(val, again[1])
    assert not set(fit) & set(val) and len(fit) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [4, 4, 8, 4]


def test_standardizer_uses_the_given_rows_only():
    features = np.arange(24, dtype=np.float32).reshape(3, 4, 2)  # (N, tokens, D)
    norm = Standardizer.fit(features, np.array([0, 2]))
    rows = features[[0, 2]].reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(norm.mean.numpy(), rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std.numpy(), rows.std(0), rtol=1e-6)
    off = Standardizer.fit(features, np.array([0]), enabled=False)
    assert torch.equal(off(torch.ones(2)), torch.ones(2))


def test_miou_and_pixel_accuracy_equal_a_hand_computed_confusion_matrix():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    predicted = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    confusion = confusion_matrix(predicted, truth, classes=4, ignore_index=255)
    # rows: truth, columns: prediction; the ignored pixel is not counted; class 3 never occurs
    expected = np.array([[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert confusion.numpy().tolist() == expected.tolist()
    scores = segmentation_scores(expected)
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 3 / (3 + 4 - 3) = 3/4; class 2: 1 / (2 + 1 - 1) = 1/2
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixel_acc"] == pytest.approx(5 / 7)
    no_ignore = confusion_matrix(predicted, torch.tensor([[0, 0, 1, 1], [2, 2, 3, 1]]), 4, None)
    assert no_ignore.sum() == 8 and no_ignore[3, 0] == 1


def planted_segmentation(n: int = 160, classes: int = 4, dim: int = 12, seed: int = 0):
    """8×8 token maps whose 4×4-token quadrants each carry one class, planted linearly in the tokens; masks of
    32 px (4 px per token)."""
    rng = np.random.default_rng(seed)
    quadrant_classes = rng.integers(0, classes, (n, 2, 2))
    token_classes = quadrant_classes.repeat(4, 1).repeat(4, 2)  # (n, 8, 8)
    directions = rng.normal(size=(classes, dim)) * 2
    tokens = (directions[token_classes] + 0.3 * rng.normal(size=(n, 8, 8, dim))).astype(np.float16)
    masks = token_classes.repeat(4, 1).repeat(4, 2).astype(np.uint8)
    return tokens, masks


def dense_inputs(tokens, masks, split: int, ignore=None):
    classes = int(masks[masks != (ignore if ignore is not None else -1)].max()) + 1
    return Inputs({"train": tokens[:split], "test": tokens[split:]},
                  masks={"train": masks[:split], "test": masks[split:]},
                  segmentation=Segmentation(tuple(map(str, range(classes))), ignore))


QUICK_DENSE = DenseSettings(epochs=3, lrs=(0.1, 1.0))


def test_dense_probe_learns_a_planted_linear_label():
    tokens, masks = planted_segmentation()
    result = DenseLinearProbe(QUICK_DENSE).run(dense_inputs(tokens, masks, 120))
    assert result.metrics["pixel_acc"] >= 0.99 and result.metrics["miou"] >= 0.98, result.metrics


def test_dense_probe_ignores_the_ignore_index_and_stays_at_chance_with_shuffled_masks():
    tokens, masks = planted_segmentation()
    ignored = masks.copy()
    ignored[:, :4, :] = 255  # a labelled border on every image
    assert DenseLinearProbe(QUICK_DENSE).run(dense_inputs(tokens, ignored, 120, 255)).metrics["pixel_acc"] >= 0.99
    shuffled = masks.copy()
    shuffled[:120] = masks[np.random.default_rng(2).permutation(120)]  # train masks paired with other images
    result = DenseLinearProbe(QUICK_DENSE).run(dense_inputs(tokens, shuffled, 120))
    assert result.metrics["pixel_acc"] < 0.25 + 0.1, result.metrics  # 4 classes: chance is 1/4


def test_dense_selection_never_reads_the_test_split():
    tokens, masks = planted_segmentation(n=80)
    clean = DenseLinearProbe(QUICK_DENSE).run(dense_inputs(tokens, masks, 60))
    scrambled = masks.copy()
    scrambled[60:] = (masks[60:] + 1) % 4
    other = DenseLinearProbe(QUICK_DENSE).run(dense_inputs(tokens, scrambled, 60))
    assert other.probe_hparams["chosen"] == clean.probe_hparams["chosen"]
    assert other.probe_hparams["val_miou"] == clean.probe_hparams["val_miou"]
    assert other.metrics["pixel_acc"] < 0.05 < clean.metrics["pixel_acc"]


@pytest.mark.slow
def test_augmented_linear_probe_trains_on_crops_through_the_encoder(tmp_path):
    """DINO's full protocol: every epoch, a random-resized crop and flip of each training image goes through the
    frozen encoder; selection and test read the un-augmented cached features."""
    from patchbench.benchmark.config import make_spec
    from patchbench.benchmark.evaluate import evaluate, resolve_evaluations
    from patchbench.benchmark.store import run_dir

    settings = {"augment": True, "epochs": 2, "lrs": [1.0], "weight_decays": [0.0]}
    records = []
    for augment in (True, False):
        evaluations = resolve_evaluations({"linear": {**settings, "augment": augment}}, "digits", {}, None, "t")
        spec = make_spec(matrix="aug", method="random-init", dataset="digits", seed=0, image_size=32,
                         backbone={"size": "pico", "patch_size": 4}, evaluations=evaluations)
        run = run_dir(tmp_path / str(augment), spec)
        calls = []
        import patchbench.benchmark.features as features

        original = features.EvalInputs.embed

        def counting_embed(self, images, original=original):
            calls.append(tuple(images.shape))
            return original(self, images)

        features.EvalInputs.embed = counting_embed
        try:
            records.append(evaluate(spec, run, "linear"))
        finally:
            features.EvalInputs.embed = original
        if augment:
            # crops at the native 32 px in batches of 256, 2 epochs each: the selection trains on the 1212 images
            # left after holding out 135 (4 × 256 + 188), the final probe on all 1347 (5 × 256 + 67); the cached
            # extraction reads batches of 128
            assert calls.count((256, 3, 32, 32)) == 2 * 4 + 2 * 5 and calls.count((188, 3, 32, 32)) == 2
            assert "random-resized-crop + flip each epoch" in records[-1]["eval_protocol"]
    assert records[0]["metrics"] != records[1]["metrics"]
