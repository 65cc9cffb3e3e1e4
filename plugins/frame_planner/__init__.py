"""The trained planner ``frames``: a MiniLM token tagger served by the daemon, and code that builds the plan.

1. the daemon's token classifier (``Inference.Classify``; by default the
   ``agentd-planner`` adapter this plugin ships, trained by ``agentd
   train-planner``) labels the request's words: intent triggers and argument
   roles (:mod:`.labels`);
2. :mod:`.spans` turns token scores into well-formed labelled spans (BIO Viterbi);
3. :mod:`.assemble` builds frames and the plan: values normalised by code
   (:mod:`.normalise`), fixed step skeletons per intent, typed references,
   missing arguments from the user's memory.

One classifier call per request — no text generation — so planning takes tens
of milliseconds and every argument is a span of the request, a value read from
one, a reference to an earlier result or a remembered fact. The reply after
the run is the shared template join (:mod:`agentd.agent.summary`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from agentd.agent.plan import Plan
from agentd.agent.planner import PlannerSpec, PlanningContext, PlanResult, today_of
from agentd.agent.summary import summarise
from agentd.errors import AgentdError
from agentd.hookspecs import hookimpl

from .assemble import Assembly, Frame, assemble, frames_of
from .labels import intent_of, is_intent
from .spans import Span, Token, decode_spans

#: The served token classifier the planner asks (None: the daemon's default classifier).
PLANNER_MODEL: str | None = None
#: The adapter ``agentd train-planner`` wrote and agentd ships (the daemon serves it as ``agentd-planner``).
SHIPPED_MODEL = Path(__file__).parent / "model"


class FramePlanner:
    """Plans by tagging the request (one ``Classify`` call) and assembling frames in code."""

    def __init__(self, *, model: str | None = PLANNER_MODEL):
        self.model = model
        #: Seconds spent in the last plan() per phase, for benchmarks.
        self.last_timings: dict[str, float] = {}

    async def spans(self, context: PlanningContext) -> list[Span]:
        """The request's labelled spans, as the served tagger sees them."""
        result = await context.client.classify([context.request], model=self.model)
        if not result.labels:
            raise AgentdError("the planner's model has no token labels (serve the agentd-planner adapter)")
        tokens = [Token(t.start, t.end, np.asarray(t.logits, dtype=np.float32)) for t in result.results[0]]
        return decode_spans(context.request, tokens, result.labels)

    async def plan(self, context: PlanningContext) -> PlanResult:
        started = time.perf_counter()
        spans = await self.spans(context)
        tagged = time.perf_counter()
        memory = context.memory
        user_facts = dict(memory.facts()) if memory is not None else {}
        usual = await self._usual_orders(context, spans) if memory is not None else None
        assembly = assemble(context.request, spans, today=today_of(context.facts), user_facts=user_facts, usual=usual)
        tools = {tool.name: tool for tool in context.tools}
        assembly.plan.check(tools)
        self.last_timings = {"tagging": tagged - started, "assembly": time.perf_counter() - tagged}
        used = tuple(dict.fromkeys(step.tool for step in assembly.plan.steps))
        return _result(context.request, spans, assembly, used)

    async def answer(self, context: PlanningContext, plan: Plan | None, results: Mapping[int, Any]) -> str:
        return summarise(plan, results, {tool.name: tool for tool in context.tools})

    async def _usual_orders(self, context: PlanningContext, spans: Sequence[Span]):
        """``usual(search_arguments)``: the items of the user's latest matching order, if the request says "usual"."""
        frames: list[Frame] = frames_of(spans)
        if not any(f.intent == "order_food" and f.has("usual") for f in frames):
            return None
        vector = (await context.client.embed([context.request], model=context.embed_model))[0]
        episodes = context.memory.recall(vector, 20, tool="order_food")

        def usual(search: Mapping[str, Any]) -> list[dict[str, Any]] | None:
            wanted = {k: str(v).lower() for k, v in search.items() if k in ("cuisine", "dish", "near")}
            for episode in episodes:
                searches = [c for c in episode.calls if c["tool"] == "search_restaurants"]
                orders = [c for c in episode.calls if c["tool"] == "order_food"]
                if not orders:
                    continue
                asked = {k: str(v).lower() for k, v in (searches[0]["arguments"] if searches else {}).items()}
                if all(asked.get(k) == v for k, v in wanted.items()):
                    return [dict(item) for item in orders[-1]["arguments"].get("items", [])] or None
            return None

        return usual


def _result(request: str, spans: Sequence[Span], assembly: Assembly, used: tuple[str, ...]) -> PlanResult:
    """The plan with, as its text, the clauses' intents and the request with its argument spans marked."""
    marked, last = [], 0
    for span in (s for s in spans if not is_intent(s.label)):
        marked.append(request[last : span.start])
        marked.append(f"[{span.text(request)}]({span.label})")
        last = span.end
    marked.append(request[last:])
    intents = ", ".join(intent_of(s.label) for s in spans if is_intent(s.label))
    return PlanResult(assembly.plan, f"{intents}: {''.join(marked)}", tools_shown=used, sources=dict(assembly.sources))


@hookimpl
def register_planners(register) -> None:
    register(PlannerSpec(
        "frames",
        make=FramePlanner,
        description="trained MiniLM token tagger (agentd train-planner) + frame assembly in code: "
                    "arguments are spans of the request or references, one Classify call per plan",
        # The default planner when its trained model ships; otherwise only when asked for.
        rank=10 if (SHIPPED_MODEL / "adapter_config.json").is_file() else -1,
    ))


__all__ = ["FramePlanner"]
