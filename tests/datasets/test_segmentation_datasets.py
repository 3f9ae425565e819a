"""The segmentation sources (Pascal VOC 2012, ADE20K) read tiny fixtures written in their real on-disk formats
(JPEG images, palette or grey PNG masks, the split lists), and ``shapes`` exposes its masks to evaluations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from segmentation_files import write_voc

from patchbench.datasets import NO_LABEL, DatasetFilesMissing, build_dataset
from patchbench.datasets.segmentation import VOC_CLASSES


def test_voc_reads_palette_indices_keeps_255_and_resizes_to_448(tmp_path):
    write_voc(tmp_path)
    source = build_dataset("voc2012", tmp_path)
    assert source.provides == {"masks"} and source.segmentation.classes == VOC_CLASSES
    assert source.segmentation.num_classes == 21 and source.segmentation.ignore_index == 255
    train, test = source.load("train"), source.load("test")
    assert len(train) == 2 and len(test) == 1 and (train.labels == NO_LABEL).all()
    image, _ = train[1]
    assert image.shape == (3, 448, 448) and image.dtype.is_floating_point is False
    mask = train.mask(1).numpy()
    assert mask.shape == (448, 448) and set(np.unique(mask)) == {0, 2, 255}  # nearest: no blended ids
    # the band of class 2 covers columns 20..39 of 60, i.e. a third of the width, in the resized mask too
    assert abs((mask[200] == 2).mean() - 20 / 60) < 0.01
    assert set(np.unique(test.mask(0).numpy())) == {0, 3, 255}


def test_ade20k_reduces_the_zero_label_and_centre_crops_512(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for kind in ("images", "annotations"):
        for split in ("training", "validation"):
            (base / kind / split).mkdir(parents=True)
    values = np.zeros((60, 80), np.uint8)  # 0: "other"
    values[:, 30:50] = 1  # class 1 (wall) in the centre band
    values[:, :5] = 150  # class 150 on the left edge: cropped away by the centre crop
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(base / "images" / split / f"{name}.jpg")
        Image.fromarray(values, mode="L").save(base / "annotations" / split / f"{name}.png")
    source = build_dataset("ade20k", tmp_path)
    assert source.segmentation.num_classes == 150 and source.segmentation.ignore_index == 255
    mask = source.load("train").mask(0).numpy()
    assert mask.shape == (512, 512)
    assert set(np.unique(mask)) == {0, 255}  # 1 → 0, 0 → 255 (ignored), 150 cropped away
    assert source.load("test")[0][0].shape == (3, 512, 512)


@pytest.mark.parametrize("name, expected", [("voc2012", "VOCdevkit/VOC2012"), ("ade20k", "ADEChallengeData2016")])
def test_missing_root_is_the_same_clear_error(tmp_path, name, expected):
    source = build_dataset(name, tmp_path)
    with pytest.raises(DatasetFilesMissing, match=f"dataset '{name}': files not found at .*{expected}"):
        source.load("train")
    assert "Expected layout" in str(pytest.raises(DatasetFilesMissing, source.check).value)


def test_voc_names_missing_files_of_a_listed_id(tmp_path):
    write_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png").unlink()
    with pytest.raises(Exception, match="1 files of split train are missing, e.g. .*2007_000039.png"):
        build_dataset("voc2012", tmp_path).load("train")


def test_shapes_exposes_its_masks_with_the_label_as_the_dominant_object_class():
    source = build_dataset("shapes")
    assert source.provides == {"labels", "masks", "copies", "retrieval"} and source.segmentation.num_classes == 7
    assert source.segmentation.ignore_index is None
    data = source.load("test")
    assert data.has_masks and data.masks.shape == (1000, 32, 32)
    counts = np.stack([(data.masks.numpy() == c + 1).sum((1, 2)) for c in range(6)], axis=1)
    assert (counts.argmax(1) == data.labels).all()  # mask value c + 1 is class c of the label
    assert np.array_equal(data.mask(3).numpy(), data.masks[3].numpy())
