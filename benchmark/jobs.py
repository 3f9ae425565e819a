"""The jobs a runner submits: pretraining and evaluation of one run folder, with its state kept up to date.

Both are plain top-level functions of the run folder's path, so they pickle for any submitit executor and rebuild
everything from disk (the spec is read from ``spec.yaml``).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch

from .evaluate import knn_record
from .store import RunDir
from .train import Diverged, pretrain


def pretrain_job(run_path: str) -> str:
    """Pretrain the run in ``run_path``; record ``failed: diverged|oom|error`` on failure."""
    run = RunDir(Path(run_path))
    spec = run.read_spec()
    run.set_state("running", stage="pretrain")
    try:
        pretrain(spec, run)
    except Diverged as err:
        run.set_state("failed", reason="diverged", step=err.step, epoch=err.epoch, message=str(err))
        return "diverged"
    except torch.cuda.OutOfMemoryError as err:
        run.set_state("failed", reason="oom", message=str(err))
        raise
    except Exception as err:
        run.set_state("failed", reason="error", message=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
        raise
    run.set_state("running", stage="pretrained")
    return "pretrained"


def eval_job(run_path: str) -> str:
    """Evaluate the run in ``run_path`` (k-NN) and mark it done."""
    run = RunDir(Path(run_path))
    spec = run.read_spec()
    run.set_state("running", stage="eval")
    try:
        run.write_record(knn_record(spec, run))
    except Exception as err:
        run.set_state("failed", reason="error", message=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
        raise
    run.set_state("done")
    return "done"
