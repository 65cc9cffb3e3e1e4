"""Batched decode in agentd's onnxrt backend: one onnxruntime run per batch vs one run per row.

The checkpoint is the random-weight SmolLM2-135M shape ``bench_onnx.py`` and
``bench_transformer.py`` use (vocab 49152, hidden 576, 30 layers, 9 heads over
3 KV heads, tied embeddings), exported with ``agentd export --quant int4``.
For every batch size, B sequences are prefilled with prompts of different
lengths (32 + 8*b tokens: every row stays in the 256-token arena, so a step
is one run) and decoded two ways, each on its own copy of the states so both
arms see the same lengths:

* ``one-run``: ``backend.decode(tokens, states)``: the batch's slots bound as
  one ``(B, kv_heads, capacity, head_dim)`` block, one ``run_with_iobinding``;
* ``per-row``: the decode the backend had before the slot pool, kept here: one
  ``run_with_iobinding`` per row (each row's slot bound as batch 1), every row
  committed after the last run (:func:`decode_per_row`).

Then the cost of making a batch adjacent: a batch of 8 on every other slot
decoded once (the pool swaps half of it into place, copying committed
positions), the next step, and one per-row step over the same states.

Throughput = tokens summed over the batch / wall seconds for ``--steps`` steps.
Within a repeat the two arms alternate (which goes first flips every repeat), so
load drift on a shared machine hits them alike; medians over repeats and the
median of the per-repeat (paired) ratios one-run / per-row. Each thread count
gets its own session (``agentd.threads.configure`` before the load).

    flock /tmp/agentd-bench.lock python benchmarks/bench_onnx_batched_decode.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_transformer import SMOLLM2_135M, make_checkpoint  # noqa: E402  (same checkpoint shape)

BATCHES = (1, 2, 4, 8)


def decode_per_row(backend: Any, token_ids: np.ndarray, states: Sequence[Any]) -> np.ndarray:
    """The pre-pool decode: one graph run per row, every row committed once all ran."""
    ids = np.ascontiguousarray(token_ids, dtype=np.int64)
    out = np.empty((ids.size, 1, backend.info.vocab_size), dtype=np.float32)  # (B, 1, V)
    with backend.pool.lock:
        for state in states:
            backend.pool.reserve(state, state.length + 1)
        for row, state in enumerate(states):
            backend._decode_group(ids, state.arena, state.slot, [state], [row], out)
        for state in states:
            state.length += 1
    return out.reshape(ids.size, -1)


def export_bundle(work: Path) -> Path:
    """The int4 bundle of the SmolLM2-shaped checkpoint (built once per work directory)."""
    hf_dir, bundle = work / "hf", work / "agentd-int4"
    if not (hf_dir / "config.json").exists():
        make_checkpoint(hf_dir)
    if not (bundle / "manifest.json").exists():
        agentd_cli = str(Path(sys.executable).parent / "agentd")
        subprocess.run([agentd_cli, "export", str(hf_dir), "--quant", "int4", "-q", "--force", "-o", str(bundle)], check=True)
    return bundle


def load_backend(bundle: Path, threads: int) -> Any:
    from agentd.formats import open_checkpoint
    from agentd.plugins.onnxrt.session import load
    from agentd.threads import configure

    configure(threads)  # read by the session as it opens
    return load(open_checkpoint(bundle))


def prefilled(backend: Any, batch: int) -> list[Any]:
    rng = np.random.default_rng(batch)
    states = []
    for b in range(batch):
        state = backend.new_state()
        backend.prefill(rng.integers(0, SMOLLM2_135M["vocab_size"], 32 + 8 * b), state)
        states.append(state)
    return states


def timed(decode: Any, backend: Any, states: list[Any], steps: int) -> float:
    """Tokens per second summed over the batch for ``steps`` greedy-free steps (fixed tokens)."""
    tokens = np.arange(len(states), dtype=np.int64) + 7
    start = time.perf_counter()
    for _ in range(steps):
        decode(backend, tokens, states)
    return len(states) * steps / (time.perf_counter() - start)


def adjacency_cost(backend: Any, batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds of a one-run step whose batch sits on every other slot (so the pool swaps
    half of it into place first), of the next one-run step (already adjacent) and of a per-row step."""
    samples: dict[str, list[float]] = {"scattered_one_run_ms": [], "adjacent_one_run_ms": [], "per_row_ms": []}
    tokens = np.full(batch, 5, dtype=np.int64)
    for _ in range(repeats):
        states = prefilled(backend, 2 * batch)
        members = states[::2]  # slots 0, 2, 4, ...: not adjacent
        for name, decode in (("scattered_one_run_ms", one_run), ("adjacent_one_run_ms", one_run), ("per_row_ms", decode_per_row)):
            start = time.perf_counter()
            decode(backend, tokens, members)
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def one_run(backend: Any, token_ids: np.ndarray, states: Sequence[Any]) -> np.ndarray:
    return backend.decode(token_ids, states)


def measure(backend: Any, repeats: int, steps: int) -> dict[str, Any]:
    arms = {"one-run": one_run, "per-row": decode_per_row}
    results: dict[str, Any] = {}
    for batch in BATCHES:
        states = {name: prefilled(backend, batch) for name in arms}
        first = {name: arms[name](backend, np.full(batch, 3), states[name]) for name in arms}  # warm-up + parity
        samples: dict[str, list[float]] = {name: [] for name in arms}
        for repeat in range(repeats):
            for name in arms if repeat % 2 == 0 else reversed(list(arms)):
                samples[name].append(timed(arms[name], backend, states[name], steps))
        ratios = [a / b for a, b in zip(samples["one-run"], samples["per-row"])]
        results[str(batch)] = {
            "one_run_tok_s": round(statistics.median(samples["one-run"]), 1),
            "per_row_tok_s": round(statistics.median(samples["per-row"]), 1),
            "paired_ratio_median": round(statistics.median(ratios), 3),
            "paired_ratios": [round(r, 3) for r in ratios],
            "max_abs_logit_diff": float(np.abs(first["one-run"] - first["per-row"]).max()),
            "same_argmax": bool((first["one-run"].argmax(-1) == first["per-row"].argmax(-1)).all()),
            "final_lengths": [state.length for state in states["one-run"]],
            "slot_capacities": sorted({state.capacity for state in states["one-run"]}),
        }
        row = results[str(batch)]
        print(f"  batch {batch}: one-run {row['one_run_tok_s']} tok/s, per-row {row['per_row_tok_s']} tok/s, "
              f"paired ratio {row['paired_ratio_median']} (max |logit diff| {row['max_abs_logit_diff']:.2e})", file=sys.stderr)
    results["adjacency_cost_batch_8"] = adjacency_cost(backend, 8, max(3, repeats // 2))
    print(f"  batch 8 on scattered slots: {results['adjacency_cost_batch_8']}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=16, help="decode steps per timed sample")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=None, help="keep the checkpoint and bundle here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        bundle = export_bundle(work)
        report: dict[str, Any] = {"repeats": args.repeats, "steps": args.steps}
        for threads in args.threads:
            print(f"threads {threads}:", file=sys.stderr)
            report[f"threads_{threads}"] = measure(load_backend(bundle, threads), args.repeats, args.steps)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
