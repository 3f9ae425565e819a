"""The trainer's optimisation pieces against facebookresearch/dino ``utils.py`` (``cosine_scheduler``,
``clip_gradients``, ``get_params_groups``)."""

import numpy as np
import torch
from torch import nn

from patchbench.benchmark.optim import clip_per_parameter, cosine_schedule, param_groups
from patchbench.methods.dino import teacher_temperature


def test_cosine_schedule_shape_and_endpoints():
    s = cosine_schedule(1e-3, 1e-6, epochs=10, steps_per_epoch=7, warmup_epochs=2, start_warmup=0.0)
    assert len(s) == 70
    assert s[0] == 0.0
    assert np.isclose(s[13], 1e-3)  # last warm-up value is the base value
    assert np.isclose(s[14], 1e-3)  # cosine starts at base
    assert np.isclose(s[-1], 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + np.cos(np.pi * 55 / 56)))  # ends near final
    assert np.all(np.diff(s[14:]) <= 0)


def test_cosine_schedule_matches_hand_formula():
    # 1 epoch of 4 steps, no warm-up: final + (base - final)/2 * (1 + cos(pi * i / 4))
    s = cosine_schedule(1.0, 0.0, epochs=1, steps_per_epoch=4)
    np.testing.assert_allclose(s, [1.0, 0.8535533905932737, 0.5, 0.14644660940672627])


def test_teacher_temperature_warmup():
    assert teacher_temperature(0, 100, 0.04, 0.07, 30) == 0.04
    assert np.isclose(teacher_temperature(29, 100, 0.04, 0.07, 30), 0.07)
    assert teacher_temperature(30, 100, 0.04, 0.07, 30) == 0.07
    assert np.isclose(teacher_temperature(15, 100, 0.04, 0.07, 30), 0.04 + 0.03 * 15 / 29)
    assert teacher_temperature(5, 10, 0.04, 0.04, 0) == 0.04


def test_clip_is_per_parameter_not_global():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(3))
    a.grad = torch.tensor([6.0, 8.0, 0.0, 0.0])  # norm 10 -> scaled to ~3
    b.grad = torch.tensor([0.6, 0.8, 0.0])  # norm 1 -> unchanged
    norms = clip_per_parameter([a, b], 3.0)
    np.testing.assert_allclose(norms.numpy(), [10.0, 1.0], rtol=1e-6)
    assert torch.allclose(a.grad.norm(), torch.tensor(3.0), atol=1e-5)
    assert torch.equal(b.grad, torch.tensor([0.6, 0.8, 0.0]))


def test_param_groups_exclude_biases_and_norms():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    groups = param_groups(list(model.named_parameters()))
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([4, 3])]
    assert sorted(p.numel() for p in groups[1]["params"]) == [4, 4, 4]
    assert groups[1]["weight_decay"] == 0.0
