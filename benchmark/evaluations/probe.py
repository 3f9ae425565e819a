"""Training linear probes on frozen features, a whole hyper-parameter grid at once.

Every (learning rate, weight decay) trial of a grid is its own linear classifier with its own SGD parameter group;
all of them see the same batches and are evaluated in one ``einsum``, and the loss is the sum of each head's own mean
loss, so each head's gradients are exactly those of training it alone. The recipe is DINO's ``eval_linear.py``:
weights ~ N(0, 0.01), zero bias, SGD with momentum 0.9, cosine annealing of the learning rate to 0 over the epochs.
The held-out validation split is carved from the training split with a fixed seed, so every method and seed of a
matrix is tuned on the same images.

Features are standardised per dimension with the mean and standard deviation of the images the probe trains on
(``standardize``, on by default): the BatchNorm without affine parameters that MAE's linear probing puts before the
classifier (He et al., CVPR 2022, §A.2; lightly's ``benchmarks/imagenet/vitb16/linear_eval.py``), in its eval-mode form.
DINO's ``eval_linear.py`` has no normalisation; without it one learning-rate grid cannot serve encoders whose
features differ in scale by orders of magnitude (a random ViT's CLS token barely varies between images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

VALIDATION_SPLIT_SEED = 0


@dataclass(frozen=True)
class Trial:
    lr: float
    weight_decay: float


def grid(lrs: Iterable[float], weight_decays: Iterable[float]) -> list[Trial]:
    """The trials in a fixed order (learning rate, then weight decay, each ascending): ties go to the first."""
    return [Trial(lr, wd) for lr in sorted(lrs) for wd in sorted(weight_decays)]


def held_out_split(n: int, fraction: float, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a training split: deterministic, stratified by ``labels`` if given."""
    fit, val = train_test_split(np.arange(n), test_size=fraction, random_state=VALIDATION_SPLIT_SEED,
                                stratify=labels)
    return np.sort(fit), np.sort(val)


class LinearHeads(nn.Module):
    """G independent linear classifiers D → C; ``forward`` maps (..., D) to (G, ..., C)."""

    def __init__(self, heads: int, dim: int, classes: int, generator: torch.Generator):
        super().__init__()
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(dim, classes, generator=generator) * 0.01) for _ in range(heads))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(classes)) for _ in range(heads))

    def forward(self, x: Tensor) -> Tensor:
        """One matrix product for every head: the weights side by side as (D, G · C)."""
        out = x @ torch.cat(list(self.weights), dim=1) + torch.cat(list(self.biases))
        return out.unflatten(-1, (len(self.weights), -1)).movedim(-2, 0)


def train_heads(trials: list[Trial], dim: int, classes: int, epochs: int,
                batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
                loss: Callable[[Tensor, Tensor], Tensor], seed: int, device: torch.device) -> LinearHeads:
    """Train one head per trial; ``batches(epoch)`` yields (features, targets); ``loss(outputs (G, ...), targets)``
    returns the G per-head mean losses."""
    heads = LinearHeads(len(trials), dim, classes, torch.Generator().manual_seed(seed)).to(device)
    groups = [{"params": [w, b], "lr": t.lr, "weight_decay": t.weight_decay}
              for t, w, b in zip(trials, heads.weights, heads.biases)]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    for epoch in range(epochs):
        for features, targets in batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            loss(heads(features.to(device)), targets.to(device)).sum().backward()
            optimizer.step()
        schedule.step()
    return heads.eval()


STATISTICS_CHUNK = 4096


@dataclass(frozen=True)
class Standardizer:
    """x → (x − mean) / std per feature dimension (the last axis)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, features: np.ndarray, indices: np.ndarray, enabled: bool = True) -> "Standardizer":
        """Statistics of ``features[indices]`` over every axis but the last, read in chunks (memory maps)."""
        dim = features.shape[-1]
        if not enabled:
            return cls(torch.zeros(dim), torch.ones(dim))
        total, total_sq, count = np.zeros(dim), np.zeros(dim), 0
        for start in range(0, len(indices), STATISTICS_CHUNK):
            chunk = np.asarray(features[indices[start:start + STATISTICS_CHUNK]], dtype=np.float64).reshape(-1, dim)
            total += chunk.sum(0)
            total_sq += (chunk ** 2).sum(0)
            count += len(chunk)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
        return cls(torch.from_numpy(mean).float(), torch.from_numpy(np.maximum(std, 1e-6)).float())

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of one epoch, in an order fixed by (seed, epoch); sorted within a batch (memory maps read
    faster in order)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [np.sort(order[i:i + batch_size]) for i in range(0, n, batch_size)]


def best_trial(trials: list[Trial], scores: list[float]) -> Trial:
    """The trial with the highest validation score; the first in grid order on a tie."""
    return trials[int(np.argmax(scores))]
