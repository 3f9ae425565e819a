"""Dataset sources: the registry, the embedded sets' invariants, and the on-disk formats read from tiny real-format
fixtures (CIFAR python pickles, an ImageFolder of PNG and JPEG files) written under ``tmp_path``."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from patchbench.datasets import (
    DATASETS,
    DatasetError,
    DatasetFilesMissing,
    DatasetSource,
    ImageSet,
    build_dataset,
    digits,
    register_dataset,
    shapes,
)
from patchbench.datasets.base import Split

SHAPES_KNN_MAX = 0.35  # raw-pixel k-NN on shapes must stay far from solving it (measured: 0.225)


def raw_pixel_knn(train: ImageSet, test: ImageSet, k: int = 20) -> float:
    """Top-1 accuracy of a k-NN on L2-normalised flattened pixels, cosine metric, plain majority vote."""
    features = [normalize(s.images.reshape(len(s), -1).double().numpy()) for s in (train, test)]
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(features[0], train.labels)
    return float((knn.predict(features[1]) == test.labels).mean())


def assert_image_set(data: ImageSet, size: int, num_classes: int) -> None:
    images = data.images if data.images is not None else torch.stack([data[i][0] for i in range(len(data))])
    assert images.dtype == torch.uint8 and images.shape == (len(data), 3, size, size)
    assert data.labels.dtype == np.int64 and data.labels.min() >= 0 and data.labels.max() < num_classes
    image, label = data[0]
    assert image.shape == (3, size, size) and isinstance(label, int)


def assert_statistics(source: DatasetSource, images: torch.Tensor) -> None:
    x = images.double().div(255)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), source.mean, atol=0.01)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), source.std, atol=0.01)


# --- registry -----------------------------------------------------------------------------------------------------

def test_registry_holds_the_builtin_sources():
    assert set(DATASETS) == {"digits", "shapes", "cifar10", "cifar100", "folder", "voc2012", "ade20k", "copydays",
                             "roxford5k", "rparis6k", "imagenet", "imagenet100", "coco", "stl10", "stl10-unlabeled"}


def test_duplicate_registration_raises():
    class Again(DatasetSource):
        name = "digits"

        def load(self, split: Split) -> ImageSet:
            raise NotImplementedError

    with pytest.raises(ValueError, match="already registered"):
        register_dataset(Again)
    assert DATASETS["digits"] is digits.DigitsSource


def test_unknown_name_suggests_the_closest():
    with pytest.raises(DatasetError, match="Did you mean 'cifar10'"):
        build_dataset("cifar1O")


def test_build_passes_the_root(tmp_path):
    assert build_dataset("cifar100", tmp_path).expected_path() == tmp_path / "cifar-100-python"


def test_default_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PATCHBENCH_DATA", str(tmp_path))
    assert build_dataset("folder").expected_path() == tmp_path / "folder"


# --- digits -------------------------------------------------------------------------------------------------------

def test_digits_split_is_stratified_disjoint_and_deterministic():
    train, test = digits.split_indices("train"), digits.split_indices("test")
    target = load_digits().target
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(target)
    fractions = np.bincount(target[test], minlength=10) / np.bincount(target, minlength=10)
    np.testing.assert_allclose(fractions, digits.TEST_FRACTION, atol=0.02)
    digits._digits.cache_clear()
    np.testing.assert_array_equal(digits.split_indices("train"), train)


def test_digits_images_labels_and_statistics():
    source = build_dataset("digits")
    train, test = source.load("train"), source.load("test")
    assert (len(train), len(test)) == (1347, 450)
    assert_image_set(train, 32, 10)
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    np.testing.assert_array_equal(train.labels, load_digits().target[digits.split_indices("train")])
    assert train.images.max() > 200  # scaled 0..16 -> 0..255
    assert_statistics(source, train.images)


# --- shapes -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes_splits() -> tuple[ImageSet, ImageSet]:
    shapes._split.cache_clear()
    start = time.process_time()  # CPU time: robust to other processes' load
    source = build_dataset("shapes")
    splits = source.load("train"), source.load("test")
    assert time.process_time() - start < 3.0, "generating both shapes splits must take < 3 s"
    return splits


def test_shapes_sizes_types_and_statistics(shapes_splits):
    train, test = shapes_splits
    assert (len(train), len(test)) == (4000, 1000)
    assert_image_set(test, 32, len(shapes.CLASSES))
    assert train.masks.dtype == torch.uint8 and train.masks.shape == (4000, 32, 32)
    assert_statistics(build_dataset("shapes"), train.images)
    assert np.bincount(train.labels).tolist() == [4000 // 6 + (c < 4000 % 6) for c in range(6)]  # balanced
    assert not torch.equal(train.images[:1000], test.images)


def test_shapes_is_deterministic_for_a_seed():
    first, second, other = shapes.generate_shapes(64, 7), shapes.generate_shapes(64, 7), shapes.generate_shapes(64, 8)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_shapes_label_is_the_most_visible_class(shapes_splits):
    for data in shapes_splits:
        masks, labels = data.masks.numpy(), data.labels
        counts = np.stack([(masks == c + 1).sum(axis=(1, 2)) for c in range(len(shapes.CLASSES))], axis=1)
        own = counts[np.arange(len(labels)), labels]
        others = np.where(np.arange(len(shapes.CLASSES)) == labels[:, None], -1, counts).max(axis=1)
        assert (own > others).all()
        assert (own >= 0.8 * np.pi * shapes.LABELLED_RADIUS[0] ** 2).all()  # the labelled object is large


def test_shapes_masks_match_the_images(shapes_splits):
    train, _ = shapes_splits
    masks, images = train.masks.numpy(), train.images.numpy().astype(np.float64)
    assert ((masks > 0) & (masks <= len(shapes.CLASSES))).any(axis=(1, 2)).all()
    assert (masks == 0).any(axis=(1, 2)).all()
    labelled = masks == (train.labels[:, None, None] + 1)
    # object pixels are flat-coloured (up to antialiasing at edges and pixel noise); background ones are not
    interior = labelled[:, 1:-1, 1:-1] & labelled[:, :-2, 1:-1] & labelled[:, 2:, 1:-1] \
        & labelled[:, 1:-1, :-2] & labelled[:, 1:-1, 2:]
    spread = [images[i][:, 1:-1, 1:-1][:, interior[i]].std(axis=1).max() for i in range(200)]
    assert np.median(spread) < 10


def test_shapes_redraws_scenes_whose_label_is_not_the_most_visible(monkeypatch):
    monkeypatch.setattr(shapes, "LABELLED_RADIUS", shapes.DISTRACTOR_RADIUS)  # equal sizes: many violations
    _, masks, labels = shapes.generate_shapes(300, 0)
    counts = shapes.visible_class_pixels(masks)
    own = counts[np.arange(len(labels)), labels]
    counts[np.arange(len(labels)), labels] = -1
    assert (own > counts.max(axis=1)).all()


def test_shapes_images_are_not_flat(shapes_splits):
    train, _ = shapes_splits
    background = train.masks == 0
    pixels = train.images.double()
    assert (pixels.reshape(len(train), -1).std(dim=1) > 20).all()
    background_std = [pixels[i][:, background[i]].std(dim=1).max().item() for i in range(200)]
    assert np.median(background_std) > 20  # textured backgrounds


def test_shapes_raw_pixel_knn_is_poor_but_above_chance(shapes_splits):
    accuracy = raw_pixel_knn(*shapes_splits)
    assert 1 / len(shapes.CLASSES) + 0.02 < accuracy < SHAPES_KNN_MAX


# --- CIFAR --------------------------------------------------------------------------------------------------------

def write_pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(content, f)


def fake_cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def make_cifar10(root: Path, per_batch: int = 3) -> tuple[np.ndarray, list[int]]:
    """The CIFAR-10 python layout with tiny batches; returns (all train rows, all train labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for i in range(1, 6):
        data, batch_labels = fake_cifar_rows(rng, per_batch), [int(x) for x in rng.integers(0, 10, per_batch)]
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"labels": batch_labels,
                                                  b"data": data, b"filenames": [b"x.png"] * per_batch})
        rows.append(data)
        labels += batch_labels
    write_pickle(folder / "test_batch", {b"labels": [9, 0], b"data": fake_cifar_rows(rng, 2)})
    write_pickle(folder / "batches.meta", {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch})
    return np.concatenate(rows), labels


