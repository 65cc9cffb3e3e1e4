"""Every package in the tree is in pyproject's explicit package list: a package left out is
missing from a real (non-editable) install, which then fails at import."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / directory).parts]))
    assert found == set(setuptools["packages"])
