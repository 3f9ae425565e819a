"""Every setting a matrix can give a view strategy or an objective is documented where it is defined (an ``Args:``
entry), and ``patchbench methods --details NAME`` prints them with the method's values."""

from __future__ import annotations

import pytest

from patchbench.benchmark.cli import main
from patchbench.methods import METHODS, OBJECTIVES, VIEWS, MethodChoice, resolve_choice
from patchbench.methods.build import _args_section, setting_docs

YAML_WORDS = {True: "true", False: "false", None: "null"}


def yaml_text(value) -> str:
    """How a matrix writes the value: YAML's true/false/null and flow lists."""
    if isinstance(value, tuple):
        return "[" + ", ".join(map(yaml_text, value)) + "]"
    return YAML_WORDS[value] if isinstance(value, bool) or value is None else str(value)


COMPONENTS = [(VIEWS, name) for name in VIEWS.names()] + [(OBJECTIVES, name) for name in OBJECTIVES.names()]


def test_args_sections_are_read_as_written():
    doc = """Summary line.

    Args:
        alpha: the first setting,
            continued on a second line.
        beta: the second (default 2).

    Returns nothing.
    """
    assert _args_section(doc) == {"alpha": "the first setting, continued on a second line.",
                                  "beta": "the second (default 2)."}
    assert _args_section("No sections here.") == {}


@pytest.mark.parametrize("registry,name", COMPONENTS, ids=[f"{r.kind}-{n}" for r, n in COMPONENTS])
def test_every_constructor_setting_has_an_args_entry(registry, name):
    cls = registry.get(name)
    docs = setting_docs(cls)
    assert docs, f"{registry.kind} '{name}' has no settings"
    assert not [key for key, text in docs.items() if not text], f"{registry.kind} '{name}': undocumented settings"
    for klass in cls.__mro__:  # and no entry documents a setting that does not exist
        stale = set(_args_section(vars(klass).get("__doc__"))) - set(docs)
        assert not stale, f"{klass.__name__} documents {sorted(stale)}, which are not settings of '{name}'"


@pytest.mark.parametrize("name", METHODS.names())
def test_details_print_every_setting_with_the_methods_value_and_meaning(name, capsys):
    assert main(["methods", "--details", name]) == 0
    out = capsys.readouterr().out
    view, view_kwargs, objective, objective_kwargs = resolve_choice(MethodChoice(name))
    assert f"view strategy '{view}'" in out and f"objective '{objective}'" in out
    for component, registry, values in ((view, VIEWS, view_kwargs), (objective, OBJECTIVES, objective_kwargs)):
        docs = setting_docs(registry.get(component))
        for key, value in values.items():
            row = next(line for line in out.splitlines() if line.startswith(f"| {key} "))
            assert docs[key].split()[0] in row, (key, row)
            assert yaml_text(value).split()[0][:18] in row, (key, value, row)
