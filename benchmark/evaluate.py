"""Evaluation jobs: the same code path for every method and for the reference rows.

The encoder comes from ``SSLMethod.encoder_for_eval()`` (the teacher where there is one) loaded strictly from the
run's final checkpoint; ``random-init`` is the untrained backbone of the same configuration and seed, read out at
its CLS token, and ``random-init-patches`` the same backbone read out at its mean-pooled patch tokens (the fair
reference for methods with that readout, e.g. GTSA); ``raw-pixels`` are the normalised pixels themselves. Images are evaluated at their native size with
the dataset's normalisation (specs/evaluation-protocols.md §2, "patchbench on CIFAR").
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from patchbench.datasets import ImageSet, build_dataset
from patchbench.methods import ViTEncoder

from .config import RunSpec
from .knn import knn_top1
from .provenance import provenance
from .store import RunDir
from .train import build_for_spec, pick_device

Embed = Callable[[Tensor], Tensor]


@torch.no_grad()
def extract(embed: Embed, data: ImageSet, mean, std, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Embeddings of every image of ``data``, in dataset order."""
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    images = data.images if data.images is not None else torch.stack([data[i][0] for i in range(len(data))])
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255)
        out.append(embed((x - mean_t) / std_t).float().cpu())
    return torch.cat(out).numpy()


def eval_encoder(spec: RunSpec, run: RunDir, device: torch.device) -> tuple[Embed, str, int]:
    """(embedding function, readout name, epoch of the weights) for a run."""
    if spec.method == "raw-pixels":
        return (lambda x: x.flatten(1)), "pixels", 0
    if spec.method in ("random-init", "random-init-patches"):
        torch.manual_seed(spec.seed)
        backbone = ViTEncoder(spec.backbone).to(device).eval()
        if spec.method == "random-init-patches":
            return (lambda x: backbone(x)[:, backbone.num_prefix_tokens:].mean(1)), "mean_patch", 0
        return (lambda x: backbone(x)[:, 0]), "cls", 0
    method, _ = build_for_spec(spec, device)
    checkpoint = torch.load(run.checkpoint, map_location=device, weights_only=False)
    if checkpoint["epoch"] != spec.budget.epochs:
        raise RuntimeError(f"checkpoint of run {spec.run_id} is at epoch {checkpoint['epoch']}, "
                           f"not the last epoch {spec.budget.epochs}: pretraining has not finished")
    method.load_state_dict(checkpoint["method"])  # strict: every key must match
    encoder = method.encoder_for_eval()
    return encoder, encoder.readout, checkpoint["epoch"]


def knn_record(spec: RunSpec, run: RunDir) -> dict[str, Any]:
    """The k-NN result record of a run (train split as the bank, test split as queries)."""
    device = pick_device(spec.runtime.device)
    source = build_dataset(spec.dataset, spec.runtime.data_root)
    train, test = source.load("train"), source.load("test")
    embed, readout, epoch = eval_encoder(spec, run, device)
    train_x = extract(embed, train, source.mean, source.std, device)
    test_x = extract(embed, test, source.mean, source.std, device)
    top1 = knn_top1(train_x, train.labels, test_x, test.labels, spec.knn.k, spec.knn.temperature)
    summary = run.train_summary
    train_info = json.loads(summary.read_text()) if summary.exists() else {}
    cost_keys = ("images_per_s", "wall_s", "peak_memory_mb", "device_name")
    return {
        "run_id": spec.run_id, "matrix": spec.matrix, "method": spec.label, "dataset": spec.dataset,
        "backbone": f"vit-{spec.backbone.size}/{spec.backbone.patch_size}", "seed": spec.seed, "eval": "knn",
        "eval_protocol": "dino-knn: L2-normalised features, cosine, exp(s/T)-weighted vote; bank = train split, "
                         "queries = test split, native resolution",
        "probe_hparams": {"k": list(spec.knn.k), "temperature": spec.knn.temperature, "readout": readout,
                          "feature_dim": int(train_x.shape[1])},
        "selection_rule": "none: every k is reported",
        "epoch": epoch,
        "metrics": {f"top1_k{k}": acc for k, acc in top1.items()},
        "collapsed": train_info.get("collapsed"),
        "cost": {k: train_info.get(k) for k in cost_keys},
        "provenance": provenance(),
    }


EVALUATIONS: dict[str, Callable[[RunSpec, RunDir], dict[str, Any]]] = {"knn": knn_record}