def test_cifar10_reads_the_pickle_layout(tmp_path):
    rows, labels = make_cifar10(tmp_path)
    source = build_dataset("cifar10", tmp_path)
    assert source.files_present()
    train, test = source.load("train"), source.load("test")
    assert len(train) == 15 and test.labels.tolist() == [9, 0]
    assert_image_set(train, 32, 10)
    assert train.labels.tolist() == labels
    # row layout: 1024 red bytes, then green, then blue, each row-major
    first = rows[0]
    assert train.images[0, 0, 0, 1] == first[1] and train.images[0, 1, 0, 0] == first[1024]
    assert train.images[0, 2, 31, 31] == first[3071] and train.images[0, 0, 1, 0] == first[32]


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = fake_cifar_rows(rng, 4)
    write_pickle(folder / "train", {b"filenames": [b"x"] * 4, b"fine_labels": [99, 3, 50, 0],
                                    b"coarse_labels": [19, 1, 2, 3], b"data": data})
    write_pickle(folder / "test", {b"fine_labels": [7], b"coarse_labels": [1], b"data": fake_cifar_rows(rng, 1)})
    write_pickle(folder / "meta", {b"fine_label_names": [b"apple"] * 100, b"coarse_label_names": [b"fish"] * 20})
    train = build_dataset("cifar100", tmp_path).load("train")
    assert_image_set(train, 32, 100)
    assert train.labels.tolist() == [99, 3, 50, 0]
    np.testing.assert_array_equal(train.images.reshape(4, -1).numpy(), data)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("folder", "folder")])
