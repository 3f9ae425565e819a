"""The evaluation registry: the built-in evaluations are listed; duplicate names and incomplete declarations are
refused. (An external evaluation package: tests/methods/test_plugin.py.)"""

from __future__ import annotations

import pytest


def test_builtin_evaluations_are_listed(capsys):
    from patchbench.benchmark.cli import main

    assert main(["evaluations"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) >= {"knn", "linear", "dense", "copydetect", "retrieval"}
    assert "| patches " in rows["dense"] and "| masks " in rows["dense"] and "| labels " in rows["linear"]
    assert "| global+patches " in rows["copydetect"] and "| copies " in rows["copydetect"]
    assert "| retrieval " in rows["retrieval"]


def test_duplicate_names_and_incomplete_declarations_are_refused():
    from dataclasses import dataclass

    from patchbench.benchmark.evaluations import Evaluation, register_evaluation
    from patchbench.methods import RegistryError

    @dataclass(frozen=True)
    class Settings:
        pass

    class Again(Evaluation):
        settings_class, reads, needs, description = Settings, "global", frozenset(), "a second knn"

        def run(self, inputs):
            raise AssertionError

    with pytest.raises(RegistryError, match="evaluation 'knn' is already registered"):
        register_evaluation("knn")(Again)

    class NoReads(Evaluation):
        settings_class, needs, description = Settings, frozenset(), "reads nothing"

        def run(self, inputs):
            raise AssertionError

    with pytest.raises(TypeError, match="evaluation 'incomplete' .* does not declare 'reads'"):
        register_evaluation("incomplete")(NoReads)
