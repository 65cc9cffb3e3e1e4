"""The join of a run: a reply to the user from the steps' results, in fixed template text.

Shared by the built-in planners (their ``answer``). Text from the results is
quoted as data (JSON strings, cut short, one line), and a tool marked
``untrusted_output`` contributes only counts and quoted titles, so a web page
or a menu can never speak in the agent's voice.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from agentd.agent.plan import Plan
from agentd.tools import ToolSpec

#: Result fields worth repeating to the user, when a result has them.
_REPORTED = ("status", "booking_id", "order_id", "transfer_id", "payment_id", "event_id", "message_id",
             "confirmation", "account", "balance", "amount", "total", "total_price", "price", "eta_minutes")
_NAMING = ("name", "title", "airline", "flight_number", "payee", "description")
_ITEM_FIELDS = ("price", "nightly_price", "amount", "balance", "date", "time", "depart")
_MAX_QUOTE = 60


def summarise(plan: Plan | None, results: Mapping[int, Any], tools: Mapping[str, ToolSpec]) -> str:
    """One line per step that ran: the tool and what its result says (ids, amounts, counts).

    Text from the results is quoted as data (JSON strings, cut short, one line),
    and a tool marked ``untrusted_output`` contributes only counts and quoted titles.
    """
    if not results:
        return "Nothing was done."
    lines = []
    for step_id in sorted(results):
        step = plan.find(step_id) if plan is not None else None
        name = step.tool if step is not None else f"step {step_id}"
        spec = tools.get(name)
        untrusted = bool(spec is not None and spec.untrusted_output)
        lines.append(f"{step_id}. {name.replace('_', ' ')}: {_describe(results[step_id], untrusted)}")
    if plan is not None:
        skipped = [s.id for s in plan.steps if s.id not in results]
        if skipped:
            lines.append("Not done: steps " + ", ".join(map(str, skipped)) + ".")
    return "Done.\n" + "\n".join(lines)


def _describe(result: Any, untrusted: bool) -> str:
    if isinstance(result, Mapping):
        parts = []
        for key, value in result.items():
            if isinstance(value, list):
                parts.append(_describe_list(key, value))
        for key in _REPORTED:
            if key in result and not isinstance(result[key], (list, dict)) and not (untrusted and isinstance(result[key], str)):
                parts.append(f"{key.replace('_', ' ')} {_quote(result[key])}")
        return "; ".join(parts) if parts else "done"
    if isinstance(result, list):
        return _describe_list("results", result)
    if untrusted and isinstance(result, str):
        return f"{len(result)} characters of text"
    return _quote(result)


def _describe_list(key: str, items: list) -> str:
    text = f"{len(items)} {key.replace('_', ' ')}"
    if items and isinstance(items[0], Mapping):
        first = items[0]
        label = next((first[k] for k in _NAMING if isinstance(first.get(k), str)), None)
        details = [f"{_quote(label)}"] if label is not None else []
        details += [f"{k.replace('_', ' ')} {_quote(v)}" for k, v in first.items()
                    if (k == "id" or k.endswith("_id") or k in _ITEM_FIELDS) and not isinstance(v, (list, dict))]
        if details:
            text += " (first: " + ", ".join(details) + ")"
    return text


def _quote(value: Any) -> str:
    if isinstance(value, str):
        flat = " ".join(value.split())
        if len(flat) > _MAX_QUOTE:
            flat = flat[: _MAX_QUOTE - 3] + "..."
        return json.dumps(flat, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)