def test_missing_files_name_the_layout_and_path(tmp_path, name, folder):
    source = build_dataset(name, tmp_path)
    assert not source.files_present()
    with pytest.raises(DatasetFilesMissing) as err:
        source.load("train")
    message = str(err.value)
    assert str(tmp_path / folder) in message and source.layout in message and source.layout


def test_incomplete_cifar10_is_missing(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DatasetFilesMissing, match="data_batch_1"):
        build_dataset("cifar10", tmp_path).load("test")


# --- folder -------------------------------------------------------------------------------------------------------

FOLDER_FILES = [  # (path under <root>/folder, PIL mode, colour, size): PNG and JPEG, greyscale, a nested folder
    ("train/cat/a.png", "RGB", (255, 0, 0), (40, 20)),
    ("train/cat/b.png", "L", 128, (16, 16)),
    ("train/dog/c.jpg", "RGB", (0, 0, 255), (30, 50)),
    ("train/dog/more/d.png", "RGB", (0, 0, 255), (8, 8)),
    ("test/cat/e.jpeg", "RGB", (255, 0, 0), (64, 64)),
]


def make_folder(root: Path) -> None:
    for name, mode, colour, size in FOLDER_FILES:
        path = root / "folder" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, colour).save(path)
    (root / "folder" / "train" / "cat" / "notes.txt").write_text("not an image")


def test_folder_reads_the_imagefolder_layout(tmp_path):
    make_folder(tmp_path)
    source = build_dataset("folder", tmp_path)
    assert source.files_present() and source.classes == ["cat", "dog"] and source.num_classes == 2
    train, test = source.load("train"), source.load("test")
    assert train.images is None and train.labels.tolist() == [0, 0, 1, 1] and test.labels.tolist() == [0]
    assert_image_set(train, 64, 2)
    red, grey, blue = train[0][0], train[1][0], train[2][0]
    assert red[0].min() > 240 and red[1:].max() < 15  # RGB order, colour kept
    assert (grey == 128).all()  # greyscale converted to RGB
    assert blue[2].min() > 230 and blue[0].max() < 25  # JPEG, roughly
    assert type(source).num_classes == 0  # data-dependent: only instances know it


def test_folder_image_size_keyword(tmp_path):
    make_folder(tmp_path)
    source = type(build_dataset("folder"))(tmp_path, image_size=24)
    assert source.image_size == 24
    assert_image_set(source.load("test"), 24, 2)


def test_folder_test_class_without_train_folder_is_an_error(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "folder" / "test" / "bird").mkdir()
    with pytest.raises(DatasetError, match="bird"):
        build_dataset("folder", tmp_path).load("test")
