"""Memory tool pack: ``remember_fact``, so a request like "I live in Oakland now" becomes a plan.

The planner turns what the user says about themselves into
``remember_fact(key="home_city", value="Oakland")``; the tool writes it to the
requesting user's memory (``ToolContext.memory``, scoped to that user), and
later runs see it in ``PlanningContext.facts``.

Registered through the ``agentd`` entry-point group like any tool pack.
"""

from __future__ import annotations

from typing import Any, Callable

from agentd.agent.memory import FACT_KEYS, MAX_FACT_CHARS
from agentd.hookspecs import hookimpl
from agentd.tools import ToolContext, ToolError, ToolSpec

__all__ = ["register_tools", "tool_specs"]


def remember_fact(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Keep a profile fact for the user the run is for (replacing the fact's earlier value)."""
    if context.memory is None:
        raise ToolError("this daemon keeps no memory, so the fact cannot be remembered")
    memory_id = context.memory.set_fact(arguments["key"], arguments["value"], context.run_id)
    return {"remembered": True, "key": arguments["key"], "value": context.memory.facts()[arguments["key"]], "id": memory_id}


def tool_specs() -> list[ToolSpec]:
    return [
        ToolSpec(
            name="remember_fact",
            description=(
                "Remember a fact about the user for later requests: where they live (home_city), "
                "which account pays by default (default_account: checking or savings), their diet (diet)."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "key": {"type": "string", "enum": list(FACT_KEYS)},
                    "value": {"type": "string", "minLength": 1, "maxLength": MAX_FACT_CHARS},
                },
                "required": ["key", "value"],
                "additionalProperties": False,
            },
            result={
                "type": "object",
                "properties": {
                    "remembered": {"type": "boolean"},
                    "key": {"type": "string"},
                    "value": {"type": "string"},
                    "id": {"type": "string"},
                },
                "required": ["remembered", "key", "value", "id"],
            },
            call=remember_fact,
            # Setting the same fact twice leaves one fact; the old value can be stated again.
            idempotent=True,
        )
    ]


@hookimpl
def register_tools(register: Callable[[ToolSpec], None]) -> None:
    for spec in tool_specs():
        register(spec)
