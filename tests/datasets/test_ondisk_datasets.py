"""The on-disk loaders in their real formats: ImageNet(-100) class folders, COCO, the STL-10 binaries, CIFAR
upsampled in the workers, folder at a configurable size, and the DataLoader worker count."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from ondisk import write_coco, write_imagenet, write_stl10
from PIL import Image

from patchbench.benchmark.train import batches, loader_workers
from patchbench.datasets import NO_LABEL, DatasetError, build_dataset
from patchbench.datasets.imagenet import imagenet1k_wnids, imagenet100_wnids

# HobbitLong/CMC imagenet100.txt (master, 7b227be): its sha-256 and first, second and last lines, read upstream.
CMC_IMAGENET100_SHA256 = "79f3f1552ccc478ce24bd934b4573625db584ddc1f4643ae23c994a94cb11397"
CMC_FIRST, CMC_SECOND, CMC_LAST = "n02869837", "n01749939", "n02090622"


def test_imagenet100_list_is_cmcs_100_unique_imagenet_classes():
    wnids = imagenet100_wnids()
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert (wnids[0], wnids[1], wnids[-1]) == (CMC_FIRST, CMC_SECOND, CMC_LAST)
    assert hashlib.sha256("".join(w + "\n" for w in wnids).encode()).hexdigest() == CMC_IMAGENET100_SHA256
    assert set(wnids) <= set(imagenet1k_wnids())


def test_imagenet1k_list_is_the_1000_sorted_ilsvrc_wnids():
    wnids = imagenet1k_wnids()
    assert len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[1] == "n01443537" and wnids[-1] == "n15075141"  # tench ... toilet tissue


def test_imagenet100_reads_its_classes_from_the_imagenet_root_in_sorted_order(tmp_path):
    extra = ["n01440764", "n15075141"]  # ImageNet classes outside the subset: present and ignored
    write_imagenet(tmp_path, [*imagenet100_wnids(), *extra], train_per_class=2)
    source = build_dataset("imagenet100", tmp_path)
    train, test = source.load("train"), source.load("test")
    assert source.num_classes == 100 and len(train) == 200 and len(test) == 100
    assert np.bincount(train.labels).tolist() == [2] * 100
    first = sorted(imagenet100_wnids())[0]  # label 0 is the smallest wnid, as an ImageFolder of the 100 folders
    assert train.labels[0] == 0 and train._loader.path(0).endswith(f"train/{first}/{first}_0.JPEG")
    assert train[0][0].shape == (3, 224, 224) and train[0][0].dtype == torch.uint8


def test_imagenet_decodes_in_the_loader_to_the_centre_square(tmp_path):
    """A 40 × 20 image, red | green | green | blue in quarters: resizing the shorter side to 16 makes it 32 wide,
    and the centre 16 columns are the green half: green inside, the bilinear filter's reach of red and blue only in
    the outermost columns (a plain resize to 16 × 16 would keep 4 red and 4 blue columns)."""
    write_imagenet(tmp_path, imagenet100_wnids(), train_per_class=1)
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:30] = (0, 255, 0)
    pixels[:, 30:] = (0, 0, 255)
    wnid = sorted(imagenet100_wnids())[99]
    Image.fromarray(pixels).save(tmp_path / "imagenet" / "train" / wnid / f"{wnid}_0.JPEG", format="PNG")
    source = build_dataset("imagenet100", tmp_path, image_size=16)
    image, label = source.load("train")[99]
    assert label == 99 and image.shape == (3, 16, 16) and source.image_size == 16
    inside = image[:, :, 1:15]
    assert (inside[1] == 255).all() and (inside[0] == 0).all() and (inside[2] == 0).all()
    assert (image[1] >= 200).all() and (image[0] <= 40).all() and (image[2] <= 40).all()


@pytest.mark.slow
def test_imagenet_has_the_1000_classes_in_wnid_order(tmp_path):
    wnids = imagenet1k_wnids()
    write_imagenet(tmp_path, wnids, train_per_class=1)
    train = build_dataset("imagenet", tmp_path).load("train")
    assert len(train) == 1000 and train.labels.tolist() == list(range(1000))
    assert train._loader.path(999).endswith(f"train/{wnids[999]}/{wnids[999]}_0.JPEG")


def test_coco_is_unlabelled_train2017_and_val2017(tmp_path):
    write_coco(tmp_path, train=5, val=2)
    source = build_dataset("coco", tmp_path)
    train, test = source.load("train"), source.load("test")
    assert source.provides == frozenset() and len(train) == 5 and len(test) == 2
    assert (train.labels == NO_LABEL).all() and train[4][0].shape == (3, 224, 224)


def official_stl10_read(raw: bytes) -> np.ndarray:
    """mttk/STL10 stl10_input.py::read_all_images, transcribed: (N, 96, 96, 3) height-width-channel images."""
    everything = np.frombuffer(raw, dtype=np.uint8)
    images = np.reshape(everything, (-1, 3, 96, 96))
    return np.transpose(images, (0, 3, 2, 1))


def test_stl10_reads_the_column_major_binaries_as_the_official_reader(tmp_path):
    rng = np.random.default_rng(0)
    images = {prefix: rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
              for prefix, n in (("train", 3), ("test", 2), ("unlabeled", 4))}
    write_stl10(tmp_path, images, {"train": np.array([0, 9, 4]), "test": np.array([1, 2])})
    source = build_dataset("stl10", tmp_path)
    train, test = source.load("train"), source.load("test")
    reference = official_stl10_read((tmp_path / "stl10_binary" / "train_X.bin").read_bytes())
    for i in range(3):
        assert np.array_equal(train[i][0].permute(1, 2, 0).numpy(), reference[i])
    assert train.labels.tolist() == [0, 9, 4] and test.labels.tolist() == [1, 2]  # files hold 1-10

    unlabelled = build_dataset("stl10-unlabeled", tmp_path).load("train")
    assert len(unlabelled) == 7 and (unlabelled.labels == NO_LABEL).all()
    assert torch.equal(unlabelled[4][0], train[0][0])  # the unlabelled images first, then train
    small = build_dataset("stl10", tmp_path, image_size=48).load("train")[0][0]
    assert small.shape == (3, 48, 48)

    loaded = list(batches(train, np.arange(3), 3, 0, num_workers=1))  # the memory map reaches a worker
    assert torch.equal(loaded[0], torch.stack([train[i][0] for i in range(3)]))


def test_cifar_upsampled_lazily_is_bilinear(tmp_path):
    from ondisk import write_cifar10

    write_cifar10(tmp_path, per_batch=2)
    source = build_dataset("cifar10", tmp_path, image_size=64)
    data = source.load("train")
    assert data.images is None and source.image_size == 64
    half = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    half[..., 16:] = 200
    data._loader.images[0] = half[0]
    image = data[0][0]
    # output column x samples source column (x + 0.5) / 2 - 0.5: 31 -> 15.25 (a quarter of 200), 32 -> 15.75
    assert image.shape == (3, 64, 64)
    assert image[0, 5, :31].eq(0).all() and image[0, 5, 31] == 50 and image[0, 5, 32] == 150
    assert image[0, 5, 33:].eq(200).all()


def test_folder_reads_at_a_configurable_size(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "folder" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (30, 10), (10, 20, 30)).save(tmp_path / "folder" / split / "cat" / "0.png")
    data = build_dataset("folder", tmp_path, image_size=24).load("train")
    assert data[0][0].shape == (3, 24, 24) and data[0][0][:, 0, 0].tolist() == [10, 20, 30]


def test_generated_sets_refuse_another_size():
    with pytest.raises(DatasetError, match="dataset 'shapes' is read at a fixed 32 px"):
        build_dataset("shapes", image_size=64)


def test_worker_count_comes_from_the_slurm_allocation(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert loader_workers(None) == 0  # off SLURM: decode in the training process
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")
    assert loader_workers(None) == 9  # one CPU stays with the training process
    assert loader_workers(3) == 3  # runtime.num_workers wins
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert loader_workers(None) == 0
