"""The bad-input corpus (docs/bad-input.md): every malformed matrix, setting, dataset file and argument is refused
before anything runs, with exit code 2, one line naming the problem, no traceback, and nothing written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from search_fixtures import solid, write_copydays, write_revisited

from patchbench.benchmark import gpu_check
from patchbench.benchmark.cli import main

BASE = """\
name: corpus
fixed:
  dataset: digits
  backbone: {size: pico, patch_size: 4}
  budget: {epochs: 1, batch_size: 64}
  evaluations: {knn: {k: [5], temperature: 0.07}}
vary:
  methods: [dino]
  references: [raw-pixels]
  seeds: [0]
methods:
  dino:
    view_kwargs: {n_local: 2}
    objective_kwargs: {out_dim: 64, hidden_dim: 64, bottleneck_dim: 32}
    optim: {warmup_epochs: 0, lr: 5.0e-4}
slurm: {cpus_per_task: 1, mem: 1G, time: 10}
runtime: {device: cpu, checkpoint_interval_min: 5}
"""

# (case id, (old, new) edit of BASE, expected part of the message). Kept in step with docs/bad-input.md.
MATRIX_CASES = [
    ("epochs-negative", ("epochs: 1,", "epochs: -1,"), "fixed.budget: epochs: -1 is not allowed; give an integer >= 1"),
    ("epochs-fraction", ("epochs: 1,", "epochs: 1.5,"), "epochs: 1.5 is not allowed; give an integer >= 1"),
    ("batch-zero", ("batch_size: 64", "batch_size: 0"), "batch_size: 0 is not allowed; give an integer >= 1"),
    ("batch-text", ("batch_size: 64", 'batch_size: "big"'), 'batch_size: "big" is not allowed'),
    ("batch-bool", ("batch_size: 64", "batch_size: true"), "batch_size: true is not allowed; give an integer"),
    ("batch-over-train", ("batch_size: 64", "batch_size: 2000"),
     "budget.batch_size 2000 exceeds the 1347 training images; use batch_size <= 1347"),
    ("lr-text", ("lr: 5.0e-4", "lr: fast"), 'methods.dino.optim: lr: "fast" is not allowed; give a number > 0'),
    ("lr-yaml-exponent", ("lr: 5.0e-4", "lr: 5e-4"), "write it with a dot, 1.0e-3"),
    ("lr-zero", ("lr: 5.0e-4", "lr: 0"), "lr: 0 is not allowed; give a number > 0"),
    ("momentum-over-one", ("warmup_epochs: 0,", "warmup_epochs: 0, momentum_teacher: 1.5,"),
     "momentum_teacher: 1.5 is not allowed; give a number >= 0 and <= 1"),
    ("warmup-negative", ("warmup_epochs: 0,", "warmup_epochs: -2,"), "warmup_epochs: -2 is not allowed"),
    ("optim-not-mapping", ("optim: {warmup_epochs: 0, lr: 5.0e-4}", "optim: fast"),
     "methods.dino.optim must be a mapping of settings"),
    ("out-dim-text", ("out_dim: 64", 'out_dim: "x"'),
     'objective \'dino\': out_dim: "x" is not allowed; give an integer'),
    ("teacher-temp-text", ("out_dim: 64", "out_dim: 64, teacher_temp: warm"), 'teacher_temp: "warm" is not allowed'),
    ("n-local-text", ("n_local: 2", "n_local: two"), "view strategy 'multicrop': n_local: \"two\" is not allowed"),
    ("view-kwargs-not-mapping", ("view_kwargs: {n_local: 2}", "view_kwargs: 5"),
     "view_kwargs of method 'dino' must be a mapping"),
    ("view-name-list", ("view_kwargs: {n_local: 2}", "view: [multicrop]"), "unknown view strategy '['multicrop']'"),
    ("interval-text", ("checkpoint_interval_min: 5", "checkpoint_interval_min: often"),
     'runtime: checkpoint_interval_min: "often" is not allowed; give a number >= 0'),
    ("log-every-zero", ("checkpoint_interval_min: 5", "log_every: 0"), "log_every: 0 is not allowed"),
    ("workers-negative", ("checkpoint_interval_min: 5", "num_workers: -1"), "num_workers: -1 is not allowed"),
    ("runtime-unknown", ("checkpoint_interval_min: 5", "checkpoint_every: 5"),
     "runtime: unknown key 'checkpoint_every'"),
    ("size-huge", ("size: pico", "size: huge"), 'size: "huge" is not allowed; give one of pico, nano, tiny'),
    ("backbone-string", ("backbone: {size: pico, patch_size: 4}", "backbone: pico"),
     "fixed.backbone must be a mapping of settings"),
    ("patch-zero", ("patch_size: 4", "patch_size: 0"), "patch_size: 0 is not allowed; give an integer >= 1"),
    ("patch-not-divisor", ("patch_size: 4", "patch_size: 5"), "backbone.patch_size 5 does not tile the 32 px images"),
    ("patch-over-image", ("patch_size: 4", "patch_size: 64"), "backbone.patch_size 64 does not tile the 32 px"),
    ("drop-path-over-one", ("patch_size: 4}", "patch_size: 4, drop_path_rate: 2}"), "drop_path_rate: 2 is not allowed"),
    ("knn-k-zero", ("k: [5]", "k: [0]"), "fixed.evaluations.knn: k: [0] is not allowed; give a list of integers >= 1"),
    ("knn-k-empty", ("k: [5]", "k: []"), "k: [] is not allowed"),
    ("knn-k-over-train", ("k: [5]", "k: [5000]"), "k = 5000 exceeds the 1347 training images of 'digits'"),
    ("knn-temperature-negative", ("temperature: 0.07", "temperature: -1"),
     "temperature: -1 is not allowed; give a number > 0"),
    ("knn-not-mapping", ("{knn: {k: [5], temperature: 0.07}}", "{knn: 5}"),
     "fixed.evaluations.knn must be a mapping of settings"),
    ("eval-unknown", ("{knn: {k: [5], temperature: 0.07}}", "{knnn: {}}"),
     "unknown evaluation 'knnn'. Did you mean 'knn'?"),
    ("eval-setting-unknown", ("{knn: {k: [5], temperature: 0.07}}", "{linear: {lr: 0.1}}"),
     "fixed.evaluations.linear: unknown key 'lr'. Did you mean 'lrs'?"),
    ("linear-lrs-text", ("{knn: {k: [5], temperature: 0.07}}", "{linear: {lrs: fast}}"),
     "fixed.evaluations.linear: lrs: \"fast\" is not allowed"),
    ("linear-epochs-zero", ("{knn: {k: [5], temperature: 0.07}}", "{linear: {epochs: 0}}"),
     "fixed.evaluations.linear: epochs: 0 is not allowed; give an integer >= 1"),
    ("dense-without-masks", ("{knn: {k: [5], temperature: 0.07}}", "{dense: {}}"),
     "evaluation 'dense' needs masks, which dataset 'digits' does not provide"),
    ("eval-dataset-unknown", ("{knn: {k: [5], temperature: 0.07}}", "{linear: {dataset: imagenett}}"),
     "unknown dataset 'imagenett'"),
    ("eval-pretrained-on-text", ("{knn: {k: [5], temperature: 0.07}}", "{knn: {pretrained_on: digits}}"),
     "fixed.evaluations.knn.pretrained_on must be a list of dataset names"),
    ("copydetect-gem-zero", ("{knn: {k: [5], temperature: 0.07}}", "{copydetect: {gem_p: 0}}"),
     "fixed.evaluations.copydetect: gem_p: 0 is not allowed; give a number > 0"),
    ("copydetect-whitening-unknown", ("{knn: {k: [5], temperature: 0.07}}", "{copydetect: {whitening: pca}}"),
     "fixed.evaluations.copydetect: whitening: \"pca\" is not allowed; give one of 'dino', 'centred', 'none'"),
    ("copydetect-keep-zero", ("{knn: {k: [5], temperature: 0.07}}", "{copydetect: {keep: 0}}"),
     "fixed.evaluations.copydetect: keep: 0 is not allowed; give an integer >= 1"),
    ("retrieval-multiscale-text", ("{knn: {k: [5], temperature: 0.07}}", "{retrieval: {multiscale: sometimes}}"),
     "fixed.evaluations.retrieval: multiscale: \"sometimes\" is not allowed; give true or false or null"),
    ("copydays-missing", ("{knn: {k: [5], temperature: 0.07}}", "{copydetect: {dataset: copydays}}"),
     "dataset 'copydays': no original/, strong/, distractors/ folder in data/copydays"),
    ("roxford-missing", ("{knn: {k: [5], temperature: 0.07}}", "{retrieval: {dataset: roxford5k}}"),
     "dataset 'roxford5k': data/roxford5k/gnd_roxford5k.pkl and data/roxford5k/jpg not found"),
    ("seeds-bool", ("seeds: [0]", "seeds: [true]"), "vary.seeds must be distinct integers"),
    ("seeds-repeated", ("seeds: [0]", "seeds: [1, 1]"), "vary.seeds must be distinct integers"),
    ("name-dotdot", ("name: corpus", "name: .."), "matrix name '..' is not a plain name"),
    ("name-escape", ("name: corpus", "name: ../../x"), "matrix name '../../x' is not a plain name"),
    ("name-dot", ("name: corpus", "name: ."), "matrix name '.' is not a plain name"),
    ("name-slash", ("name: corpus", "name: a/b"), "matrix name 'a/b' is not a plain name"),
    ("name-missing", ("name: corpus", "nam: corpus"), "unknown key 'nam'. Did you mean 'name'?"),
    ("dataset-list", ("dataset: digits", "dataset: [digits]"), "fixed.dataset must name a dataset"),
    ("slurm-nodes-zero", ("cpus_per_task: 1", "cpus_per_task: 1, nodes: 0"), "nodes: 0 is not allowed"),
    ("slurm-gpus-text", ("cpus_per_task: 1", "cpus_per_task: 1, gpus_per_node: all"),
     'gpus_per_node: "all" is not allowed'),
    ("slurm-time-text", ("time: 10", "time: soon"), "slurm.time 'soon': give minutes"),
    ("ablation-budget-text", ("seeds: [0]", "seeds: [0]\n  ablations: {short: {budget: {epochs: few}}}"),
     'vary.ablations.short.budget: epochs: "few" is not allowed'),
    ("image-size-text", ("dataset: digits", "dataset: digits\n  image_size: big"),
     "fixed.image_size: 'big' is not allowed; give the side in pixels"),
    ("image-size-generated-set", ("dataset: digits", "dataset: digits\n  image_size: 64"),
     "fixed.image_size: dataset 'digits' is read at a fixed 32 px; remove image_size (64)"),
    ("yaml-broken", ("methods: [dino]", "methods: [dino"), "not valid YAML"),
    ("top-level-list", ("name: corpus", "- name: corpus"), "not valid YAML"),
]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchbench.benchmark.cli", *args], capture_output=True, text=True,
                          cwd=cwd)


def assert_refused(result: subprocess.CompletedProcess, message: str, workdir: Path) -> None:
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("patchbench: error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert message in err, err
    assert not (workdir / "out").exists() and not (workdir / "results").exists()
    assert sorted(p.name for p in workdir.parent.iterdir()) == [workdir.name]  # nothing written beside it either


def corpus_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"  # alone in tmp_path, so a write outside it shows
    work.mkdir()
    return work


@pytest.mark.slow
def test_base_matrix_is_accepted(tmp_path):
    work = corpus_dir(tmp_path)
    (work / "m.yaml").write_text(BASE)
    result = run_cli("run", "m.yaml", "--dry-run", "--out", "out", cwd=work)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case, edit, message", MATRIX_CASES, ids=[c[0] for c in MATRIX_CASES])
def test_bad_matrix_refused(tmp_path, monkeypatch, capsys, case, edit, message):
    work = corpus_dir(tmp_path)
    monkeypatch.chdir(work)
    old, new = edit
    assert old in BASE, old
    (work / "m.yaml").write_text(BASE.replace(old, new, 1))
    code = main(["run", "m.yaml", "--executor", "debug"])
    captured = capsys.readouterr()
    assert_refused(subprocess.CompletedProcess([], code, captured.out, captured.err), message, work)


COMMANDS = ("run", "run --dry-run", "status", "resubmit --failed")
# every command shares the loader: each command on the path-escape case, and `run` on a value, a key and a type case
SHELL_CASES = [(command, "name-escape") for command in COMMANDS] + [
    ("run", case) for case in ("epochs-negative", "knn-k-zero", "backbone-string")]
CASES_BY_ID = {c[0]: c for c in MATRIX_CASES}


@pytest.mark.slow
@pytest.mark.parametrize("command, case", SHELL_CASES,
                         ids=[f"{c}-{k}".replace(" ", "") for c, k in SHELL_CASES])
def test_bad_matrix_refused_by_every_command_from_the_shell(tmp_path, command, case):
    _, edit, message = CASES_BY_ID[case]
    work = corpus_dir(tmp_path)
    old, new = edit
    assert old in BASE, old
    (work / "m.yaml").write_text(BASE.replace(old, new, 1))
    out = [] if case.startswith("name-") else ["--out", "out"]  # the name cases check results/<name> itself
    result = run_cli(*command.split(), "m.yaml", *out, "--executor", "debug", cwd=work) if command.startswith(
        ("run", "resubmit")) and "dry" not in command else run_cli(*command.split(), "m.yaml", *out, cwd=work)
    assert_refused(result, message, work)


def write_cifar10(root: Path) -> Path:
    """A CIFAR-10 python release in its real layout (pickled dicts), 4 images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [int(x) for x in rng.integers(0, 10, 4)],
                 b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}))
    return folder


