"""Demo tool pack: 15 everyday tools (travel, food, bank, calendar, contacts, messages, web) on a sandbox world.

Every tool reads and writes one SQLite file, the *world*
(``ToolContext.data_dir / "demo_world" / "world.sqlite"``, created and seeded
deterministically on first use; see :mod:`.world` and :mod:`.seed`). So the
outcome of any agent task — "fly me to Denver on the 3rd and get a hotel for
two nights", "send Maria 45 bucks" — can be checked in the world's final
state with SQL, not only in what the tools said they did.

Layout, one abstraction a file: :mod:`.world` (schema, clock, transactions,
idempotency ledger), :mod:`.seed` (deterministic fill) from the catalogs
:mod:`.catalog_places`, :mod:`.catalog_food`, :mod:`.catalog_people`,
:mod:`.catalog_web`; :mod:`.lookup` (forgiving names); :mod:`.common` (what
tools share); and one module per tool family: :mod:`.travel`, :mod:`.food`,
:mod:`.bank`, :mod:`.personal`, :mod:`.web`.

Registered through the ``agentd`` entry-point group like any third-party pack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from agentd.hookspecs import hookimpl
from agentd.tools import ToolSpec

from . import bank, food, personal, travel, web
from .world import DEFAULT_NOW, DEFAULT_SEED, World

__all__ = ["register_tools", "tool_specs", "World", "DEFAULT_NOW", "DEFAULT_SEED"]


def tool_specs() -> list[ToolSpec]:
    """The pack's tools in a fixed order (travel, food, bank, personal, web)."""
    return [*travel.tools(), *food.tools(), *bank.tools(), *personal.tools(), *web.tools()]


@hookimpl
def planner_facts(data_dir: Path) -> dict[str, str]:
    """The world's "today" (what "the 3rd" and "tomorrow" mean there) and where the user lives."""
    from .common import WORLD_DIR, WORLD_FILE

    path = Path(data_dir) / WORLD_DIR / WORLD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with World(path) as world:
        now = world.now()
    return {"today": f"{now:%Y-%m-%d} ({now:%A})", "time": f"{now:%H:%M}", "home_city": "San Francisco"}


@hookimpl
def register_tools(register: Callable[[ToolSpec], None]) -> None:
    """Register the 15 demo tools; the world file is opened only when a tool is called."""
    for spec in tool_specs():
        register(spec)
