"""Linear probe on the frozen global embedding, DINO's protocol (``facebookresearch/dino``, ``eval_linear.py``)
with the hyper-parameters selected on held-out training images and the last epoch reported.

DINO's recipe is kept (a single ``Linear`` on the un-normalised features, weights N(0, 0.01), SGD with momentum 0.9,
cosine schedule, 100 epochs), with two changes a fair benchmark needs: the learning rate and weight decay are chosen
on a stratified, fixed held-out part of the training split (DINO's script reports the best test accuracy over
epochs), and the probe is then retrained on the whole training split and read once on the test split after its last
epoch. By default it trains on cached features (no augmentation: fast on a CPU); ``augment: true`` is DINO's full
protocol, a RandomResizedCrop (scale 0.08–1) and a flip of every training image in every epoch at the native
resolution, through the frozen encoder (for GPU runs; selection and test still read un-augmented images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchbench.methods.crops import resized_crop, sample_crop_boxes
from patchbench.methods.typecheck import ranged

from ..config import ConfigError
from ..features import EvalInputs
from .base import EvalResult, Evaluation, register_evaluation
from .probe import Standardizer, Trial, best_trial, grid, held_out_split, shuffled_batches, train_heads

AUGMENT_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop default, as DINO's eval_linear.py
AUGMENT_RATIO = (3 / 4, 4 / 3)
SCORE_CHUNK = 4096


@dataclass(frozen=True)
class LinearSettings:
    """``lrs`` × ``weight_decays``: the grid searched on the held-out part (``val_fraction`` of the training split;
    DINO applies no weight decay, so by default only the learning rate is searched);
    ``epochs`` and ``batch_size``: the probe's training (DINO: 100 epochs); ``standardize``: per-dimension
    standardisation of the features (:class:`.probe.Standardizer`); ``augment``: DINO's crop + flip per epoch instead
    of cached features."""

    lrs: tuple[float, ...] = ranged((0.01, 0.1, 1.0, 10.0), above=0, min_items=1)
    weight_decays: tuple[float, ...] = ranged((0.0,), min=0, min_items=1)
    epochs: int = ranged(100, min=1)
    batch_size: int = ranged(256, min=1)
    val_fraction: float = ranged(0.1, above=0, max=0.5)
    standardize: bool = True
    augment: bool = False


def accuracies(logits: Tensor, labels: Tensor, ks: tuple[int, ...]) -> dict[int, Tensor]:
    """Top-k accuracy per head: logits (G, N, C), labels (N,) → {k: (G,)}."""
    top = logits.topk(max(ks), dim=-1).indices  # (G, N, kmax)
    hits = top == labels.view(1, -1, 1)
    return {k: hits[..., :k].any(-1).float().mean(-1) for k in ks}


def cross_entropy_per_head(logits: Tensor, labels: Tensor) -> Tensor:
    """Each head's mean cross-entropy: logits (G, N, C), labels (N,) → (G,)."""
    heads, n, classes = logits.shape
    return F.cross_entropy(logits.reshape(heads * n, classes), labels.repeat(heads), reduction="none").view(
        heads, n).mean(1)


