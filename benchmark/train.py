"""The pretraining loop, shared by every method (after DINO's ``main_dino.py::train_one_epoch``).

Per optimiser step: set lr and weight decay from their per-step cosine schedules, compute the method's losses
(bf16 autocast on CUDA), backward, let the objective adjust gradients (DINO freezes its last layer in epoch 0),
clip each parameter's gradient, step AdamW, EMA-update the teacher. Views are drawn from a generator seeded by
(seed, batch), and the data order by (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one: checkpoints (atomic, every epoch and every ``checkpoint_interval_min`` minutes) hold the
model, optimiser, position and RNG state. Losses are copied to the host every ``log_every`` steps, not every
step; a non-finite loss fails the run as ``diverged`` at the step where it first appeared.

Data-parallel runs (``ddp.py``) shard each batch's views over the ranks; rank 0 writes the log and checkpoints.
A ``stop`` callable (the preemption signal, see ``jobs.py``) is polled at every batch boundary: when it fires, a
checkpoint is saved there and :class:`Preempted` is raised, so the job can be requeued and resume exactly.

Split as DINO's ``main_dino.py``: :func:`setup` (method, data, optimiser, schedules), :func:`restore` /
:func:`save` (the checkpoint and the position it holds), :func:`train_one_epoch` and :func:`pretrain`, which
ties them together.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from lightly.models.utils import update_momentum
from tqdm import tqdm

from patchbench.datasets import ImageSet, build_dataset
from patchbench.methods import Progress, SSLMethod, Views, build_method
from patchbench.methods.distributed import all_reduce_mean

from . import ddp
from .config import RunSpec
from .optim import clip_per_parameter, cosine_schedule, param_groups
from .store import RunDir, atomic_torch_save, atomic_write_json

COLLAPSE_KL = 1e-2  # nats: a student–teacher KL this small at the end of training means a collapsed run
NOT_MEASURED = "not measured"  # the collapse flag of an objective that returns no ``kl`` diagnostic


class Preempted(Exception):
    """Training stopped on request after saving a checkpoint at (epoch, batch)."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(f"stopped on request; checkpoint saved at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


