"""Shared fixtures of the demo tool pack tests (no tests here).

One seeded world is built per session and copied for each test, so every test
starts from the same pristine world in milliseconds. Checks read the world
with plain ``sqlite3``, not through the tools or the ``World`` class, so a
tool that reports an effect it did not apply is caught.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from agentd import tools as registry
from agentd.plugins.demo_tools import World
from agentd.tools import ToolContext, validate_arguments


def world_file(data_dir: Path) -> Path:
    return data_dir / "demo_world" / "world.sqlite"


@pytest.fixture(scope="session")
def template_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "world.sqlite"
    World(path).close()
    return path


@pytest.fixture
def home(tmp_path: Path, template_world: Path) -> Path:
    """A data_dir holding a fresh copy of the seeded world."""
    target = world_file(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copyfile(template_world, target)
    return tmp_path


@pytest.fixture
def db(home: Path):
    connection = sqlite3.connect(world_file(home))
    connection.row_factory = sqlite3.Row
    yield connection
    connection.close()


def context(home: Path, run: str = "run-1", step: int = 1, credential: Callable[[str], str] | None = None) -> ToolContext:
    return ToolContext(run_id=run, step=step, data_dir=home, credential=credential)


def call(home: Path, name: str, arguments: dict[str, Any], ctx: ToolContext | None = None) -> dict[str, Any]:
    """Call a registered tool as the executor would: validate, call, and check the result schema."""
    spec = registry.tool(name)
    checked = validate_arguments(spec, arguments)
    result = spec.call(checked, ctx or context(home))
    validator = jsonschema.Draft202012Validator(spec.result, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(result), key=str)
    assert not errors, f"{name} result violates its schema: {errors[0]}"
    return result


def dump_digest(path: Path) -> str:
    """A digest of the whole database content (schema and rows)."""
    connection = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


def balance(db: sqlite3.Connection, account: str = "checking") -> int:
    return db.execute("SELECT balance_cents FROM accounts WHERE id = ?", (account,)).fetchone()[0]


def count(db: sqlite3.Connection, table: str, where: str = "1 = 1", *params: Any) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()[0]