def write_folder(root: Path) -> Path:
    folder = root / "folder"
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (folder / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / split / label / f"{i}.png")
    return folder


def damage(kind: str, data: Path) -> str:
    """Damage a dataset written under ``data``; return the expected message part."""
    if kind == "cifar-truncated":
        batch = write_cifar10(data) / "data_batch_3"
        batch.write_bytes(batch.read_bytes()[:100])
        return "unreadable CIFAR batch file(s): data/cifar-10-batches-py/data_batch_3 (UnpicklingError"
    if kind == "cifar-two-damaged":
        folder = write_cifar10(data)
        (folder / "data_batch_1").write_bytes(b"not a pickle")
        (folder / "data_batch_5").write_bytes(pickle.dumps({b"labels": [1]}))
        return "data/cifar-10-batches-py/data_batch_1 (UnpicklingError"  # and data_batch_5 in the same line
    if kind == "cifar-missing-file":
        (write_cifar10(data) / "data_batch_2").unlink()
        return "dataset 'cifar10': files not found at"
    if kind == "folder-empty-class":
        folder = write_folder(data)
        (folder / "train" / "bird").mkdir()
        (folder / "train" / "fish").mkdir()
        return "2 class folder(s) hold no image files: data/folder/train/bird, data/folder/train/fish"
    if kind == "folder-unreadable-images":
        folder = write_folder(data)
        for i in range(5):
            (folder / "train" / "cat" / f"broken{i}.png").write_bytes(b"not a png")
        return "5 unreadable image file(s): data/folder/train/cat/broken0.png, data/folder/train/cat/broken1.png, " \
               "data/folder/train/cat/broken2.png and 2 more"
    if kind == "folder-unknown-test-class":
        folder = write_folder(data)
        (folder / "test" / "cow").mkdir()
        Image.new("RGB", (16, 16)).save(folder / "test" / "cow" / "0.png")
        return "test classes ['cow'] have no train folder"
    raise AssertionError(kind)


