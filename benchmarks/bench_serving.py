"""Serving throughput through the daemon: aggregate tokens/s and time to first token under load.

A real agentd daemon (``agentd.server.app.Daemon``, in this process on its own
event loop thread) serves two random-weight models over a Unix socket:

* ``smollm2``: a SmolLM2-135M-shaped Llama (built as in bench_transformer.py);
* ``mamba``: a mamba-130m-shaped Mamba (built as in bench_ssm.py).

For each model and each concurrency level C in 1, 4, 8, 16, C client threads
(plain gRPC stubs, one channel each) stream greedy Generate requests at the
same time, ``--requests`` each, one after another: a ``--prompt``-token prompt
and ``--tokens`` new tokens. Reported per level: aggregate tokens/s (all tokens
streamed / wall time of the level), the speed-up over C=1, and p50/p99 time to
first token (request sent → first token received) over all of the level's
requests. The engine batches concurrent streams into one decode step
(max_batch 16), so the target is at 8 streams ≥ 4× the single-stream aggregate.

    python benchmarks/bench_serving.py                     # full run, prints a markdown table
    python benchmarks/bench_serving.py --layers 4          # quick look (fewer layers)
    python benchmarks/bench_serving.py --out docs/bench_serving.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentd.server.app import Daemon  # noqa: E402
from agentd.server.served import ModelSource, ModelTable, ServingSettings  # noqa: E402
from agentd.v1 import inference_pb2 as pb  # noqa: E402
from agentd.v1 import inference_pb2_grpc  # noqa: E402

LEVELS = (1, 4, 8, 16)


def build_models(root: Path, layers: int | None) -> dict[str, Path]:
    """The two random-weight checkpoints (``layers`` overrides both depths for a quick look)."""
    import bench_ssm
    import bench_transformer
    from transformers import LlamaConfig, LlamaForCausalLM

    smollm = root / "smollm2"
    config = dict(bench_transformer.SMOLLM2_135M)
    if layers is not None:
        config["num_hidden_layers"] = layers
    torch.manual_seed(0)
    # No EOS id: every request streams exactly --tokens tokens.
    LlamaForCausalLM(LlamaConfig(**config, eos_token_id=None, bos_token_id=None)).save_pretrained(smollm)
    mamba = root / "mamba"
    bench_ssm.build_hf(mamba, layers if layers is not None else 24)
    return {"smollm2": smollm, "mamba": mamba}


class DaemonThread:
    """The real daemon on a background event loop."""

    def __init__(self, table: ModelTable, socket_path: Path):
        self.daemon = Daemon(table, socket_path=socket_path, grace=1.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        targets = asyncio.run_coroutine_threadsafe(self.daemon.start(), self.loop).result(120)
        return targets[0]

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.stop(), self.loop).result(120)
        asyncio.run_coroutine_threadsafe(self.daemon.models.close(), self.loop).result(120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def one_request(stub: inference_pb2_grpc.InferenceStub, model: str, prompt: list[int], tokens: int) -> tuple[float, int]:
    """Stream one greedy generation; returns (time to first token, tokens received)."""
    request = pb.GenerateRequest(model=model, max_tokens=tokens, temperature=0.0)
    request.prompt_token_ids.CopyFrom(pb.TokenIds(ids=prompt))
    started = time.perf_counter()
    first = None
    received = 0
    for message in stub.Generate(request, timeout=3600):
        if message.token_ids and first is None:
            first = time.perf_counter() - started
        received += len(message.token_ids)
    return (first if first is not None else float("nan")), received


def run_level(target: str, model: str, streams: int, requests: int, prompt_tokens: int, tokens: int, vocab: int) -> dict:
    rng = np.random.default_rng(streams)
    ttfts: list[float] = []
    counts: list[int] = []
    lock = threading.Lock()
    start_line = threading.Barrier(streams + 1)

    def client(index: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            prompts = [rng.integers(0, vocab, prompt_tokens).tolist() for _ in range(requests)]
            start_line.wait()
            for prompt in prompts:
                ttft, received = one_request(stub, model, prompt, tokens)
                with lock:
                    ttfts.append(ttft)
                    counts.append(received)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "streams": streams,
        "tokens": sum(counts),
        "seconds": wall,
        "tokens_per_s": sum(counts) / wall,
        "ttft_p50": float(np.percentile(ttfts, 50)),
        "ttft_p99": float(np.percentile(ttfts, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=None, help="override both models' depth (quick look)")
    parser.add_argument("--requests", type=int, default=2, help="requests per client stream at each level")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per request")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args()

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="agentd-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        paths = build_models(root, args.layers)
        table = ModelTable.load(
            [ModelSource(name, path) for name, path in paths.items()],
            ServingSettings(max_batch=16, max_queue=64, prefix_cache_bytes=0),
        )
        with DaemonThread(table, root / "bench.sock") as target:
            for name in paths:
                vocab = table.get(name).info.vocab_size
                run_level(target, name, 1, 1, args.prompt, 4, vocab)  # warm-up
                results[name] = [
                    run_level(target, name, level, args.requests, args.prompt, args.tokens, vocab) for level in LEVELS
                ]
                for row in results[name]:
                    print(name, row, flush=True)
    report = render(results, args)
    print(report)
    if args.out is not None:
        args.out.write_text(report)


def render(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}. Prompt {args.prompt} tokens, {args.tokens} new tokens, "
        f"{args.requests} requests per stream, greedy, fp32, Unix socket.",
        "",
    ]
    for name, rows in results.items():
        base = rows[0]["tokens_per_s"]
        lines += [
            f"### {name}" + (f" ({args.layers} layers)" if args.layers else ""),
            "",
            "| streams | tokens | seconds | aggregate tokens/s | vs 1 stream | TTFT p50 (ms) | TTFT p99 (ms) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row['streams']} | {row['tokens']} | {row['seconds']:.2f} | {row['tokens_per_s']:.1f} | "
                f"{row['tokens_per_s'] / base:.2f}× | {row['ttft_p50'] * 1e3:.0f} | {row['ttft_p99'] * 1e3:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
