"""The built-in planner ``llmcompiler``: request -> retrieved tools -> grammar-constrained plan.

1. :mod:`.retrieval` picks the tools to show (MiniLM embeddings through the
   daemon's ``Embed``, top k plus any tool the request names);
2. :mod:`.prompt` writes the chat (facts, tools, format, in-context examples of
   :mod:`.examples` limited to those tools);
3. the daemon's default decoder writes the plan at temperature 0 under the
   Lark grammar of :mod:`.grammar`, so the text always parses
   (:mod:`.parse`), names only shown tools, fits their schemas and refers only
   to earlier steps;
4. :meth:`LLMCompilerPlanner.answer` (the join) summarises the results in
   fixed template text (:mod:`agentd.agent.summary`): what was done, ids,
   amounts — tool text quoted as data.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from agentd.agent.plan import Plan
from agentd.agent.planner import PlannerSpec, PlanningContext, PlanResult, today_of
from agentd.client import SamplingOptions
from agentd.constraint import Constraint
from agentd.agent.summary import summarise
from agentd.errors import AgentdError, InvalidArgument
from agentd.hookspecs import hookimpl
from agentd.tools import ToolSpec

from .examples import Example, usable_examples
from .grammar import MAX_STEPS, plan_grammar
from .parse import JOIN, parse_plan
from .prompt import planning_messages
from .retrieval import TOP_K, TextEmbeddings, ToolRetriever

#: Tokens a plan may take (8 steps of ~30 tokens).
MAX_PLAN_TOKENS = 256
#: The retry's budget, in multiples of the first (a step's strings are at most 80 characters of <= 4 bytes).
RETRY_BUDGET_FACTOR = 6
#: In-context examples per prompt.
EXAMPLES_SHOWN = 4


class LLMCompilerPlanner:
    """LLMCompiler-style plans (``N. tool(arg=value)`` lines, ``join()``) written under a grammar."""

    def __init__(self, *, k: int = TOP_K, max_steps: int = MAX_STEPS, max_tokens: int = MAX_PLAN_TOKENS,
                 examples_shown: int = EXAMPLES_SHOWN):
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.examples_shown = examples_shown
        self._embeddings = TextEmbeddings()
        self.retriever = ToolRetriever(k, self._embeddings)
        #: Seconds spent in the last plan() per phase (retrieval, generation), for benchmarks.
        self.last_timings: dict[str, float] = {}

    async def plan(self, context: PlanningContext) -> PlanResult:
        started = time.perf_counter()
        tools = [tool for tool in context.tools]
        if not tools:
            raise AgentdError("no tools are registered, so there is nothing to plan with")
        retrieved = await self.retriever.retrieve(context.client, context.request, tools, model=context.embed_model)
        shown = list(retrieved.tools)
        examples = await self._examples(context, shown, retrieved.query)
        retrieval_done = time.perf_counter()
        messages = planning_messages(context.request, shown, context.facts, examples, context.observation)
        grammar = plan_grammar(shown, max_steps=self.max_steps)
        budget, tokens = self.max_tokens, 0
        while True:
            stream = await context.client.chat(
                messages,
                model=context.model,
                sampling=SamplingOptions(max_tokens=budget, temperature=0.0, repetition_penalty=1.0),
                constraint=Constraint.lark(grammar),
            )
            text = await stream.text()
            tokens += stream.usage.completion_tokens if stream.usage is not None else 0
            # A string of multi-byte characters can take a token per byte: a budget that ran out
            # inside the first step gets one more try, long enough for any step the grammar allows.
            if stream.finish_reason != "length" or "\n" in text or budget > self.max_tokens:
                break
            budget = self.max_tokens * RETRY_BUDGET_FACTOR
        self.last_timings = {"retrieval": retrieval_done - started, "generation": time.perf_counter() - retrieval_done}
        plan = self._parse(text, stream.finish_reason)
        plan.check({tool.name: tool for tool in shown})
        return PlanResult(plan, text, tokens, tuple(tool.name for tool in shown))

    async def answer(self, context: PlanningContext, plan: Plan | None, results: Mapping[int, Any]) -> str:
        tools = {tool.name: tool for tool in context.tools}
        return summarise(plan, results, tools)

    # -- helpers ---------------------------------------------------------------
    def _parse(self, text: str, finish_reason: str | None) -> Plan:
        if finish_reason == "length":
            # Cut short by the token budget: keep the steps that were complete.
            complete = text.rsplit("\n", 1)[0] if not text.endswith("\n") else text
            try:
                return parse_plan(complete, require_join=False)
            except InvalidArgument as exc:
                raise InvalidArgument("plan", f"the model ran out of tokens before one complete step ({exc})") from None
        return parse_plan(text)

    async def _examples(self, context: PlanningContext, shown: Sequence[ToolSpec], query) -> list[Example]:
        usable = usable_examples(shown, today_of(context.facts))
        if len(usable) <= self.examples_shown:
            return usable
        vectors = await self._embeddings.get(context.client, [e.request for e in usable], context.embed_model)
        order = sorted(range(len(usable)), key=lambda i: -float(vectors[i] @ query))
        # The closest ones, the closest last: right before the request, where a small model copies from.
        return [usable[i] for i in reversed(order[: self.examples_shown])]


@hookimpl
def register_planners(register) -> None:
    register(PlannerSpec(
        "llmcompiler",
        make=LLMCompilerPlanner,
        description="LLMCompiler-style plans: MiniLM tool retrieval, in-context examples, "
                    "the daemon's decoder under a Lark plan grammar (valid by construction)",
    ))


__all__ = ["LLMCompilerPlanner", "summarise", "parse_plan", "plan_grammar", "JOIN"]
