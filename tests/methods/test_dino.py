"""DINO's objective against a literal transcription of facebookresearch/dino ``main_dino.py::DINOLoss``.

The objective runs on real views through a pico backbone; the reference gets the same head outputs, computed here
view by view, and the objective's centre before the step. Checked: the loss, the centre after the update, the
teacher-temperature warm-up (in it and after it), the frozen last layer, and the collapse diagnostics against
their definitions (entropy of the teacher probabilities, KL between the teacher and student distributions).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method


class UpstreamDINOLoss(nn.Module):
    """``main_dino.py::DINOLoss`` (facebookresearch/dino), transcribed; one process, so ``dist.all_reduce`` is the
    identity and ``dist.get_world_size()`` is 1."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1,
                 center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp,
                        teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp
        ))

    def forward(self, student_output, teacher_output, epoch):
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)

        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)

        total_loss = 0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        batch_center = batch_center / (len(teacher_output) * 1)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def upstream_cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    """``utils.py::cancel_gradients_last_layer`` (facebookresearch/dino), transcribed."""
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


OUT, N_LOCAL, EPOCHS = 48, 2, 6
TEMPS = dict(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)


def dino_method(**objective_kwargs):
    torch.manual_seed(0)
    kwargs = dict(out_dim=OUT, hidden_dim=24, bottleneck_dim=8, **TEMPS, **objective_kwargs)
    return build_method(MethodChoice("dino", objective_kwargs=kwargs, view_kwargs=dict(n_local=N_LOCAL)),
                        BackboneConfig(size="pico", drop_path_rate=0.0), (0.5,) * 3, (0.25,) * 3)


def head_outputs(method, views):
    """Student logits of every view and teacher logits of the two globals, one view at a time, concatenated in
    view order as ``main_dino.py`` feeds them to the loss."""
    heads = method.objective
    with torch.no_grad():
        student = torch.cat([heads.student_heads["dino"](method.student(c)[:, 0]) for c in views.crops])
        teacher = torch.cat([heads.teacher_heads["dino"](method.teacher(c)[:, 0]) for c in views.global_crops])
    return student, teacher


@pytest.mark.parametrize("epoch", [0, 1, 3, 5])  # in the warm-up (0, 1) and after it (3, 5)
def test_objective_loss_and_centre_match_upstream_dino_loss(epoch):
    method = dino_method()
    criterion = method.objective.criterion
    criterion.center.copy_(torch.randn(criterion.center.shape, generator=torch.Generator().manual_seed(1)))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    views = method.make_views(images, torch.Generator().manual_seed(3))
    student_out, teacher_out = head_outputs(method, views)

    upstream = UpstreamDINOLoss(OUT, 2 + N_LOCAL, TEMPS["warmup_teacher_temp"], TEMPS["teacher_temp"],
                                TEMPS["warmup_teacher_temp_epochs"], EPOCHS)
    center_before = criterion.center.clone().view(1, OUT)
    upstream.center = center_before.clone()
    expected = upstream(student_out, teacher_out, epoch)
    ours = method.training_step(views, Progress(epoch, 0, EPOCHS, 10))

    torch.testing.assert_close(ours["loss"].detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(criterion.center.view(1, OUT), upstream.center, rtol=1e-5, atol=1e-6)

    # the diagnostics from their definitions, at the temperature of this epoch (0.04 → 0.07 over 3 epochs)
    temp = [0.04, 0.055, 0.07][min(epoch, 2)]
    teacher_p = F.softmax((teacher_out - center_before) / temp, dim=-1)
    entropy = -torch.special.xlogy(teacher_p, teacher_p).sum(-1).mean()  # 0·log 0 = 0
    student_logp = F.log_softmax(student_out / 0.1, dim=-1).chunk(2 + N_LOCAL)
    kls = [(torch.special.xlogy(q, q) - q * student_logp[v]).sum(-1).mean()
           for iq, q in enumerate(teacher_p.chunk(2)) for v in range(2 + N_LOCAL) if v != iq]
    torch.testing.assert_close(ours["teacher_entropy"], entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["kl"], torch.stack(kls).mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("freeze_last_layer", [1, 2])
def test_last_layer_is_frozen_for_the_first_epochs_as_upstream(freeze_last_layer):
    method = dino_method(freeze_last_layer=freeze_last_layer)
    head = method.objective.student_heads["dino"]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for epoch in range(3):
        method.zero_grad()
        progress = Progress(epoch, 0, EPOCHS, 10)
        views = method.make_views(images, torch.Generator().manual_seed(epoch))
        method.training_step(views, progress)["loss"].backward()
        upstream = {n: None if p.grad is None else p.grad.clone() for n, p in head.named_parameters()}
        method.objective.after_backward(progress)
        frozen = epoch < freeze_last_layer
        trained = [(name, p) for name, p in head.named_parameters() if p.requires_grad]  # weight_g is fixed
        assert any("last_layer" in name for name, _ in trained)
        for name, p in trained:
            if "last_layer" in name:
                assert (p.grad is None or not p.grad.any()) == frozen, (epoch, name)
            else:
                assert p.grad is not None and p.grad.any()
        # upstream's rule on the same gradients leaves the same ones
        copies = {}
        for name, p in head.named_parameters():
            copies[name] = nn.Parameter(p.detach().clone())
            copies[name].grad = upstream[name]
        upstream_cancel_gradients_last_layer(epoch, NamedParameters(copies), freeze_last_layer)
        for name, p in head.named_parameters():
            expected = copies[name].grad
            assert (p.grad is None or not p.grad.any()) == (expected is None), (epoch, name)
            if expected is not None:
                torch.testing.assert_close(p.grad, expected, rtol=0, atol=0)


class NamedParameters:
    """What ``cancel_gradients_last_layer`` reads of a model: ``named_parameters()``."""

    def __init__(self, parameters):
        self.parameters = parameters

    def named_parameters(self):
        return iter(self.parameters.items())


def test_teacher_sees_globals_only_in_one_forward():
    method = dino_method()
    seen = []
    method.teacher.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    method.training_step(method.make_views(images, torch.Generator().manual_seed(0)), Progress(0, 0, 5, 10))
    assert seen == [torch.Size([6, 3, 32, 32])]  # both globals, one forward
