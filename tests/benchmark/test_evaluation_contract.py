"""Contract tests generated from the evaluation registry: every registered evaluation, plugins included, must pass.

Each runs through the harness's own path (``evaluate``: settings resolved and checked, features extracted into the
run's cache, the record assembled) on an embedded dataset that provides what it needs, with the random-init
encoder of a pico ViT: the record follows the result schema, it names the readout and settings it used, and a second
evaluation of the same run gives identical figures (reading the cached features).
"""

from __future__ import annotations

import pytest

from patchbench.benchmark.config import make_spec
from patchbench.benchmark.evaluate import evaluate, resolve_evaluations
from patchbench.benchmark.evaluations import EVALUATIONS
from patchbench.benchmark.store import run_dir
from patchbench.datasets import DATASETS, build_dataset
from patchbench.reports import SCHEMA_VERSION, validate_record

EVALUATION_NAMES = EVALUATIONS.names()


def embedded_dataset_for(cls) -> str:
    """The first embedded dataset that provides what the evaluation needs."""
    for name in sorted(DATASETS):
        source = build_dataset(name)
        if source.embedded and cls.needs <= source.provides:
            return name
    pytest.fail(f"no embedded dataset provides {sorted(cls.needs)} for evaluation '{cls.name}'")


@pytest.mark.parametrize("name", EVALUATION_NAMES)
def test_evaluation_record_follows_the_schema_and_repeats_exactly(name, tmp_path):
    cls = EVALUATIONS.get(name)
    dataset = embedded_dataset_for(cls)
    evaluations = resolve_evaluations({name: dict(cls.quick_settings)}, dataset, {}, None, "contract")
    spec = make_spec(matrix="contract", method="random-init", dataset=dataset, seed=0, image_size=32,
                     backbone={"size": "pico", "patch_size": 4}, evaluations=evaluations)
    run = run_dir(tmp_path, spec)
    first = validate_record({"schema": SCHEMA_VERSION, **evaluate(spec, run, name)})
    assert first["eval"] == name and first["dataset"] == dataset and first["method"] == "random-init"
    assert first["probe_hparams"]["settings"] == spec.evaluations[name]
    readouts = {"global": "cls", "patches": "patch_tokens"}
    assert first["probe_hparams"]["readout"] == "+".join(readouts[part] for part in cls.reads.split("+"))
    assert all(0.0 <= v <= 1.0 for v in first["metrics"].values()), first["metrics"]
    cached = sorted((run.path / "features").iterdir())
    assert len(cached) >= 2  # e.g. the train and test features of the declared readout
    second = evaluate(spec, run, name)
    assert second["metrics"] == first["metrics"]
    assert sorted((run.path / "features").iterdir()) == cached
