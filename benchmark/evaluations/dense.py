"""Dense linear segmentation probe on the frozen patch-token map.

A 1×1 linear classifier on each patch token (the method's patch readout, docs/architecture.md), logits upsampled
bilinearly to the mask's resolution, per-pixel cross-entropy with the dataset's ignore index. This is the linear
segmentation probe of Leopart (Ziegler and Asano, CVPR 2022, §4.1: a 1×1 convolution on frozen ViT patch tokens,
VOC at 448 px) and of the linear heads of iBOT's and DINOv2's segmentation evaluations, without a decoder, so
that nothing but the tokens is compared. The learning rate is chosen on held-out training images (a fixed random
part of the training split) by mIoU; the probe is then retrained on the whole training split and read once on the
test split after its last epoch.

Metrics: mIoU, the mean over the classes present in the test ground truth of TP / (TP + FP + FN) from the
confusion matrix of all non-ignored pixels, and pixel accuracy (the fraction of non-ignored pixels labelled right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchbench.methods.typecheck import ranged

from ..features import EvalInputs
from .base import EvalResult, Evaluation, register_evaluation
from .probe import Standardizer, Trial, best_trial, grid, held_out_split, shuffled_batches, train_heads

NO_IGNORE = -100  # torch's default ignore index, for masks whose every pixel is labelled
LOGIT_BUDGET = 1 << 26  # full-resolution logit values held at once (256 MB in float32)


@dataclass(frozen=True)
class DenseSettings:
    """``lrs``: the learning rates tried on the held-out part (``val_fraction`` of the training images), with
    ``weight_decay``; ``epochs`` and ``batch_size`` (images) of the probe's training; ``standardize``: per-dimension
    standardisation of the tokens (:class:`.probe.Standardizer`)."""

    lrs: tuple[float, ...] = ranged((0.1, 1.0, 10.0), above=0, min_items=1)
    weight_decay: float = ranged(0.0, min=0)
    epochs: int = ranged(5, min=1)
    batch_size: int = ranged(32, min=1)
    val_fraction: float = ranged(0.1, above=0, max=0.5)
    standardize: bool = True


def confusion_matrix(predictions: Tensor, masks: Tensor, classes: int, ignore_index: int | None) -> Tensor:
    """(C, C) counts: rows the true class, columns the predicted one, over the non-ignored pixels."""
    valid = masks != ignore_index if ignore_index is not None else torch.ones_like(masks, dtype=torch.bool)
    index = masks[valid].long() * classes + predictions[valid].long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """mIoU over the classes present in the ground truth, and pixel accuracy."""
    confusion = confusion.astype(np.float64)
    true_positive = np.diag(confusion)
    present = confusion.sum(1) > 0
    union = confusion.sum(1) + confusion.sum(0) - true_positive
    iou = true_positive[present] / union[present]
    return {"miou": float(iou.mean()) if present.any() else 0.0,
            "pixel_acc": float(true_positive.sum() / max(confusion.sum(), 1.0))}


def upsampled_logits(token_logits: Tensor, size: tuple[int, ...]) -> Tensor:
    """Heads' token logits (G, B, h, w, C) → pixel logits (B · G, C, H, W), bilinear, in one call for all heads."""
    g, b, h, w, c = token_logits.shape
    logits = token_logits.permute(1, 0, 4, 2, 3).reshape(b, g * c, h, w)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).reshape(b * g, c, *size)


