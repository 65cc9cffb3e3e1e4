"""The template cache: which requests a kept plan fits, and how its arguments are refilled.

Embeddings here are fixed vectors (the cosine pre-filter is tested through the
daemon with MiniLM in test_agent_memory_service.py); the alignment and the
refill are what is checked, with the frame planner's own normalisers and with a
local fake.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from agentd.agent.memory import MemoryStore
from agentd.agent.plan import Plan, Ref, Step
from agentd.agent.planner import ArgumentSource
from agentd.agent.templates import TemplateCache, template_sources
from agentd.tools import ToolSpec

TODAY = dt.date(2027, 3, 1)
SAME = np.asarray([1.0, 0.0], np.float32)
OBJ = {"type": "object"}


def spec(name: str, properties: dict, required: tuple[str, ...] = ()) -> ToolSpec:
    schema = {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}
    return ToolSpec(name, name, schema, OBJ, lambda arguments, context: {})


TOOLS = {
    "transfer_money": spec("transfer_money", {"to": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0},
                                              "memo": {"type": "string"}, "from_account": {"type": "string"}}, ("to", "amount")),
    "find_contact": spec("find_contact", {"name": {"type": "string"}}, ("name",)),
    "create_event": spec("create_event", {"title": {"type": "string"}, "date": {"type": "string"}, "time": {"type": "string"}}),
}
REQUEST = "send Maria 45 dollars for lunch"
TRANSFER = Plan((Step(1, "transfer_money", {"to": "Maria", "amount": 45.0, "memo": "lunch", "from_account": "checking"}),))
#: What a planner that knows its spans reports: "45 dollars" is an amount.
SOURCES = {(1, "to"): ArgumentSource(5, 10), (1, "amount"): ArgumentSource(11, 21, "amount"), (1, "memo"): ArgumentSource(26, 31)}


@pytest.fixture
def cache(tmp_path: Path):
    store = MemoryStore(tmp_path / "memory.sqlite")
    yield TemplateCache(store, threshold=0.5)
    store.close()


def arguments(plan: Plan) -> list[dict]:
    return [dict(step.arguments) for step in plan.steps]


def test_refills_sourced_arguments_from_the_aligned_words(cache: TemplateCache) -> None:
    assert REQUEST[11:21] == "45 dollars"
    template_id = cache.keep("alice", REQUEST, SAME, TRANSFER, SOURCES)
    hit = cache.find("alice", "send Sam 20 dollars for coffee", SAME, TOOLS, TODAY)
    assert hit is not None and hit.template_id == template_id
    # from_account has no source: kept as the planner wrote it.
    assert arguments(hit.plan) == [{"to": "Sam", "amount": 20.0, "memo": "coffee", "from_account": "checking"}]
    hit = cache.find("alice", "Send Jo Ann 120 dollars for the concert tickets", SAME, TOOLS, TODAY)
    assert hit is not None and arguments(hit.plan)[0] | {"from_account": None} == {
        "to": "Jo Ann", "amount": 120.0, "memo": "the concert tickets", "from_account": None}
    assert cache.store.list("alice")[0].uses == 2


@pytest.mark.parametrize("request_text", [
    "send Maria a message saying hi",        # "for" (outside every argument) changed
    "pay Maria 45 dollars for lunch",        # the verb changed
    "send Maria 45 dollars",                 # the memo's words vanished, and "for" with them
    "what's my balance",
    "send Sam 20 bucks for a coffee and a bagel",  # fewer than half the words left
])
def test_a_request_that_does_not_align_is_no_hit(cache: TemplateCache, request_text: str) -> None:
    cache.keep("alice", REQUEST, SAME, TRANSFER, SOURCES)
    assert cache.find("alice", request_text, SAME, TOOLS, TODAY) is None


def test_no_hit_across_users_below_the_threshold_or_when_the_schema_refuses(cache: TemplateCache) -> None:
    cache.keep("alice", REQUEST, SAME, TRANSFER, SOURCES)
    assert cache.find("bob", "send Sam 20 dollars for coffee", SAME, TOOLS, TODAY) is None
    assert cache.find("alice", "send Sam 20 dollars for coffee", np.asarray([0.0, 1.0], np.float32), TOOLS, TODAY) is None
    # "nothing" does not read as an amount; "-5 dollars" reads as 5 or fails the schema, never a negative payment.
    assert cache.find("alice", "send Sam nothing dollars for coffee", SAME, TOOLS, TODAY) is None


def test_sources_found_verbatim_when_the_planner_gives_none(cache: TemplateCache) -> None:
    plan = Plan((Step(1, "find_contact", {"name": "maria"}), Step(2, "transfer_money", {"to": Ref(1, ("contacts", 0, "handle")), "amount": 45})))
    kept = template_sources("Send Maria 45 dollars", plan, {})
    assert kept == [{"step": 1, "argument": "name", "start": 5, "end": 10, "kind": "text"}]  # case-insensitive
    cache.keep("alice", "Send Maria 45 dollars", SAME, plan, {})
    hit = cache.find("alice", "send Sam 45 dollars", SAME, TOOLS, TODAY)
    assert hit is not None and hit.plan.to_json() == {"steps": [
        {"id": 1, "tool": "find_contact", "arguments": {"name": "Sam"}},
        {"id": 2, "tool": "transfer_money", "arguments": {"to": {"$ref": {"step": 1, "path": ["contacts", 0, "handle"]}}, "amount": 45}},
    ]}
    # The amount has no source, so a changed amount is a changed word outside every argument.
    assert cache.find("alice", "send Sam 50 dollars", SAME, TOOLS, TODAY) is None
    # A date the planner computed ("tomorrow" -> 2027-03-02) with no source would go stale: not kept.
    dated = Plan((Step(1, "create_event", {"title": "dentist", "date": "2027-03-02"}),))
    assert template_sources("dentist tomorrow", dated, {}) is None
    assert cache.keep("alice", "dentist tomorrow", SAME, dated, {}) is None


def test_dates_and_times_are_read_again_against_today(cache: TemplateCache) -> None:
    request = "add dentist tomorrow at 7pm"
    plan = Plan((Step(1, "create_event", {"title": "dentist", "date": "2027-03-02", "time": "19:00"}),))
    sources = {(1, "title"): ArgumentSource(4, 11), (1, "date"): ArgumentSource(12, 20, "date"),
               (1, "time"): ArgumentSource(24, 27, "time")}
    cache.keep("alice", request, SAME, plan, sources)
    hit = cache.find("alice", request, SAME, TOOLS, dt.date(2027, 3, 10))  # the same words a week later
    assert hit is not None and arguments(hit.plan) == [{"title": "dentist", "date": "2027-03-11", "time": "19:00"}]
    hit = cache.find("alice", "add haircut tomorrow at noon", SAME, TOOLS, TODAY)
    assert hit is not None and arguments(hit.plan) == [{"title": "haircut", "date": "2027-03-02", "time": "12:00"}]
    # Three of five words changed: too little of the template's request is left to trust it.
    assert cache.find("alice", "add haircut on Friday at noon", SAME, TOOLS, TODAY) is None


def test_normalisers_can_be_replaced(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "memory.sqlite")
    def cents(text: str, today: dt.date) -> float | None:
        first = text.split()[0]
        return float(first) * 100 if first.isdigit() else None

    fake = {"text": lambda text, today: text.upper(), "amount": cents}
    cache = TemplateCache(store, threshold=0.5, normalisers=fake)
    cache.keep("alice", REQUEST, SAME, TRANSFER, SOURCES)
    hit = cache.find("alice", "send Sam 20 dollars for coffee", SAME, TOOLS, TODAY)
    assert hit is not None and arguments(hit.plan)[0]["to"] == "SAM" and arguments(hit.plan)[0]["amount"] == 2000
    without = TemplateCache(store, threshold=0.5, normalisers={"text": lambda text, today: text})
    assert without.find("alice", "send Sam 20 dollars for coffee", SAME, TOOLS, TODAY) is None  # no amount reader
    store.close()
