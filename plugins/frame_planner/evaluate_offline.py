"""A quick held-out score without a daemon or a world: tag with the in-memory model, assemble, compare.

Plans are compared as JSON after normalising strings (case, spaces), so this is a
proxy the trainer prints; the measurement that counts executes the plans in the
sandbox world (``agentd.agent.evaluation``, ``benchmarks/bench_planner_trained.py``).
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any, Sequence


from agentd.agent.plan import Plan
from agentd.errors import AgentdError

from .assemble import assemble
from .labels import TOKEN_LABELS, is_intent
from .spans import Span, Token, decode_spans


def tag(model: Any, requests: Sequence[str]) -> list[list[Span]]:
    """Labelled spans of each request from a :class:`.train.TaggerModel` in memory."""
    torch = model.torch
    encoded = [model.encode(text) for text in requests]
    features = model.features([ids for ids, _ in encoded])
    out: list[list[Span]] = []
    with torch.inference_mode():
        for start in range(0, len(requests), 64):
            logits, _ = model.logits(features[start : start + 64], train=False)
            for row, (text, (ids, offsets)) in enumerate(zip(requests[start : start + 64], encoded[start : start + 64])):
                tokens = [Token(s, e, logits[row, i].numpy()) for i, (s, e) in enumerate(offsets) if s != e]
                out.append(decode_spans(text, tokens, TOKEN_LABELS))
    return out


def canonical(value: Any) -> Any:
    """JSON value with strings case- and space-normalised and numbers as floats."""
    if isinstance(value, str):
        return " ".join(value.lower().split())
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def offline_score(model: Any, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Exact-plan and span-exact rates on ``examples`` (the corpus's held-out records)."""
    spans = tag(model, [e["request"] for e in examples])
    counts: Counter[str] = Counter()
    for example, found in zip(examples, spans):
        gold_roles = sorted((s["start"], s["end"], s["label"]) for s in example["spans"] if not is_intent(s["label"]))
        found_roles = sorted((s.start, s.end, s.label) for s in found if not is_intent(s.label))
        counts["roles_exact"] += gold_roles == found_roles
        gold_intents = [s["label"] for s in sorted(example["spans"], key=lambda s: s["start"]) if is_intent(s["label"])]
        counts["intents_exact"] += gold_intents == [s.label for s in found if is_intent(s.label)]
        try:
            plan = assemble(example["request"], found, today=date.fromisoformat(example.get("today", "2027-03-01"))).plan
        except AgentdError:
            counts["planner_error"] += 1
            continue
        expected = Plan.from_json(example["plan"]).to_json()
        counts["plan_exact"] += canonical(plan.to_json()) == canonical(expected)
    total = max(len(examples), 1)
    return {"examples": len(examples), **{k: round(v / total, 4) for k, v in sorted(counts.items())}}
