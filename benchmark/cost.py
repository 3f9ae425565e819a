"""What a matrix will cost before it is submitted: estimated GPU-hours and wall time per resource class and in total.

The estimates are **FLOP-based, not measured**: no GPU figure of this harness is recorded yet (docs/benchmarks.md).
A job's FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only, no
arithmetic), for the backbone alone:

- pretraining, per image: 3 × the student backbone's forward over every view (forward + backward ≈ 3 forwards),
  over each optimiser step of the batch with the patches it keeps (APS's ``keep``), plus one teacher forward over
  the global views where the objective has a teacher; times epochs × the images of the epochs (drop_last);
- evaluation: one forward over the train and test images of each (dataset, readout) the cell's evaluations read
  (the feature cache, ``features.py``); the probes' own training on cached features is not counted.

Projection heads, losses, views and the data pipeline are not counted, so these are lower bounds for the methods
whose heads see every token (Patch-Wise, SelfPatch, iBOT's patch head; docs/benchmarks.md measures about 2× DINO's
step time for Patch-Wise on the CPU). FLOPs become time through :data:`GPU_TFLOPS` (dense bf16 peak of the data
sheet, ``cluster.GPU_TFLOPS``) × :data:`UTILISATION` (assumed). The GPU model is the cluster's (``gpu:`` in the
cluster file, ``cluster.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol, runtime_checkable

import torch
from torch.utils.flop_counter import FlopCounterMode

from patchbench.datasets import build_dataset
from patchbench.methods import OBJECTIVES, VIEWS, BackboneConfig, ViTEncoder

from .cluster import GPU_TFLOPS
from .config import RunSpec
from .evaluations import EVALUATIONS
from .resources import SlurmResources

UTILISATION = 0.3  # assumed share of the peak a ViT-S/16 training step sustains (not measured)
LOADER_IMAGES_PER_S_PER_WORKER = 100.0  # decode + first resize of an ImageNet JPEG at 224 px, docs/benchmarks.md


@lru_cache(maxsize=None)
def _meta_encoder(backbone: BackboneConfig) -> ViTEncoder:
    """The backbone on the meta device (shapes only); it takes any image size (``dynamic_img_size``)."""
    with torch.device("meta"):
        return ViTEncoder(backbone)


@lru_cache(maxsize=None)
def forward_flops(backbone: BackboneConfig, size: int, keep: int | None = None) -> int:
    """FLOPs of one backbone forward of one ``size`` × ``size`` image (``keep``: patch tokens kept, as APS)."""
    with torch.device("meta"):
        images = torch.empty(1, 3, size, size)
        kept = torch.zeros(1, keep, dtype=torch.long) if keep is not None else None
    with FlopCounterMode(display=False) as counter:
        _meta_encoder(backbone)(images, keep=kept)
    return counter.get_total_flops()


@runtime_checkable
class SizedViews(Protocol):
    """A view strategy that lists its crop sizes (every :class:`patchbench.methods.views.CropPipeline`)."""

    def view_sizes(self) -> list[int]: ...


def pretrain_flops_per_image(spec: RunSpec) -> int:
    """Backbone FLOPs of one training image of ``spec`` (module docstring)."""
    assert spec.view is not None and spec.objective is not None  # a pretrained method's spec names both
    objective = OBJECTIVES.get(spec.objective)
    view = VIEWS.get(spec.view)(image_size=spec.backbone.img_size, patch_size=spec.backbone.patch_size,
                                mean=(0.0,) * 3, std=(1.0,) * 3, **spec.view_kwargs)
    backbone = replace(spec.backbone, **objective.backbone_overrides)
    steps = int(spec.objective_kwargs.get("steps_per_batch", objective.steps_per_batch))
    keep = getattr(view, "n_keep", None) if "keep" in objective.requires else None
    assert isinstance(view, SizedViews), f"view strategy '{spec.view}' has no view_sizes()"
    sizes = view.view_sizes()
    student = steps * sum(forward_flops(backbone, s, keep) for s in sizes)
    teacher = sum(forward_flops(backbone, s) for s in sizes[:view.n_global]) if objective.uses_teacher else 0
    return 3 * student + teacher


@lru_cache(maxsize=None)
def _split_sizes(dataset: str, data_root: str | None, image_size: int | None) -> tuple[int, int, int]:
    source = build_dataset(dataset, data_root, image_size)
    return len(source.load("train")), len(source.load("test")), source.image_size


def eval_flops(spec: RunSpec, evaluations: list[str]) -> int:
    """Forward FLOPs of the feature extraction of ``evaluations`` of ``spec`` (one per dataset and readout)."""
    if spec.method == "raw-pixels":
        return 0
    backbone = spec.backbone
    if not spec.is_reference:
        assert spec.objective is not None  # a pretrained method's spec names its objective
        backbone = replace(backbone, **OBJECTIVES.get(spec.objective).backbone_overrides)
    reads = {(spec.evaluations[name]["dataset"], EVALUATIONS.get(name).reads) for name in evaluations}
    total = 0
    for dataset, _ in reads:
        size = spec.image_size if dataset == spec.dataset else None
        train, test, side = _split_sizes(dataset, spec.runtime.data_root, size)
        total += (train + test) * forward_flops(backbone, side)
    return total


@dataclass
class ClassCost:
    """The jobs of one stage kind on one resource class."""

    stage: str  # pretrain or evaluate
    resources: SlurmResources
    jobs: int = 0
    flops: float = 0.0
    longest_job_flops: float = 0.0
    serial_flops_per_gpu: float = 0.0  # the jobs' FLOPs each divided by its GPUs: their wall time one after another
    cheapest_image_flops: float = math.inf  # pretraining: the fewest FLOPs per image (the fastest input rate)
    decodes_files: bool = False  # pretraining: some job reads a dataset decoded per image (DataLoader workers)

    @property
    def gpus_per_job(self) -> int:
        return self.resources.nodes * self.resources.gpus_per_node

    def gpu_hours(self, gpu: str) -> float:
        return self.flops / sustained_flops(gpu) / 3600

    def wall_hours(self, gpu: str) -> float:
        """Of the longest job, on its GPUs (data parallel, assumed to scale linearly)."""
        return self.longest_job_flops / sustained_flops(gpu) / max(self.gpus_per_job, 1) / 3600


def sustained_flops(gpu: str) -> float:
    return GPU_TFLOPS[gpu] * 1e12 * UTILISATION


def matrix_costs(pretrain: list, evaluate: list[tuple], train_sizes: dict[str, int],
                 decoded: frozenset[str]) -> list[ClassCost]:
    """Cost per (stage, resource class) of the pretraining ``Cell``s and the (``Cell``, evaluation names) of a
    plan; ``train_sizes``: training images per dataset; ``decoded``: the datasets decoded image by image."""
    classes: dict[tuple[str, SlurmResources], ClassCost] = {}

    def add(stage: str, resources: SlurmResources, flops: float) -> ClassCost:
        cost = classes.setdefault((stage, resources), ClassCost(stage, resources))
        cost.jobs += 1
        cost.flops += flops
        cost.longest_job_flops = max(cost.longest_job_flops, flops)
        cost.serial_flops_per_gpu += flops / max(cost.gpus_per_job, 1)
        return cost

    for cell in pretrain:
        spec = cell.spec
        batch = spec.budget.batch_size
        images = spec.budget.epochs * (train_sizes[spec.dataset] // batch) * batch
        per_image = pretrain_flops_per_image(spec)
        cost = add("pretrain", cell.pretrain, images * per_image)
        cost.cheapest_image_flops = min(cost.cheapest_image_flops, per_image)
        cost.decodes_files = cost.decodes_files or spec.dataset in decoded
    for cell, evaluations in evaluate:
        cost = add("evaluate", cell.evaluate, eval_flops(cell.spec, evaluations))
        cost.jobs += len(evaluations) - 1  # one job per evaluation; the extraction is counted once per readout
    return list(classes.values())


def hours(value: float) -> str:
    """Three significant digits below 100 h (fixture-sized matrices estimate fractions of a second), whole hours
    above."""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def describe(resources: SlurmResources) -> str:
    """A resource class in a few words, e.g. ``1 node × 4 GPU, 10 CPU/task, 64G (gpu)``."""
    where = f" ({resources.partition})" if resources.partition else ""
    return (f"{resources.nodes} node × {resources.gpus_per_node} GPU, {resources.cpus_per_task} CPU/task, "
            f"{resources.mem}{where}")


@dataclass(frozen=True)
class Estimate:
    rows: list[tuple]  # one per (stage, resource class)
    gpu_hours: float  # every GPU job
    parallel_wall_h: float  # every array at once: the longest pretraining, then the longest evaluation
    serial_wall_h: float  # one job after another
    cpu_jobs: int  # jobs without a GPU: not estimated

    HEADERS = ("stage", "resources", "jobs", "GPU-hours", "wall h (longest job)", "time limit (h)",
               "loader workers (need / have)")


def estimate(costs: list[ClassCost], gpu: str, num_workers: int | None) -> Estimate:
    """The rows of the cost table and the totals; ``num_workers``: the matrix's ``runtime.num_workers`` (None:
    ``slurm.cpus_per_task`` − 1, ``train.loader_workers``)."""
    rows, gpu_hours, serial, cpu_jobs = [], 0.0, 0.0, 0
    longest = {"pretrain": 0.0, "evaluate": 0.0}
    for cost in sorted(costs, key=lambda c: (c.stage != "pretrain", describe(c.resources))):
        limit_h = cost.resources.timeout_min() / 60
        if cost.gpus_per_job == 0:
            cpu_jobs += cost.jobs
            rows.append((cost.stage, describe(cost.resources), cost.jobs, "CPU: not estimated", "-", f"{limit_h:.1f}",
                         "-"))
            continue
        wall = cost.wall_hours(gpu)
        longest[cost.stage] = max(longest[cost.stage], wall)
        gpu_hours += cost.gpu_hours(gpu)
        serial += cost.serial_flops_per_gpu / sustained_flops(gpu) / 3600
        workers = "-"
        if cost.stage == "pretrain" and cost.decodes_files:
            have = num_workers if num_workers is not None else cost.resources.cpus_per_task - 1
            need = workers_needed(cost, gpu)
            workers = f"{need} / {have}" + (" (too few)" if have < need else "")
        requeues = math.ceil(wall / limit_h) - 1
        rows.append((cost.stage, describe(cost.resources), cost.jobs, hours(cost.gpu_hours(gpu)), hours(wall),
                     f"{limit_h:.1f}" + (f" ({requeues} requeues)" if requeues > 0 and cost.stage == "pretrain"
                                         else " (too short)" if requeues > 0 else ""), workers))
    return Estimate(rows, gpu_hours, longest["pretrain"] + longest["evaluate"], serial, cpu_jobs)


def workers_needed(cost: ClassCost, gpu: str) -> int:
    """DataLoader workers each rank needs to decode images as fast as the job's GPUs train on them: every rank
    reads the whole global batch (``ddp.py`` shards the views, not the images), so each needs the job's images/s,
    at :data:`LOADER_IMAGES_PER_S_PER_WORKER` per worker."""
    images_per_s = max(cost.gpus_per_job, 1) * sustained_flops(gpu) / cost.cheapest_image_flops
    return math.ceil(images_per_s / LOADER_IMAGES_PER_S_PER_WORKER)