DATA_CASES = ["cifar-truncated", "cifar-two-damaged", "cifar-missing-file", "folder-empty-class",
              "folder-unreadable-images", "folder-unknown-test-class"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", DATA_CASES)
def test_bad_dataset_files_refused_at_load(tmp_path, kind):
    work = corpus_dir(tmp_path)
    data = tmp_path / "work" / "data"
    message = damage(kind, data)
    dataset = "cifar10" if kind.startswith("cifar") else "folder"
    matrix = BASE.replace("dataset: digits", f"dataset: {dataset}")
    matrix = matrix.replace("batch_size: 64", "batch_size: 2").replace("k: [5]", "k: [1]")
    (work / "m.yaml").write_text(matrix)
    result = run_cli("run", "m.yaml", "--out", "out", "--data-root", "data", "--executor", "debug", cwd=work)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("patchbench: error: ") and "\n" not in err or kind == "cifar-missing-file", err
    assert "Traceback" not in result.stderr and message in err, err
    if kind == "cifar-two-damaged":
        assert "data_batch_5 (KeyError" in err
    assert not (work / "out").exists()


def damage_search_set(kind: str, data: Path) -> tuple[str, str]:
    """Damage a copy-detection or retrieval set written under ``data``; return (the evaluation block that reads it,
    the expected message part)."""
    if kind == "copydays-orphan-query":
        solid(write_copydays(data) / "strong" / "999901.jpg", (1, 2, 3))
        return "{copydetect: {dataset: copydays}}", "dataset 'copydays': 1 query image(s) match no original, e.g. " \
            "data/copydays/strong/999901.jpg"
    if kind == "copydays-empty-block":
        (write_copydays(data) / "crops" / "50").mkdir(parents=True)
        return "{copydetect: {dataset: copydays}}", "dataset 'copydays': no images in data/copydays/crops/50"
    if kind == "revisited-corrupt-pickle":
        (write_revisited(data) / "gnd_roxford5k.pkl").write_bytes(b"not a pickle")
        return "{retrieval: {dataset: roxford5k}}", "dataset 'roxford5k': unreadable ground truth " \
            "data/roxford5k/gnd_roxford5k.pkl (UnpicklingError"
    if kind == "revisited-missing-image":
        (write_revisited(data) / "jpg" / "b.jpg").unlink()
        return "{retrieval: {dataset: roxford5k}}", "dataset 'roxford5k': 1 image(s) listed in gnd_roxford5k.pkl " \
            "are missing, e.g. data/roxford5k/jpg/b.jpg"
    if kind == "revisited-index-outside":
        base = write_revisited(data)
        ground_truth = pickle.loads((base / "gnd_roxford5k.pkl").read_bytes())
        ground_truth["gnd"][1]["hard"] = [4]
        (base / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(ground_truth))
        return "{retrieval: {dataset: roxford5k}}", "the gnd of query 1 in data/roxford5k/gnd_roxford5k.pkl lists " \
            "database indices outside 0..3"
    raise AssertionError(kind)


SEARCH_DATA_CASES = ["copydays-orphan-query", "copydays-empty-block", "revisited-corrupt-pickle",
                     "revisited-missing-image", "revisited-index-outside"]


@pytest.mark.parametrize("kind", SEARCH_DATA_CASES)
def test_bad_search_set_files_refused_at_load(tmp_path, monkeypatch, capsys, kind):
    work = corpus_dir(tmp_path)
    monkeypatch.chdir(work)
    evaluation, message = damage_search_set(kind, Path("data"))
    (work / "m.yaml").write_text(BASE.replace("{knn: {k: [5], temperature: 0.07}}", evaluation))
    code = main(["run", "m.yaml", "--executor", "debug", "--data-root", "data"])
    captured = capsys.readouterr()
    assert_refused(subprocess.CompletedProcess([], code, captured.out, captured.err), message, work)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("run", "{folder}"), "is a folder, not a matrix file"),
    (("run", "missing.yaml"), "matrix file not found: missing.yaml"),
    (("run", "binary.yaml"), "cannot be read as a YAML text file"),
    (("report", "nowhere"), "no results folder at nowhere"),
    (("run", "m.yaml", "--workers", "0"), "--workers 0 is not allowed; give an integer >= 1"),
    (("resubmit", "m.yaml", "--failed", "--executor", "debug", "--workers", "2"),
     "--workers sets the local executor's worker processes; drop it, or use --executor local instead of debug"),
    (("methods", "--details", "dinoo"), "unknown method 'dinoo'. Did you mean 'dino'?"),
], ids=["matrix-is-folder", "matrix-missing", "matrix-binary", "report-missing-folder", "workers-zero",
        "workers-off-local", "methods-details-unknown"])
