"""Tiny datasets written in their real on-disk formats (ImageNet class folders, COCO, the STL-10 binaries, CIFAR
pickles, VOC and ADE20K segmentation), shared by the loader, matrix and bad-input tests. Image files repeat one small
encoded image: listing and header checks are what the matrix loader reads; decoding tests write their own pixels."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from patchbench.datasets.imagenet import imagenet100_wnids


def jpeg_bytes(width: int = 12, height: int = 8, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_imagenet(root: Path, wnids, train_per_class: int = 3, val_per_class: int = 1) -> Path:
    """``root/imagenet/{train,val}/<wnid>/`` with ILSVRC-style file names."""
    data = jpeg_bytes()
    base = root / "imagenet"
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in wnids:
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{wnid[1:]}{i}.JPEG"
                (folder / name).write_bytes(data)
    return base


def write_imagenet100(root: Path, train_per_class: int = 3) -> Path:
    return write_imagenet(root, imagenet100_wnids(), train_per_class)


def write_coco(root: Path, train: int = 520, val: int = 2) -> Path:
    data = jpeg_bytes(16, 12)
    for split, n in (("train2017", train), ("val2017", val)):
        (root / "coco" / split).mkdir(parents=True)
        for i in range(n):
            (root / "coco" / split / f"{i:012d}.jpg").write_bytes(data)
    return root / "coco"


def write_stl10(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """``images[prefix]``: uint8 (N, 3, 96, 96) in (channel, row, column) order, written column-major per plane as
    the release stores them; ``labels[prefix]``: 0-9, written as 1-10."""
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    for prefix, array in images.items():
        (base / f"{prefix}_X.bin").write_bytes(np.ascontiguousarray(array.transpose(0, 1, 3, 2)).tobytes())
    for prefix, values in labels.items():
        (base / f"{prefix}_y.bin").write_bytes((np.asarray(values) + 1).astype(np.uint8).tobytes())
    (base / "class_names.txt").write_text("airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n")
    return base


def write_cifar10(root: Path, per_batch: int = 80, seed: int = 0) -> Path:
    """The CIFAR-10 python release: pickled dicts of b'data' (N, 3072) and b'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [int(x) for x in rng.integers(0, 10, per_batch)],
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}))
    return folder


def _mask_png(path: Path, mode: str) -> None:
    values = np.zeros((8, 12), np.uint8)
    values[:, 4:8] = 1
    mask = Image.fromarray(values, mode="L")
    if mode == "P":
        mask = mask.convert("P")
    mask.save(path)


def write_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True)
    for i in range(3):
        (base / "JPEGImages" / f"2007_00000{i}.jpg").write_bytes(jpeg_bytes())
        _mask_png(base / "SegmentationClass" / f"2007_00000{i}.png", "P")
    (base / "ImageSets/Segmentation/train.txt").write_text("2007_000000\n2007_000001\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("2007_000002\n")
    return base


def write_ade20k(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    for split, n in (("training", 2), ("validation", 1)):
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            (base / "images" / split / f"ADE_{split}_{i}.jpg").write_bytes(jpeg_bytes())
            _mask_png(base / "annotations" / split / f"ADE_{split}_{i}.png", "L")
    return base


def write_paper_root(root: Path) -> Path:
    """Every dataset the shipped paper matrices read (benchmark/matrices/), at the smallest size they accept."""
    write_imagenet100(root)
    write_coco(root)
    write_cifar10(root)
    write_voc(root)
    write_ade20k(root)
    return root
