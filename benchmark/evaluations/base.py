"""The evaluation contract and its registry.

An evaluation is a class registered with :func:`register_evaluation`. It declares its settings (a frozen dataclass
whose fields are the keys a matrix may set under ``fixed.evaluations.<name>``), what it reads (the method's global
readout, its patch-token map, or both) and what the evaluation dataset must provide (``labels``, ``masks``,
``copies``, ``retrieval``); ``run`` gets
an :class:`~patchbench.benchmark.features.EvalInputs` (cached features, labels, masks, the encoder) and returns an
:class:`EvalResult`. The harness turns that into one result record per (run, evaluation), shared by every
evaluation. Probe hyper-parameters are chosen on a held-out part of the training split, never on the test split.

External packages register evaluations through the entry-point group ``patchbench.evaluations`` (see
``examples/patchbench-ncm``); every registered evaluation runs through the generated contract tests
(``tests/benchmark/test_evaluation_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from patchbench.datasets import DatasetSource
from patchbench.methods.registry import Registry

from ..config import ConfigError

if TYPE_CHECKING:
    from ..features import EvalInputs

ENTRY_POINT_GROUP = "patchbench.evaluations"

Reads = Literal["global", "patches", "global+patches"]
READS = ("global", "patches", "global+patches")


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation measured. ``probe_hparams``: the grid, the chosen values and the trials' validation
    scores; ``selection_rule``: how the values were chosen (on which split, by which metric)."""

    metrics: dict[str, float]
    protocol: str
    probe_hparams: dict[str, Any]
    selection_rule: str


class Evaluation(ABC):
    """One evaluation protocol. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    settings_class: ClassVar[type]  # a frozen dataclass; its fields are the matrix keys, its defaults the protocol's
    reads: ClassVar[Reads]
    needs: ClassVar[frozenset[str]]  # what the evaluation dataset must provide (DatasetSource.provides)
    description: ClassVar[str]
    quick_settings: ClassVar[dict[str, Any]] = {}  # overrides that make the contract tests quick on embedded data

    def __init__(self, settings: Any):
        self.settings = settings

    def check_dataset(self, source: DatasetSource) -> None:
        """Refuse settings that this dataset cannot serve (raise :class:`ConfigError` saying what and how to fix it;
        the matrix path and evaluation are prefixed); called at matrix load."""

    @abstractmethod
    def run(self, inputs: EvalInputs) -> EvalResult:
        """Evaluate the run behind ``inputs``; deterministic for a given run, seed and settings."""


EVALUATIONS: Registry[type[Evaluation]] = Registry("evaluation", plugin_group=ENTRY_POINT_GROUP)


def register_evaluation(name: str):
    """Class decorator: register an :class:`Evaluation` subclass under ``name`` (duplicate names are refused)."""
    def decorator(cls: type[Evaluation]) -> type[Evaluation]:
        for attribute in ("settings_class", "reads", "needs", "description"):
            if not hasattr(cls, attribute):
                raise TypeError(f"evaluation '{name}' ({cls.__qualname__}) does not declare '{attribute}'")
        if cls.reads not in READS:
            raise TypeError(f"evaluation '{name}': reads must be one of {', '.join(READS)}, got {cls.reads!r}")
        return EVALUATIONS.register(name)(cls)
    return decorator


def setting_names(cls: type[Evaluation]) -> list[str]:
    return [f.name for f in fields(cls.settings_class)]


def check_serves(cls: type[Evaluation], source: DatasetSource, where: str) -> None:
    """Refuse a dataset that lacks what the evaluation needs, naming the evaluation, the dataset and what is
    missing."""
    missing = sorted(cls.needs - source.provides)
    if missing:
        raise ConfigError(
            f"{where}: evaluation '{cls.name}' needs {' and '.join(missing)}, which dataset '{source.name}' does not "
            f"provide (it provides {', '.join(sorted(source.provides)) or 'nothing'}). Evaluate on a dataset that "
            f"does (e.g. {cls.name}: {{dataset: NAME}}), or restrict it with {cls.name}: {{pretrained_on: [...]}}")
