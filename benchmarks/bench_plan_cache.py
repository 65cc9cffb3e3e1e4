"""Planning latency with and without the template cache, through the Agent service.

An in-process daemon serves the default models (SmolLM2-135M plans with the
built-in planner, all-MiniLM-L6-v2 embeds) and the demo tool pack. For each
pair below, the first request's plan is kept as a template for one user, as a
planner that reports its argument sources would leave it after a done run;
then the second request is run twice for that user, alternating the order per
pair: with ``no_plan_cache`` (the planner plans it) and with the cache (the
template is refilled). Latency is the time from ``RunTask`` to the ``plan``
event as the client sees it: run start, the request's embedding, the template
search and alignment or the planner, and the event's trip back.

    python benchmarks/bench_plan_cache.py               # prints a Markdown table
    python benchmarks/bench_plan_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agentd.agent.plan import Plan
from agentd.agent.planner import ArgumentSource

#: (template request, its plan, where its arguments came from) -> a similar request.
PAIRS = (
    ("send Maria 45 dollars for lunch", {"steps": [{"id": 1, "tool": "transfer_money", "arguments": {"to": "Maria", "amount": 45, "memo": "lunch"}}]},
     {"to": "Maria", "amount": ("45 dollars", "amount"), "memo": "lunch"}, "send Sam 20 dollars for coffee"),
    ("find flights to Denver on March 3", {"steps": [{"id": 1, "tool": "search_flights", "arguments": {"destination": "Denver", "date": "2027-03-03"}}]},
     {"destination": "Denver", "date": ("March 3", "date")}, "find flights to Chicago on March 9"),
    ("text Linda that I am running late", {"steps": [{"id": 1, "tool": "send_message", "arguments": {"to": "Linda", "text": "I am running late"}}]},
     {"to": "Linda", "text": "I am running late"}, "text Sam that I am on my way"),
    ("what's on my calendar tomorrow", {"steps": [{"id": 1, "tool": "list_events", "arguments": {"date": "2027-03-02"}}]},
     {"date": ("tomorrow", "date")}, "what's on my calendar today"),
    ("find thai restaurants near Union Square", {"steps": [{"id": 1, "tool": "search_restaurants", "arguments": {"cuisine": "thai", "near": "Union Square"}}]},
     {"cuisine": "thai", "near": "Union Square"}, "find sushi restaurants near the Ferry Building"),
)
USER = "bench"


def sources(request: str, spec: dict) -> dict[tuple[int, str], ArgumentSource]:
    found = {}
    for argument, where in spec.items():
        text, kind = where if isinstance(where, tuple) else (where, "text")
        match = re.search(re.escape(text), request)
        found[(1, argument)] = ArgumentSource(match.start(), match.end(), kind)
    return found


def time_to_plan(client, request: str, **options) -> tuple[float, str]:
    """Seconds from RunTask to the plan event, and the plan's text ("" if the run was not planned)."""
    started = time.perf_counter()
    seconds, text = 0.0, ""
    for event in client.run_task(request, user=USER, auto_approve=True, **options):
        if event.WhichOneof("event") == "plan" and not text:
            seconds, text = time.perf_counter() - started, event.plan.text
    return seconds, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="times each pair is measured (default 1)")
    options = parser.parse_args(argv)

    from agentd.agent.credentials import CredentialStore
    from agentd.client import Client
    from agentd.default_models import minilm_dir, smollm2_gguf
    from agentd.server.app import Daemon
    from agentd.server.served import ModelSource, ModelTable

    gguf, minilm = smollm2_gguf(), minilm_dir()
    if gguf is None or minilm is None:
        print("needs the default models (make setup)", file=sys.stderr)
        return 1
    table = ModelTable.load([ModelSource("smollm2", gguf), ModelSource("minilm", minilm)])
    loop = asyncio.new_event_loop()
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()

    def on_loop(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    with tempfile.TemporaryDirectory(prefix="agentd-", dir="/tmp") as scratch:
        home = Path(scratch) / "agent"
        CredentialStore(home / "credentials").add("bank", "bench-token")
        daemon = Daemon(table, socket_path=Path(scratch) / "a.sock", grace=1.0, agent_home=home, planner="llmcompiler")
        on_loop(daemon.start())
        planned, cached, misses = [], [], 0
        try:
            with Client(daemon.targets[0], timeout=600) as client:
                time_to_plan(client, "what's my balance", no_plan_cache=True)  # warm-up: model and encoder caches
                for repeat in range(options.repeats):
                    for index, (seed, plan, spec, similar) in enumerate(PAIRS):
                        embedding = client.embed([seed])[0]
                        daemon.runs.templates.keep(USER, seed, embedding, Plan.from_json(plan), sources(seed, spec))
                        order = ("planner", "cache") if (index + repeat) % 2 == 0 else ("cache", "planner")
                        for how in order:
                            seconds, text = time_to_plan(client, similar, no_plan_cache=(how == "planner"))
                            if not text:
                                raise SystemExit(f"{similar!r} was not planned (see the daemon's log)")
                            if how == "planner":
                                planned.append(seconds)
                            elif text.startswith("template "):
                                cached.append(seconds)
                            else:
                                misses += 1
        finally:
            on_loop(daemon.stop())
            loop.call_soon_threadsafe(loop.stop)

    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"| {name} | 0 | - | - |"
        return f"| {name} | {len(values)} | {statistics.median(values) * 1000:.1f} ms | {max(values) * 1000:.1f} ms |"

    print("| planning | requests | median | max |")
    print("|---|---|---|---|")
    print(row("planner (SmolLM2-135M, built-in planner)", planned))
    print(row("template cache hit", cached))
    print(f"\ntemplate misses: {misses} of {len(planned)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
