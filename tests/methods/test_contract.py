"""Contract tests generated from the registry: every registered method, plugins included, must pass them.

One CPU training step with a tiny ViT on embedded data (digits): a finite loss; a gradient for every student
parameter that should learn; a small step down that gradient lowers the loss on the same batch (so the loss and
its gradient agree, and the objective learns what it reports); no gradient for the teacher, which changes only by
EMA; identical losses for the same seed; evaluation embeddings of the declared shape that do not depend on the
other images of the batch.
"""

from __future__ import annotations

import pytest
import torch

from patchbench.benchmark.optim import param_groups
from patchbench.benchmark.train import optimizer_step, view_generator
from patchbench.datasets import build_dataset
from patchbench.methods import METHODS, BackboneConfig, MethodChoice, Progress, build_method

BATCH = 4
MOMENTUM = 0.9


def tiny_backbone() -> BackboneConfig:
    return BackboneConfig(size="pico", patch_size=4, img_size=32, drop_path_rate=0.1)


@pytest.fixture(scope="module")
def images():
    data = build_dataset("digits").load("train")
    return data.images[:BATCH], build_dataset("digits")


def build(name: str, source, seed: int = 0):
    torch.manual_seed(seed)
    return build_method(MethodChoice(name), tiny_backbone(), source.mean, source.std)


def step(method, images, epoch: int = 1, batch_index: int = 0):
    """One optimiser step as the trainer takes it (epoch 1: after DINO-style frozen-last-layer epochs)."""
    params = method.student_parameters()
    optimizer = torch.optim.AdamW(param_groups(params))
    views = method.make_views(images, view_generator(0, batch_index))
    progress = Progress(epoch=epoch, step=10, total_epochs=5, steps_per_epoch=10)
    return optimizer_step(method, optimizer, params, views, progress, 0, lr=1e-3, weight_decay=0.04,
                          momentum=MOMENTUM, clip_grad=3.0)


METHOD_NAMES = METHODS.names()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_finite_loss_and_student_gradients(name, images):
    batch, source = images
    method = build(name, source)
    losses = step(method, batch)
    assert torch.isfinite(losses["loss"]), losses
    missing = [n for n, p in method.student_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"{name}: student parameters without gradient: {missing}"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_step_down_the_gradient_lowers_the_loss_on_the_same_batch(name, images):
    """Same views, same teacher, centres and dropout draws before and after; only the student moves, by 1e-2 along
    the normalised negative gradient (including the objective's own gradient hooks, e.g. a frozen last layer)."""
    batch, source = images
    method = build(name, source)
    views = method.make_views(batch, view_generator(0, 0))
    progress = Progress(epoch=1, step=10, total_epochs=5, steps_per_epoch=10)
    state = {k: v.clone() for k, v in method.state_dict().items()}

    def loss_on_batch():
        torch.manual_seed(11)  # the same stochastic-depth draws
        return method.training_step(views, progress)["loss"]

    before = loss_on_batch()
    before.backward()
    method.objective.after_backward(progress)
    params = [p for _, p in method.student_parameters() if p.grad is not None]
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    with torch.no_grad():
        moved = {id(p): p - 1e-2 * p.grad / norm for p in params}
        method.load_state_dict(state)  # teacher, centres and the student as they were
        for p in params:
            p.copy_(moved[id(p)])
        after = loss_on_batch()
    assert after < before.detach(), (name, before.item(), after.item())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_teacher_changes_only_by_ema(name, images):
    batch, source = images
    method = build(name, source)
    pairs = method.ema_pairs()
    if method.teacher is None:
        assert pairs == []
        return
    before = [[p.detach().clone() for p in t.parameters()] for _, t in pairs]
    step(method, batch)
    for (student, teacher), old in zip(pairs, before):
        for t, s, o in zip(teacher.parameters(), student.parameters(), old):
            assert t.grad is None
            assert not t.requires_grad
            torch.testing.assert_close(t.detach(), MOMENTUM * o + (1 - MOMENTUM) * s.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_same_seed_same_losses(name, images):
    batch, source = images
    runs = []
    for _ in range(2):
        method = build(name, source, seed=3)
        torch.manual_seed(7)
        runs.append([step(method, batch, batch_index=i)["loss"].item() for i in range(2)])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_eval_embedding_shape(name, images):
    batch, source = images
    method = build(name, source)
    encoder = method.encoder_for_eval()
    x = (batch.float() / 255 - torch.tensor(source.mean).view(1, 3, 1, 1)) / torch.tensor(source.std).view(1, 3, 1, 1)
    out = encoder(x)
    assert out.shape == (BATCH, encoder.dim)
    assert torch.isfinite(out).all()
    assert not out.requires_grad
    torch.testing.assert_close(encoder(x[:1]), out[:1], rtol=1e-5, atol=1e-5)  # one image: its own embedding
    assert not torch.allclose(out[0], out[1])  # different images, different embeddings
    patches = encoder.patches(x)  # the dense evaluations' readout: one token per 4 px patch of the 32 px image
    assert patches.shape[:3] == (BATCH, 8, 8) and torch.isfinite(patches).all() and not patches.requires_grad
