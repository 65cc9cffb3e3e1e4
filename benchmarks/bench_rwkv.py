"""RWKV-4 side by side: agentd's backend vs Hugging Face ``RwkvForCausalLM`` on CPU.

Shape of RWKV/rwkv-4-169m-pile (vocab 50277, hidden 768, 12 layers, context
1024), random weights, fp32, batch 1, both in this one process with the same
weights and thread count. Measures:

* decode: tokens/s after a 128-token prompt (median over per-token step times);
* prefill: seconds for a 512-token prompt (median of a few runs; last-position
  logits only on both sides, ``logits_to_keep=1`` for Hugging Face);
* both again for agentd with its projections left row-major, as the checkpoint
  stores them: the gain of ``agentd.plugins.projection``'s layout.

Wall time and CPU time are both reported (with one thread, CPU time leaves out
the time the shared machine gives our core to other jobs).

    python benchmarks/bench_rwkv.py [--decode-steps 64] [--prefill-runs 5] [--threads N]

Results and the exact command go to docs/bench_rwkv.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

VOCAB, HIDDEN, LAYERS, CONTEXT = 50277, 768, 12, 1024


def build_reference(out_dir: Path):
    """A random-weight HF model of the 169m shape, saved to ``out_dir``; returns it in eval mode."""
    from transformers import RwkvConfig, RwkvForCausalLM

    config = RwkvConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, context_length=CONTEXT, rescale_every=6
    )
    # Skip HF's orthogonal init (a QR of the 50277x768 head takes minutes here).
    with torch.device("meta"):
        model = RwkvForCausalLM(config)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "time_decay" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
            elif "time_first" in name or "embeddings" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
            elif "time_mix" in name:
                param.copy_(torch.rand(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.zero_()
            elif "ln" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * param.shape[-1] ** -0.5)
    model.save_pretrained(out_dir, safe_serialization=True)
    model.eval()
    return model


class HfRunner:
    """Hugging Face side: its own state list, one decode step or one prefill per call."""

    def __init__(self, model):
        self.model = model
        self.state = None

    def start(self, prompt: np.ndarray) -> int:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(prompt)[None], use_cache=True, logits_to_keep=1)
        self.state = out.state
        return int(out.logits[0, -1].argmax())

    def step(self, token: int) -> int:
        with torch.inference_mode():
            out = self.model(torch.tensor([[token]]), state=self.state, use_cache=True)
        self.state = out.state
        return int(out.logits[0, -1].argmax())

    def prefill(self, prompt: np.ndarray) -> None:
        with torch.inference_mode():
            self.model(torch.from_numpy(prompt)[None], use_cache=True, logits_to_keep=1)


class AgentdRunner:
    """agentd side through the backend contract (NumPy in and out)."""

    def __init__(self, backend):
        self.backend = backend
        self.state = None

    def start(self, prompt: np.ndarray) -> int:
        self.state = self.backend.new_state()
        return int(self.backend.prefill(prompt, self.state)[0].argmax())

    def step(self, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [self.state])[0].argmax())

    def prefill(self, prompt: np.ndarray) -> None:
        self.backend.prefill(prompt, self.backend.new_state())


def timed(fn, *args) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds), result). With one thread, CPU time leaves out
    the time the shared machine gave our core to someone else: the steadier figure."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return (time.perf_counter() - start_wall, time.process_time() - start_cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode-steps", type=int, default=64)
    parser.add_argument("--prefill-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 keeps torch's default thread pool")
    args = parser.parse_args()
    if args.threads:
        # Measured on the 2-core dev box: an explicit set_num_threads(2), equal to the
        # default, made every matmul ~18x slower here; so only set it when asked.
        torch.set_num_threads(args.threads)

    import agentd
    from agentd.plugins import projection

    rng = np.random.default_rng(0)
    decode_prompt = rng.integers(0, VOCAB, size=128).astype(np.int64)
    prefill_prompt = rng.integers(0, VOCAB, size=512).astype(np.int64)

    with tempfile.TemporaryDirectory() as tmp:
        reference = build_reference(Path(tmp))
        backend = agentd.load_model(tmp).backend
        # The before/after of agentd.plugins.projection: projections as the checkpoint stores them.
        with mock.patch.object(projection, "PACKED_DTYPES", frozenset()):
            row_major_backend = agentd.load_model(tmp).backend

        # Same weights, same prompt: the two must agree before their speed means anything.
        with torch.inference_mode():
            ref_logits = reference(torch.from_numpy(decode_prompt)[None], logits_to_keep=1).logits[0, -1].numpy()
        ours_logits = backend.prefill(decode_prompt, backend.new_state())[0]
        max_diff = float(np.abs(ours_logits - ref_logits).max())

        hf, ours, row_major = HfRunner(reference), AgentdRunner(backend), AgentdRunner(row_major_backend)
        # Warm up all. Then alternate them step by step (and run by run for
        # prefill), so the noise of this shared machine hits all alike.
        for runner in (hf, ours, row_major):
            runner.step(runner.start(decode_prompt[:8]))
        hf_token, our_token = hf.start(decode_prompt), ours.start(decode_prompt)
        rm_token = row_major.start(decode_prompt)
        hf_steps, our_steps, rm_steps, hf_tokens, our_tokens = [], [], [], [], []
        for _ in range(args.decode_steps):
            elapsed, hf_token = timed(hf.step, hf_token)
            hf_steps.append(elapsed)
            hf_tokens.append(hf_token)
            elapsed, our_token = timed(ours.step, our_token)
            our_steps.append(elapsed)
            our_tokens.append(our_token)
            elapsed, rm_token = timed(row_major.step, rm_token)
            rm_steps.append(elapsed)

        hf_prefill, our_prefill, rm_prefill = [], [], []
        for _ in range(args.prefill_runs):
            hf_prefill.append(timed(hf.prefill, prefill_prompt)[0])
            our_prefill.append(timed(ours.prefill, prefill_prompt)[0])
            rm_prefill.append(timed(row_major.prefill, prefill_prompt)[0])

    same = sum(a == b for a, b in zip(hf_tokens, our_tokens))
    print(
        f"# RWKV-4 169m shape, fp32, batch 1, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    print(f"last-token logits max |diff| vs HF after 128-token prompt: {max_diff:.2e}")
    print(f"greedy tokens identical: {same}/{len(hf_tokens)}")
    print("| metric | transformers | agentd | agentd speed-up |")
    print("|---|---|---|---|")
    for clock, clock_label in ((0, "wall"), (1, "CPU")):
        for label, pick in (("median", statistics.median), ("best", min)):
            hf_tps = 1.0 / pick(s[clock] for s in hf_steps)
            our_tps = 1.0 / pick(s[clock] for s in our_steps)
            print(
                f"| decode tokens/s ({clock_label} time), {label} of {args.decode_steps} steps | {hf_tps:.1f} "
                f"| {our_tps:.1f} | {our_tps / hf_tps:.2f}x |"
            )
        for label, pick in (("median", statistics.median), ("best", min)):
            hf_s, our_s = pick(s[clock] for s in hf_prefill), pick(s[clock] for s in our_prefill)
            print(
                f"| prefill {len(prefill_prompt)} tokens s ({clock_label} time), {label} of {args.prefill_runs} "
                f"| {hf_s:.3f} | {our_s:.3f} | {hf_s / our_s:.2f}x |"
            )
    print("\nagentd with its projections row-major, as the checkpoint stores them (before agentd.plugins.projection):")
    print("| metric | row-major | agentd | layout speed-up |")
    print("|---|---|---|---|")
    for clock, clock_label in ((0, "wall"), (1, "CPU")):
        rm_tps = 1.0 / statistics.median(s[clock] for s in rm_steps)
        our_tps = 1.0 / statistics.median(s[clock] for s in our_steps)
        print(
            f"| decode tokens/s ({clock_label} time), median | {rm_tps:.1f} | {our_tps:.1f} "
            f"| {our_tps / rm_tps:.2f}x |"
        )
        rm_s = statistics.median(s[clock] for s in rm_prefill)
        our_s = statistics.median(s[clock] for s in our_prefill)
        print(f"| prefill s ({clock_label} time), median | {rm_s:.3f} | {our_s:.3f} | {rm_s / our_s:.2f}x |")

if __name__ == "__main__":
    main()
