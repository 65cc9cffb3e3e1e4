"""Every hook spec documents itself: the docstrings are the plugin documentation.

A spec without a docstring, or with a parameter lacking its ``:param name:``
line or a type annotation, fails here (as in datasette's ``test_docs.py``).
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

import pytest

from agentd import hookspecs
from agentd.plugin_manager import pm

SPEC_MARK = f"{hookspecs.PROJECT_NAME}_spec"  # the attribute pluggy's HookspecMarker sets


def _specs(module: object) -> dict[str, Callable]:
    return {name: value for name, value in vars(module).items() if callable(value) and hasattr(value, SPEC_MARK)}


def spec_problems(spec: Callable) -> list[str]:
    """What is missing from ``spec``'s documentation (empty when complete)."""
    doc = inspect.getdoc(spec)
    if not doc or not doc.strip():
        return ["no docstring"]
    problems = []
    summary = doc.splitlines()[0].strip()
    if not summary.endswith("."):
        problems.append("docstring should open with a one-sentence summary")
    signature = inspect.signature(spec)
    for name, parameter in signature.parameters.items():
        if not re.search(rf"^\s*:param {re.escape(name)}:\s*\S", doc, flags=re.MULTILINE):
            problems.append(f"parameter {name!r} has no ':param {name}:' line")
        if parameter.annotation is inspect.Parameter.empty:
            problems.append(f"parameter {name!r} has no type annotation")
    documented = set(re.findall(r"^\s*:param (\w+):", doc, flags=re.MULTILINE))
    for name in sorted(documented - signature.parameters.keys()):
        problems.append(f"':param {name}:' documents a parameter the hook does not take")
    if signature.return_annotation is inspect.Signature.empty:
        problems.append("no return annotation")
    return problems


SPECS = _specs(hookspecs)


def test_specs_are_found() -> None:
    assert "register_backends" in SPECS
    # The plugin manager knows exactly the specs of this module, no others.
    known = {name for name, hook in vars(pm.hook).items() if not name.startswith("_") and hook.has_spec()}
    assert known == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hookspec_is_documented(name: str) -> None:
    assert spec_problems(SPECS[name]) == [], f"agentd.hookspecs.{name}"


def test_checker_catches_an_undocumented_hook() -> None:
    """The check itself can fail: a spec missing pieces is reported piece by piece."""

    @hookspecs.hookspec
    def register_widgets(register, limit: int):  # noqa: ANN001, ANN202 - deliberately undocumented
        """Register widgets.

        :param limit: how many.
        :param colour: not a parameter.
        """

    @hookspecs.hookspec
    def bare(register: Callable) -> None:
        pass

    assert spec_problems(register_widgets) == [
        "parameter 'register' has no ':param register:' line",
        "parameter 'register' has no type annotation",
        "':param colour:' documents a parameter the hook does not take",
        "no return annotation",
    ]
    assert spec_problems(bare) == ["no docstring"]