def test_bad_arguments(tmp_path, args, message):
    work = corpus_dir(tmp_path)
    (work / "m.yaml").write_text(BASE)
    (work / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81")
    (work / "adir").mkdir()
    args = tuple(a.replace("{folder}", "adir") for a in args)
    result = run_cli(*args, cwd=work)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("patchbench: error: ") and "\n" not in result.stderr.strip()
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (work / "results").exists()


def damage_ondisk(kind: str, data: Path) -> tuple[str, str]:
    """Write a broken ImageNet, COCO or STL-10 root under ``data``; return (dataset, expected message part)."""
    from ondisk import write_coco, write_imagenet, write_stl10

    from patchbench.datasets.imagenet import imagenet100_wnids

    if kind == "imagenet100-missing-root":
        data.mkdir()
        return "imagenet100", "dataset 'imagenet100': files not found at data/imagenet."
    if kind == "imagenet100-wrong-classes":  # a class-folder set that is not ImageNet's (e.g. wnids mistyped)
        write_imagenet(data, [f"n9{i:07d}" for i in range(100)])
        return "imagenet100", "dataset 'imagenet100': 100 of its 100 class folders are missing from data/imagenet/train"
    if kind == "imagenet-val-unsorted":
        base = write_imagenet(data, imagenet100_wnids())
        for folder in (base / "val").iterdir():
            for file in folder.iterdir():
                file.rename(base / "val" / file.name)
            folder.rmdir()
        return "imagenet100", "data/imagenet/val holds image files but no class folders; sort the validation images"
    if kind == "imagenet-not-a-class-folder":
        (write_imagenet(data, imagenet100_wnids()) / "train" / "cats").mkdir()
        return "imagenet", "folder(s) of data/imagenet/train are not ILSVRC-2012 classes: cats"
    if kind == "imagenet100-empty-class":
        base = write_imagenet(data, imagenet100_wnids())
        wnid = sorted(imagenet100_wnids())[0]
        for file in (base / "train" / wnid).iterdir():
            file.unlink()
        return "imagenet100", f"1 class folder(s) of data/imagenet/train hold no image files: {wnid}"
    if kind == "coco-nested":
        base = write_coco(data, train=0)
        (base / "train2017" / "train2017").mkdir()
        return "coco", "dataset 'coco': no image files directly in data/coco/train2017"
    if kind == "stl10-truncated":
        rng = np.random.default_rng(0)
        base = write_stl10(data, {p: rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8) for p in ("train", "test")},
                           {"train": [0, 1], "test": [2, 3]})
        (base / "train_X.bin").write_bytes((base / "train_X.bin").read_bytes()[:1000])
        return "stl10", "train_X.bin holds 1000 bytes, not a whole number of 96x96x3 images"
    raise AssertionError(kind)


