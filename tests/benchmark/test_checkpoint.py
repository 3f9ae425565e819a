"""The checkpoint on its own (benchmark/train.py ``save`` / ``restore``): what a save holds comes back into a freshly
built method and optimiser, with the position and the RNG state; a checkpoint written by more ranks than the
resuming run restores rank 0's RNG state."""

from __future__ import annotations

import torch

from patchbench.benchmark.optim import param_groups
from patchbench.benchmark.train import Position, optimizer_step, restore, save
from patchbench.methods import BackboneConfig, MethodChoice, Progress, build_method

CPU = torch.device("cpu")


def patchwise(seed: int):
    torch.manual_seed(seed)
    choice = MethodChoice("patchwise", view_kwargs={"n_local": 1},
                          objective_kwargs={"out_dim": 16, "hidden_dim": 8, "bottleneck_dim": 4})
    method = build_method(choice, BackboneConfig(size="pico"), (0.5,) * 3, (0.25,) * 3)
    params = method.student_parameters()
    return method, params, torch.optim.AdamW(param_groups(params))


def test_save_then_restore_brings_back_weights_centre_optimiser_position_and_rng(tmp_path):
    method, params, optimizer = patchwise(0)
    views = method.make_views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.Generator())
    optimizer_step(method, optimizer, params, views, Progress(epoch=0, step=0, total_epochs=1, steps_per_epoch=1), 0,
                   lr=1e-3, weight_decay=0.04, momentum=0.99, clip_grad=3.0)  # Adam moments and a centre
    assert method.objective.center.abs().sum() > 0
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    save(tmp_path / "checkpoint.pt", method, optimizer, Position(epoch=1, batch=3, step=7), "run-x", CPU)
    expected_draw = torch.rand(4)  # what the global RNG gives next, after the save

    fresh, _, fresh_optimizer = patchwise(1)
    assert not torch.equal(fresh.objective.center, method.objective.center)
    assert restore(tmp_path / "checkpoint.pt", fresh, fresh_optimizer, CPU) == Position(epoch=1, batch=3, step=7)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(torch.rand(4), expected_draw)
    for key, value in method.state_dict().items():  # teacher, student, heads and the per-position centre
        assert torch.equal(fresh.state_dict()[key], value), key
    saved, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    for index, state in saved["state"].items():
        assert torch.equal(restored["state"][index]["exp_avg"], state["exp_avg"])
        assert torch.equal(restored["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["run_id"] == "run-x" and checkpoint["cuda_rng"] is None
    assert len(checkpoint["rng_per_rank"]) == 1 and torch.equal(checkpoint["rng"], rng)


def test_a_checkpoint_of_more_ranks_restores_rank_0s_rng_state(tmp_path):
    method, _, optimizer = patchwise(0)
    states = []
    for seed in (11, 12):
        torch.manual_seed(seed)
        states.append(torch.get_rng_state())
    torch.save({"method": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 2, "batch": 0,
                "step": 40, "rng": states[0], "rng_per_rank": states, "run_id": "two-ranks", "cuda_rng": None},
               tmp_path / "checkpoint.pt")
    torch.manual_seed(0)
    assert restore(tmp_path / "checkpoint.pt", method, optimizer, CPU) == Position(epoch=2, batch=0, step=40)
    assert torch.equal(torch.get_rng_state(), states[0])