def head_chunks(heads: int, pixels: int, classes: int) -> list[slice]:
    """Groups of heads whose full-resolution logits for a batch fit in LOGIT_BUDGET values."""
    size = max(1, LOGIT_BUDGET // max(1, pixels * classes))
    return [slice(i, i + size) for i in range(0, heads, size)]


@register_evaluation("dense")
class DenseLinearProbe(Evaluation):
    settings_class = DenseSettings
    reads = "patches"
    needs = frozenset({"masks"})
    description = "linear 1x1 segmentation probe on the patch tokens, bilinear upsampling; mIoU, pixel accuracy"
    quick_settings = {"epochs": 1, "lrs": [1.0]}

    def run(self, inputs: EvalInputs) -> EvalResult:
        s: DenseSettings = self.settings
        segmentation = inputs.source.segmentation
        assert segmentation is not None  # a source that provides masks (``needs``) sets it
        classes, ignore = segmentation.num_classes, segmentation.ignore_index
        train_tokens, train_masks = inputs.features("train"), inputs.masks("train")
        fit, val = held_out_split(len(train_masks), s.val_fraction)
        trials = grid(s.lrs, (s.weight_decay,))
        norm = Standardizer.fit(train_tokens, fit, s.standardize)
        heads = self._train(inputs, trials, norm, train_tokens, train_masks, fit, classes, ignore)
        val_scores = [segmentation_scores(c) for c in self._confusions(heads, norm, train_tokens, train_masks, val,
                                                                       classes, ignore, inputs.device)]
        chosen = best_trial(trials, [v["miou"] for v in val_scores])
        everything = np.arange(len(train_masks))
        norm = Standardizer.fit(train_tokens, everything, s.standardize)
        final = self._train(inputs, [chosen], norm, train_tokens, train_masks, everything, classes, ignore)
        test_masks = inputs.masks("test")
        confusion = self._confusions(final, norm, inputs.features("test"), test_masks, np.arange(len(test_masks)),
                                     classes, ignore, inputs.device)[0]
        return EvalResult(
            metrics=segmentation_scores(confusion),
            protocol=(f"dense linear probe: frozen {'standardised ' if s.standardize else ''}{inputs.readout} "
                      f"({train_tokens.shape[1]}x{train_tokens.shape[2]} "
                      f"grid at {inputs.resolution} px), 1x1 linear classifier, logits upsampled bilinearly to the "
                      f"{train_masks.shape[1]} px masks, cross-entropy ignoring "
                      f"{'label ' + str(ignore) if ignore is not None else 'nothing'}; SGD momentum 0.9, cosine lr, "
                      f"{s.epochs} epochs, batch {s.batch_size} images; last epoch on the test split; mIoU over the "
                      "classes present in the test ground truth"),
            probe_hparams={"grid": [vars(t) for t in trials], "val_miou": [round(v["miou"], 6) for v in val_scores],
                           "chosen": vars(chosen), "trials": len(trials), "validation_images": int(len(val)),
                           "resolution": inputs.resolution, "classes": classes, "ignore_index": ignore},
            selection_rule=(f"lr maximising mIoU on a held-out {s.val_fraction:.0%} of the training images (fixed "
                            "seed; first in grid order on a tie), then retrained on the whole training split; the "
                            "test split is read once"))

    def _train(self, inputs: EvalInputs, trials: list[Trial], norm: Standardizer, tokens: np.ndarray,
               masks: np.ndarray, indices: np.ndarray, classes: int, ignore: int | None):
        s: DenseSettings = self.settings

        def batches(epoch: int):
            for batch in shuffled_batches(len(indices), s.batch_size, inputs.seed, epoch):
                chosen = indices[batch]
                yield (norm(torch.from_numpy(np.asarray(tokens[chosen], dtype=np.float32))),
                       torch.from_numpy(np.asarray(masks[chosen])).long())

        def loss(outputs: Tensor, targets: Tensor) -> Tensor:
            """Each head's mean cross-entropy over the non-ignored pixels: (G,)."""
            valid = (targets != ignore).sum() if ignore is not None else targets.numel()
            per_head = []
            for chunk in head_chunks(len(outputs), targets.numel(), classes):
                heads = outputs[chunk]
                logits = upsampled_logits(heads, targets.shape[-2:])  # (B · g, C, H, W)
                expanded = targets.unsqueeze(1).expand(-1, len(heads), -1, -1).reshape(-1, *targets.shape[-2:])
                pixel_loss = F.cross_entropy(logits, expanded, ignore_index=NO_IGNORE if ignore is None else ignore,
                                             reduction="none")  # (B · g, H, W), 0 where ignored
                per_head.append(pixel_loss.view(len(targets), len(heads), -1).sum((0, 2)) / valid)
            return torch.cat(per_head)

        return train_heads(trials, tokens.shape[-1], classes, s.epochs, batches, loss, inputs.seed, inputs.device)

    def _confusions(self, heads, norm: Standardizer, tokens: np.ndarray, masks: np.ndarray, indices: np.ndarray,
                    classes: int, ignore: int | None, device: torch.device) -> list[np.ndarray]:
        """One confusion matrix per head over the images ``indices``."""
        s: DenseSettings = self.settings
        totals = [torch.zeros(classes, classes, dtype=torch.long, device=device) for _ in heads.weights]
        with torch.no_grad():
            for start in range(0, len(indices), s.batch_size):
                chosen = indices[start:start + s.batch_size]
                target = torch.from_numpy(np.asarray(masks[chosen])).to(device)
                outputs = heads(norm(torch.from_numpy(np.asarray(tokens[chosen], dtype=np.float32)).to(device)))
                for chunk in head_chunks(len(outputs), target.numel(), classes):
                    heads_chunk = outputs[chunk]
                    predictions = upsampled_logits(heads_chunk, target.shape[-2:]).argmax(1)  # (B · g, H, W)
                    predictions = predictions.view(len(target), len(heads_chunk), *target.shape[-2:])
                    for total, prediction in zip(totals[chunk], predictions.unbind(1)):
                        total += confusion_matrix(prediction, target, classes, ignore)
        return [t.cpu().numpy() for t in totals]