@register_evaluation("linear")
class LinearProbe(Evaluation):
    settings_class = LinearSettings
    reads = "global"
    needs = frozenset({"labels"})
    description = "linear probe on the global embedding; lr and wd chosen on held-out training images"
    quick_settings = {"epochs": 5, "lrs": [1.0], "weight_decays": [0.0]}

    def run(self, inputs: EvalInputs) -> EvalResult:
        s: LinearSettings = self.settings
        train_y, test_y = inputs.labels("train"), inputs.labels("test")
        classes = inputs.source.num_classes
        try:
            fit, val = held_out_split(len(train_y), s.val_fraction, train_y)
        except ValueError as err:
            raise ConfigError(f"linear probe on '{inputs.source.name}': cannot hold out a stratified "
                              f"{s.val_fraction:.0%} of the training split ({err})") from None
        train_x = inputs.features("train")
        trials = grid(s.lrs, s.weight_decays)
        norm = Standardizer.fit(train_x, fit, s.standardize)
        heads = self._train(inputs, trials, norm, train_x, train_y, fit)
        val_top1 = self._scores(heads, norm, train_x[val], train_y[val], inputs.device, (1,))[1]
        chosen = best_trial(trials, val_top1.tolist())
        everything = np.arange(len(train_y))
        norm = Standardizer.fit(train_x, everything, s.standardize)
        final = self._train(inputs, [chosen], norm, train_x, train_y, everything)
        ks = (1, 5) if classes > 10 else (1,)
        test = self._scores(final, norm, inputs.features("test"), test_y, inputs.device, ks)
        return EvalResult(
            metrics={f"top{k}": float(test[k][0]) for k in ks},
            protocol=("linear probe (DINO eval_linear.py recipe): frozen encoder, one Linear on the "
                      + ("standardised " if s.standardize else "un-normalised ") +
                      f"{inputs.readout} features, SGD momentum 0.9, cosine lr, {s.epochs} epochs, batch "
                      f"{s.batch_size}; " + ("random-resized-crop + flip each epoch" if s.augment else
                                             "cached features, no augmentation") + "; last epoch on the test split"),
            probe_hparams={"grid": [vars(t) for t in trials], "val_top1": [round(float(v), 6) for v in val_top1],
                           "chosen": vars(chosen), "trials": len(trials), "validation_images": int(len(val))},
            selection_rule=(f"lr and weight decay maximising top-1 on a stratified held-out {s.val_fraction:.0%} of "
                            "the training split (fixed seed; first in grid order on a tie), then retrained on the "
                            "whole training split; the test split is read once"))

    def _train(self, inputs: EvalInputs, trials: list[Trial], norm: Standardizer, features: np.ndarray,
               labels: np.ndarray, indices: np.ndarray):
        s: LinearSettings = self.settings

        if not s.augment:  # the rows it trains on, standardised once and held in memory for the epochs
            rows = norm(torch.from_numpy(np.asarray(features[indices], dtype=np.float32)).to(inputs.device))
            targets = torch.from_numpy(labels[indices]).to(inputs.device)

        def cached_batches(epoch: int):
            for batch in shuffled_batches(len(indices), s.batch_size, inputs.seed, epoch):
                chosen = torch.from_numpy(batch).to(inputs.device)
                yield rows[chosen], targets[chosen]

        def augmented_batches(epoch: int):
            for x, y in self._augmented_batches(inputs, indices, epoch):
                yield norm(x), y

        batches = augmented_batches if s.augment else cached_batches
        return train_heads(trials, features.shape[1], inputs.source.num_classes, s.epochs, batches,
                           cross_entropy_per_head, inputs.seed, inputs.device)

    def _augmented_batches(self, inputs: EvalInputs, indices: np.ndarray, epoch: int):
        s: LinearSettings = self.settings
        data = inputs.split("train")
        generator = torch.Generator().manual_seed(inputs.seed * 100_003 + epoch)
        for batch in shuffled_batches(len(indices), s.batch_size, inputs.seed, epoch):
            chosen = indices[batch]
            images = data.images[torch.from_numpy(chosen)] if data.images is not None else \
                torch.stack([data[int(i)][0] for i in chosen])
            images = images.to(inputs.device).float().div_(255)
            boxes = sample_crop_boxes(len(chosen), images.shape[-2], images.shape[-1], AUGMENT_SCALE, AUGMENT_RATIO,
                                      generator)
            flips = torch.rand(len(chosen), generator=generator) < 0.5
            crops = resized_crop(images, boxes, flips, images.shape[-1])
            with torch.no_grad():
                features = inputs.embed(inputs.normalise(crops))
            yield features, torch.from_numpy(data.labels[chosen])  # yielded outside no_grad: the probe trains on it

    @staticmethod
    @torch.no_grad()
    def _scores(heads, norm: Standardizer, features: np.ndarray, labels: np.ndarray, device: torch.device,
                ks: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Top-k accuracies per head over a whole split, in chunks of SCORE_CHUNK images."""
        hits: dict[int, np.ndarray] = {}
        for start in range(0, len(labels), SCORE_CHUNK):
            logits = heads(norm(torch.from_numpy(np.array(features[start:start + SCORE_CHUNK])).to(device)))
            chunk = torch.from_numpy(labels[start:start + SCORE_CHUNK]).to(device)
            for k, accuracy in accuracies(logits, chunk, ks).items():
                weighted = accuracy.cpu().numpy() * len(chunk)
                hits[k] = hits[k] + weighted if k in hits else weighted
        return {k: v / len(labels) for k, v in hits.items()}
