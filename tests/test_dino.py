"""DINO's objective against the official loss (specs/dino.md §4, §10)."""

import torch
import torch.nn.functional as F

from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method
from patchbench.methods.dino import DINOObjective


def official_dino_loss(student_out, teacher_out, center, n_crops, teacher_temp, student_temp=0.1):
    """A literal transcription of main_dino.py::DINOLoss.forward: student chunks vs the 2 teacher chunks."""
    s = (student_out / student_temp).chunk(n_crops)
    t = F.softmax((teacher_out - center) / teacher_temp, dim=-1).chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(n_crops):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


def test_loss_equals_official_double_loop_and_centre_ema():
    torch.manual_seed(0)
    objective = DINOObjective(16, out_dim=32, hidden_dim=24, bottleneck_dim=8, teacher_temp=0.05)
    objective.criterion.center.normal_()  # a non-zero centre, so centring is exercised
    center = objective.criterion.center.clone().view(1, 32)
    teacher_out, student_out = torch.randn(2 * 5, 32), torch.randn(6 * 5, 32)
    ours = objective.criterion(list(teacher_out.chunk(2)), list(student_out.chunk(6)), teacher_temp=0.05)
    torch.testing.assert_close(ours, official_dino_loss(student_out, teacher_out, center, 6, 0.05))
    # centre <- 0.9 centre + 0.1 * batch mean of the raw teacher logits (not probabilities)
    torch.testing.assert_close(objective.criterion.center.view(1, 32), 0.9 * center + 0.1 * teacher_out.mean(0))


def test_last_layer_frozen_in_first_epoch():
    torch.manual_seed(0)
    method = build_method(MethodChoice("dino", objective_kwargs=dict(out_dim=64, freeze_last_layer=1)),
                          BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    head = method.objective.student_heads["dino"]
    for epoch, frozen in ((0, True), (1, False)):
        method.zero_grad()
        views = method.make_views(images, torch.Generator().manual_seed(epoch))
        method.training_step(views, Progress(epoch, 0, 5, 10))["loss"].backward()
        method.objective.after_backward(Progress(epoch, 0, 5, 10))
        assert (head.last_layer.weight_v.grad is None) == frozen
        assert head.layers[0].weight.grad is not None


def test_teacher_sees_globals_only_and_diagnostics_decompose_the_loss():
    torch.manual_seed(0)
    method = build_method(MethodChoice("dino", objective_kwargs=dict(out_dim=64), view_kwargs=dict(n_local=2)),
                          BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
    seen = []
    method.teacher.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    losses = method.training_step(method.make_views(images, torch.Generator().manual_seed(0)), Progress(0, 0, 5, 10))
    assert seen == [torch.Size([6, 3, 32, 32])]  # both globals, one forward
    # loss = mean teacher entropy + mean KL(teacher || student)
    torch.testing.assert_close(losses["loss"].detach(), losses["teacher_entropy"] + losses["kl"])
    assert 0 < losses["teacher_entropy"] <= torch.log(torch.tensor(64.0)) + 1e-5