ONDISK_CASES = ["imagenet100-missing-root", "imagenet100-wrong-classes", "imagenet-val-unsorted",
                "imagenet-not-a-class-folder", "imagenet100-empty-class", "coco-nested", "stl10-truncated"]


@pytest.mark.parametrize("kind", ONDISK_CASES)
def test_bad_ondisk_root_refused_at_load(tmp_path, monkeypatch, capsys, kind):
    work = corpus_dir(tmp_path)
    monkeypatch.chdir(work)
    dataset, message = damage_ondisk(kind, Path("data"))
    matrix = BASE.replace("dataset: digits", f"dataset: {dataset}").replace("batch_size: 64", "batch_size: 2")
    evaluations = "{dense: {dataset: voc2012}}" if dataset == "coco" else "{knn: {k: [1], temperature: 0.07}}"
    (work / "m.yaml").write_text(matrix.replace("{knn: {k: [5], temperature: 0.07}}", evaluations))
    code = main(["run", "m.yaml", "--out", "out", "--data-root", "data", "--executor", "debug"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("patchbench: error: ") and message in err, err
    assert "\n" not in err or kind.endswith("missing-root"), err  # a missing root goes on with the layout
    assert not (work / "out").exists()


GPU_BASE = BASE.replace("cpus_per_task: 1", "cpus_per_task: 1, gpus_per_node: 1")


@pytest.mark.parametrize("case, args, cluster, message", [
    ("over-gpu-hours", ["--max-gpu-hours", "1e-9"], None,
     "corpus: the jobs to submit need an estimated"),
    ("gpu-hours-zero", ["--max-gpu-hours", "0"], None, "--max-gpu-hours 0.0: give a number of GPU-hours > 0"),
    ("cluster-limit", [], "max_gpu_hours: 1.0e-9\n", "above the limit of 1e-09; see `patchbench run MATRIX --dry-run`"),
    ("cluster-setup-text", [], "setup: module load cuda\n", 'setup: "module load cuda" is not allowed; give a list'),
    ("cluster-unknown-key", [], "data-root: /x\n", "cluster.yaml: unknown key 'data-root'. Did you mean 'data_root'?"),
    ("cluster-missing", [], "", "cluster file not found: nowhere.yaml ($PATCHBENCH_CLUSTER)"),
], ids=["over-gpu-hours", "gpu-hours-zero", "cluster-limit", "cluster-setup-text", "cluster-unknown-key",
        "cluster-missing"])
def test_cost_limit_and_cluster_file_refused(tmp_path, monkeypatch, capsys, case, args, cluster, message):
    work = corpus_dir(tmp_path)
    monkeypatch.chdir(work)
    (work / "m.yaml").write_text(GPU_BASE)
    if cluster:
        (work / "cluster.yaml").write_text(cluster)
    monkeypatch.setenv("PATCHBENCH_CLUSTER", "cluster.yaml" if cluster else "nowhere.yaml")
    if cluster is None:
        monkeypatch.delenv("PATCHBENCH_CLUSTER")
        monkeypatch.setenv("HOME", str(work))
    code = main(["run", "m.yaml", "--out", "out", "--executor", "debug", *args])
    captured = capsys.readouterr()
    assert_refused(subprocess.CompletedProcess([], code, captured.out, captured.err), message, work)


def test_the_corpus_holds_at_least_forty_cases():
    assert len(MATRIX_CASES) + len(DATA_CASES) + len(SEARCH_DATA_CASES) + 7 >= 40
    assert len({c[0] for c in MATRIX_CASES}) == len(MATRIX_CASES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_gpu_check_without_cuda_stops_at_once(tmp_path):
    """benchmark/gpu_check.sh on a machine without CUDA: one line, exit 2, nothing installed or written."""
    script = Path(__file__).resolve().parents[2] / "benchmark" / "gpu_check.sh"
    out = tmp_path / "gpu-check"
    result = subprocess.run(["bash", str(script), str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("gpu_check: no CUDA device is present") and result.stdout == ""
    assert "\n" not in result.stderr.strip() and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_gpu_check_module_without_cuda_stops_at_once(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu-check")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("gpu_check: no CUDA device is present") and captured.err.count("\n") == 1
    assert captured.out == "" and not (tmp_path / "gpu-check").exists()