class Diverged(RuntimeError):
    """The loss became non-finite."""

    def __init__(self, step: int, epoch: int):
        super().__init__(f"non-finite loss at step {step} (epoch {epoch})")
        self.step, self.epoch = step, epoch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def view_generator(seed: int, batch_index: int) -> torch.Generator:
    """The augmentation RNG of one loaded batch, a pure function of (seed, batch index)."""
    state = np.random.SeedSequence([seed, batch_index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def loader_workers(configured: int | None) -> int:
    """DataLoader worker processes of this process: ``runtime.num_workers`` when set; else, in a SLURM job, one fewer
    than the CPUs of its task (``SLURM_CPUS_PER_TASK``, the matrix's ``slurm.cpus_per_task``; the training process
    keeps one); else 0, decoding in the training process."""
    if configured is not None:
        return configured
    return max(int(os.environ.get("SLURM_CPUS_PER_TASK", 1)) - 1, 0)


def batches(data: ImageSet, order: np.ndarray, batch_size: int, start: int, num_workers: int,
            pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """uint8 image batches of the epoch ``order``, from batch ``start`` on (drop_last, as DINO). On-disk sets are
    decoded, and brought to their fixed size, in ``num_workers`` DataLoader workers."""
    index = [order[i * batch_size:(i + 1) * batch_size] for i in range(start, len(order) // batch_size)]
    if data.images is not None:
        for idx in index:
            yield data.images[torch.from_numpy(idx)]
        return
    loader = torch.utils.data.DataLoader(data, batch_sampler=[idx.tolist() for idx in index], num_workers=num_workers,
                                         persistent_workers=False, pin_memory=pin_memory)
    for images, _ in loader:
        yield images


def build_for_spec(spec: RunSpec, device: torch.device) -> tuple[SSLMethod, Any]:
    """The method of a run (seeded), on ``device``, and its dataset source."""
    source = build_dataset(spec.dataset, spec.runtime.data_root, spec.image_size)
    torch.manual_seed(spec.seed)
    method = build_method(spec.choice(), spec.backbone, source.mean, source.std).to(device)
    return method, source


class TrainLog:
    """The per-step train log (jsonl); on resume it is cut back to the checkpoint's step."""

    def __init__(self, run: RunDir, resume_step: int):
        self.path = run.train_log
        self.writer = ddp.rank() == 0
        if self.writer and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] < resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.pending: list[tuple[dict[str, Any], dict[str, torch.Tensor]]] = []

    def add(self, info: dict[str, Any], losses: dict[str, torch.Tensor]) -> None:
        self.pending.append((info, {k: v.detach() for k, v in losses.items()}))

    def flush(self) -> list[dict[str, Any]]:
        """Write pending steps (one host copy for all of them); raise :class:`Diverged` at a non-finite loss."""
        if not self.pending:
            return []
        keys = list(self.pending[0][1])
        values = torch.stack([torch.stack([losses[k].float() for k in keys]) for _, losses in self.pending])
        reduced = all_reduce_mean(values).cpu().tolist()  # the global batch's losses on every rank
        rows = [{**info, **dict(zip(keys, vals))} for (info, _), vals in zip(self.pending, reduced)]
        self.pending.clear()
        bad = next((row for row in rows if not math.isfinite(row["loss"])), None)
        if self.writer:
            with self.path.open("a") as f:
                for row in rows[:rows.index(bad) if bad else None]:
                    f.write(json.dumps(row) + "\n")
        if bad is not None:
            raise Diverged(bad["step"], bad["epoch"])
        return rows


def optimizer_step(method: SSLMethod, optimizer: torch.optim.Optimizer, params: list[tuple[str, torch.nn.Parameter]],
                   views: Views, progress: Progress, substep: int, *, lr: float, weight_decay: float,
                   momentum: float, clip_grad: float,
                   training_step: Callable[[Views, Progress, int], dict[str, torch.Tensor]] | None = None,
                   ) -> dict[str, torch.Tensor]:
    """One optimiser step of ``method`` on ``views``, then the EMA update of its teacher; returns the losses.
    ``training_step`` replaces ``method.training_step`` (the DDP-wrapped step of ``ddp.wrap``)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:  # only the first group decays (DINO's get_params_groups)
            group["weight_decay"] = weight_decay
    device_type = views.crops[0].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
        losses = (training_step or method.training_step)(views, progress, substep)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    method.objective.after_backward(progress)
    if clip_grad > 0:
        clip_per_parameter([p for _, p in params], clip_grad)
    optimizer.step()
    with torch.no_grad():
        for student, teacher in method.ema_pairs():
            update_momentum(student, teacher, momentum)
    return losses


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class Position:
    """Where training stands: the next batch to load (``epoch``, ``batch``) and the optimiser steps taken."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class Training:
    """Everything a run trains with, built once by :func:`setup` (DINO's ``train_dino`` before its epoch loop)."""

    spec: RunSpec
    device: torch.device
    method: SSLMethod
    data: ImageSet
    optimizer: torch.optim.Optimizer
    params: list[tuple[str, torch.nn.Parameter]]
    lr: np.ndarray  # one value per optimiser step
    wd: np.ndarray
    momentum: np.ndarray
    batches_per_epoch: int
    steps_per_epoch: int  # optimiser steps
    training_step: Callable[[Views, Progress, int], dict[str, torch.Tensor]]


def setup(spec: RunSpec) -> Training:
    """The seeded method on its device, the training data, AdamW with DINO's parameter groups and the per-step
    schedules; refuses a batch size the data or the ranks cannot take."""
    device = ddp.training_device(spec.runtime.device)
    method, source = build_for_spec(spec, device)
    data = source.load("train")
    batch_size, epochs, world = spec.budget.batch_size, spec.budget.epochs, ddp.world_size()
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} cannot be split over {world} GPUs; use a multiple of {world}")
    batches_per_epoch = len(data) // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {len(data)} training images of '{spec.dataset}'")
    steps_per_epoch = batches_per_epoch * method.steps_per_batch

    # Schedules, one value per optimiser step (DINO: lr scaled linearly with the batch size, base 256).
    o = spec.optim
    lr = cosine_schedule(o.lr * batch_size / 256, o.min_lr, epochs, steps_per_epoch, o.warmup_epochs)
    wd = cosine_schedule(o.weight_decay, o.weight_decay_end, epochs, steps_per_epoch)
    momentum = cosine_schedule(o.momentum_teacher, 1.0, epochs, steps_per_epoch)
    params = method.student_parameters()
    optimizer = torch.optim.AdamW(param_groups(params))
    return Training(spec, device, method, data, optimizer, params, lr, wd, momentum, batches_per_epoch,
                    steps_per_epoch, ddp.wrap(method, device))


def restore(checkpoint: Path, method: SSLMethod, optimizer: torch.optim.Optimizer,
            device: torch.device) -> Position:
    """Load a checkpoint written by :func:`save` into ``method`` and ``optimizer``, set this rank's torch RNG
    state (and CUDA's) to the saved one, and return the position to continue from (DINO's
    ``utils.py::restart_from_checkpoint``).

    Each rank takes its own saved RNG state when the world size is unchanged, else rank 0's.
    """
    ckpt = torch.load(checkpoint, map_location=device, weights_only=False)
    method.load_state_dict(ckpt["method"])
    optimizer.load_state_dict(ckpt["optimizer"])
    rngs = ckpt.get("rng_per_rank") or [ckpt["rng"]]
    torch.set_rng_state(rngs[ddp.rank()] if len(rngs) == ddp.world_size() else ckpt["rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    return Position(ckpt["epoch"], ckpt["batch"], ckpt["step"])


def save(checkpoint: Path, method: SSLMethod, optimizer: torch.optim.Optimizer, position: Position, run_id: str,
         device: torch.device) -> None:
    """Write the checkpoint atomically on rank 0: model (with centres), optimiser, position and every rank's RNG
    state. A collective: every rank calls it."""
    rngs = ddp.gather_objects(torch.get_rng_state())
    if ddp.rank() == 0:
        atomic_torch_save(checkpoint, {
            "method": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": position.epoch,
            "batch": position.batch, "step": position.step, "rng": rngs[0], "rng_per_rank": rngs, "run_id": run_id,
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})


class Checkpointer:
    """Saves the run's checkpoint at a batch boundary, on request and every ``checkpoint_interval_min`` minutes,
    after writing the pending log (never past a non-finite loss)."""

    def __init__(self, run: RunDir, t: Training, log: TrainLog):
        self.run, self.t, self.log = run, t, log
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.t.spec.runtime.checkpoint_interval_min * 60

    def save(self, epoch: int, batch: int, step: int) -> None:
        self.log.flush()
        save(self.run.checkpoint, self.t.method, self.t.optimizer, Position(epoch, batch, step), self.t.spec.run_id,
             self.t.device)
        self.last = time.monotonic()


def train_one_epoch(t: Training, epoch: int, position: Position, log: TrainLog, checkpoints: Checkpointer,
                    bar: tqdm, stop: Callable[[], bool] | None) -> int:
    """Epoch ``epoch`` from batch ``position.batch``, advancing ``position.step``; returns the images seen.

    At every batch boundary the ranks agree whether to stop or checkpoint; on a stop, the checkpoint is saved and
    :class:`Preempted` raised.
    """
    spec, method = t.spec, t.method
    rank, world, epochs = ddp.rank(), ddp.world_size(), spec.budget.epochs
    interactive = sys.stderr.isatty() and rank == 0
    order = epoch_order(spec.seed, epoch, len(t.data))
    images_seen = 0
    for batch_index, images in enumerate(batches(t.data, order, spec.budget.batch_size, position.batch,
                                                 loader_workers(spec.runtime.num_workers),
                                                 pin_memory=t.device.type == "cuda"), start=position.batch):
        images = images.to(t.device, non_blocking=True)
        views = method.make_views(images, view_generator(spec.seed, epoch * t.batches_per_epoch + batch_index))
        views = ddp.shard_views(views, rank, world)
        for substep in range(method.steps_per_batch):
            step = position.step
            progress = Progress(epoch=epoch, step=step, total_epochs=epochs, steps_per_epoch=t.steps_per_epoch)
            losses = optimizer_step(method, t.optimizer, t.params, views, progress, substep, lr=float(t.lr[step]),
                                    weight_decay=float(t.wd[step]), momentum=float(t.momentum[step]),
                                    clip_grad=spec.optim.clip_grad, training_step=t.training_step)
            log.add({"step": step, "epoch": epoch, "lr": float(t.lr[step]), "wd": float(t.wd[step]),
                     **({"momentum": float(t.momentum[step])} if method.teacher is not None else {})}, losses)
            position.step += 1
            bar.update(1)
        images_seen += len(images)
        if len(log.pending) >= spec.runtime.log_every:
            rows = log.flush()
            if rows and not interactive and rank == 0:
                print(f"epoch {epoch + 1}/{epochs} step {position.step}/{epochs * t.steps_per_epoch} "
                      f"loss {rows[-1]['loss']:.4f}", flush=True)
        stopping, due = ddp.any_rank(stop is not None and stop(), checkpoints.due())
        if stopping or due:
            checkpoints.save(epoch, batch_index + 1, position.step)
        if stopping:
            bar.close()
            raise Preempted(epoch, batch_index + 1)
    return images_seen


def pretrain(spec: RunSpec, run: RunDir, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train ``spec`` in ``run`` (resuming from its checkpoint if any); return the train summary.

    Raises :class:`Preempted` after checkpointing when ``stop()`` turns true, :class:`Diverged` on a non-finite loss.
    """
    t = setup(spec)
    rank, epochs = ddp.rank(), spec.budget.epochs
    position = Position()
    if run.checkpoint.exists():
        position = restore(run.checkpoint, t.method, t.optimizer, t.device)
        if rank == 0:
            print(f"resumed from checkpoint at epoch {position.epoch}, batch {position.batch} "
                  f"(step {position.step})", flush=True)
    log = TrainLog(run, resume_step=position.step)
    checkpoints = Checkpointer(run, t, log)
    interactive = sys.stderr.isatty() and rank == 0
    bar = tqdm(total=epochs * t.steps_per_epoch, initial=position.step, disable=not interactive, desc=spec.method)
    images_seen, started = 0, time.perf_counter()
    t.method.train()
    for epoch in range(position.epoch, epochs):
        images_seen += train_one_epoch(t, epoch, position, log, checkpoints, bar, stop)
        position.epoch, position.batch = epoch + 1, 0
        checkpoints.save(epoch + 1, 0, position.step)
    bar.close()
    wall = time.perf_counter() - started
    if rank != 0:
        return {}
    summary = summarise(run, epochs, t.steps_per_epoch)
    if summary["collapsed"] == NOT_MEASURED:
        print(f"warning: collapse not measured: objective '{spec.objective}' returns no 'kl' diagnostic "
              "(docs/plugins.md)", file=sys.stderr, flush=True)
    summary.update(images_per_s=images_seen / wall if images_seen else None, wall_s=wall,
                   peak_memory_mb=peak_memory_mb(t.device), device=str(t.device), world_size=ddp.world_size(),
                   device_name=torch.cuda.get_device_name(t.device) if t.device.type == "cuda" else "cpu")
    atomic_write_json(run.train_summary, summary)
    return summary


def summarise(run: RunDir, epochs: int, steps_per_epoch: int) -> dict[str, Any]:
    """Last-epoch means of every logged quantity, and the collapse flag (DINO paper §5.3: KL → 0).

    ``collapsed`` is "not measured" when the objective logs no ``kl`` (docs/plugins.md, Diagnostics).
    """
    rows = [json.loads(line) for line in run.train_log.read_text().splitlines() if line]
    last = [r for r in rows if r["epoch"] == epochs - 1]
    keys = [k for k in last[0] if k not in ("step", "epoch")] if last else []
    final = {k: float(np.mean([r[k] for r in last])) for k in keys}
    collapsed = bool(final["kl"] < COLLAPSE_KL) if "kl" in final else NOT_MEASURED
    return {"epochs": epochs, "steps": epochs * steps_per_epoch, "final": final, "collapsed": collapsed}


if __name__ == "__main__":  # python -m patchbench.benchmark.train RUN_DIR  (resumes if a checkpoint exists)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # torchrun-style environment: RANK, WORLD_SIZE, MASTER_ADDR/PORT
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    run = RunDir(Path(sys.argv[1]))
    with run.lock("pretrain") if ddp.rank() == 0 else contextlib.nullcontext():
        summary = pretrain(run.read_spec(), run)
    if ddp.rank() == 0:
        print(json.dumps(summary, indent=2))
