"""Mamba on CPU: agentd's SSM backend side by side with transformers' MambaForCausalLM.

Random weights at mamba-130m's shape (vocab 50280, hidden 768, 24 layers,
state 16, conv 4, expand 2), batch 1, fp32, in one process so both see the
same machine load. Measures:

* prefill: time to consume a 512-token prompt (median over repeats).
  transformers is timed twice: with ``logits_to_keep=1`` (what its
  ``generate`` does, and what agentd's prefill does: last position only) and
  as a plain forward (logits for all 512 positions);
* decode: tokens/s of single-token steps after a 128-token prompt (median
  step time over ``--steps`` steps, repeated ``--repeats`` times). For
  transformers both its cached forward step (model call with
  ``cache_params``) and ``generate(do_sample=False)`` end to end (prefill
  time subtracted) are reported;
* the same two for agentd with its projections left row-major, as the
  checkpoint stores them: the gain of ``agentd.plugins.projection``'s layout.

Both wall time and CPU time are reported (with one thread, CPU time leaves
out the time the shared machine gives our core to other jobs).

    python benchmarks/bench_ssm.py               # full run (prints; results go to docs/bench_ssm.md)
    python benchmarks/bench_ssm.py --layers 4    # quick look
    python benchmarks/bench_ssm.py --threads 2   # on an otherwise idle machine

transformers is a dev-only dependency; agentd itself never imports it.
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


#: One measurement: (wall seconds, CPU seconds of this process).
Sample = tuple[float, float]


def _timed(fn) -> Sample:
    """Wall and CPU time of ``fn()``. With one thread, CPU time leaves out the
    time the shared machine gave our core to someone else, so it is the steadier
    figure; wall time is what a user waits."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def build_hf(path: Path, layers: int):
    """Random-weight MambaForCausalLM at mamba-130m's shape, saved to ``path``."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(
        vocab_size=50280,
        hidden_size=768,
        num_hidden_layers=layers,
        state_size=16,
        conv_kernel=4,
        expand=2,
        tie_word_embeddings=True,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=None,
    )
    model = MambaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    return model


class HFRunner:
    """transformers' MambaForCausalLM, one measurement per call."""

    def __init__(self, model, prompt: torch.Tensor, long_prompt: torch.Tensor, steps: int):
        self.model, self.prompt, self.long_prompt, self.steps = model, prompt, long_prompt, steps
        with torch.inference_mode():
            model(long_prompt[:, :16], use_cache=False)  # warm up

    def prefill(self) -> Sample:
        with torch.inference_mode():
            return _timed(lambda: self.model(self.long_prompt, use_cache=True, logits_to_keep=1))

    def prefill_all_logits(self) -> Sample:
        with torch.inference_mode():
            return _timed(lambda: self.model(self.long_prompt, use_cache=False))

    def decode_steps(self) -> list[Sample]:
        """Cached single-token forwards after the prompt, greedy."""
        times = []
        with torch.inference_mode():
            result = self.model(self.prompt, use_cache=True, logits_to_keep=1)
            cache = result.cache_params
            token = result.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(self.steps):
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                result = self.model(token, cache_params=cache, use_cache=True)
                token = result.logits[:, -1].argmax(-1, keepdim=True)
                times.append((time.perf_counter() - start_wall, time.process_time() - start_cpu))
        return times

    def generate(self, new_tokens: int) -> Sample:
        with torch.inference_mode():
            return _timed(
                lambda: self.model.generate(
                    self.prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
                )
            )


class AgentdRunner:
    """agentd's Mamba backend through ``load_model``, one measurement per call.

    ``row_major`` loads the projections as the checkpoint stores them, ``(out, in)``,
    instead of agentd.plugins.projection's layout: the before/after of that change.
    """

    def __init__(self, path: Path, prompt: np.ndarray, long_prompt: np.ndarray, steps: int, row_major: bool = False):
        import agentd
        from agentd.plugins import projection

        with mock.patch.object(projection, "PACKED_DTYPES", frozenset() if row_major else projection.PACKED_DTYPES):
            self.backend = agentd.load_model(path).backend
        self.prompt, self.long_prompt, self.steps = prompt, long_prompt, steps
        self.backend.prefill(long_prompt[:16], self.backend.new_state())  # warm up

    def prefill(self) -> Sample:
        return _timed(lambda: self.backend.prefill(self.long_prompt, self.backend.new_state()))

    def decode_steps(self) -> list[Sample]:
        times = []
        state = self.backend.new_state()
        logits = self.backend.prefill(self.prompt, state)
        token = np.array([int(logits[-1].argmax())])
        for _ in range(self.steps):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            logits = self.backend.decode(token, [state])
            token = np.array([int(logits[-1].argmax())])
            times.append((time.perf_counter() - start_wall, time.process_time() - start_cpu))
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32, help="decode steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both sides; on a shared, oversubscribed CPU more than 1 "
        "makes every parallel op wait on descheduled threads and the timings meaningless",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(1)
    long_prompt = torch.randint(0, 50280, (1, args.prefill_tokens), generator=generator)
    prompt = long_prompt[:, : args.prompt_tokens]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        hf_model = build_hf(path, args.layers)
        ours = AgentdRunner(path, prompt[0].numpy(), long_prompt[0].numpy(), args.steps)
        row_major = AgentdRunner(path, prompt[0].numpy(), long_prompt[0].numpy(), args.steps, row_major=True)
        theirs = HFRunner(hf_model, prompt, long_prompt, args.steps)
        # Round robin, so load changes on a shared machine hit both sides alike.
        samples: dict[str, list[Sample]] = {key: [] for key in (
            "ours_prefill", "rm_prefill", "hf_prefill", "hf_prefill_all",
            "ours_step", "rm_step", "hf_step", "hf_gen_1", "hf_gen_n")}
        for _ in range(args.repeats):
            samples["ours_prefill"].append(ours.prefill())
            samples["rm_prefill"].append(row_major.prefill())
            samples["hf_prefill"].append(theirs.prefill())
            samples["hf_prefill_all"].append(theirs.prefill_all_logits())
            samples["ours_step"].extend(ours.decode_steps())
            samples["rm_step"].extend(row_major.decode_steps())
            samples["hf_step"].extend(theirs.decode_steps())
            samples["hf_gen_1"].append(theirs.generate(1))
            samples["hf_gen_n"].append(theirs.generate(args.steps + 1))
        state_bytes = ours.backend.info.state_bytes_per_sequence
    cpu = platform.processor() or platform.machine()
    print(f"# Mamba, 130m shape, {args.layers} layers, fp32, batch 1, torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op thread(s), {cpu}")
    for clock, label in ((0, "wall time"), (1, "CPU time")):
        m = {key: statistics.median(sample[clock] for sample in values) for key, values in samples.items()}
        hf_generate_step = (m["hf_gen_n"] - m["hf_gen_1"]) / args.steps

        def row(label: str, value: float, ratio: float | None = None) -> None:
            print(f"  {label:<36}{value:>9.3f}" + (f"   ratio {ratio:.2f}x" if ratio is not None else ""))

        print(f"[{label}] prefill {args.prefill_tokens} tokens (seconds, median of {args.repeats}); "
              "ratio = transformers / agentd:")
        row("agentd", m["ours_prefill"])
        row("agentd, row-major projections [*]", m["rm_prefill"], m["rm_prefill"] / m["ours_prefill"])
        row("transformers (logits_to_keep=1)", m["hf_prefill"], m["hf_prefill"] / m["ours_prefill"])
        row("transformers (all logits)", m["hf_prefill_all"], m["hf_prefill_all"] / m["ours_prefill"])
        print(f"[{label}] decode after {args.prompt_tokens} tokens (tokens/s, median step of {args.steps} x "
              f"{args.repeats}); ratio = agentd / transformers:")
        row("agentd backend.decode", 1 / m["ours_step"])
        row("agentd, row-major projections [*]", 1 / m["rm_step"], m["rm_step"] / m["ours_step"])
        row("transformers cached forward step", 1 / m["hf_step"], m["hf_step"] / m["ours_step"])
        row("transformers generate()", 1 / hf_generate_step, hf_generate_step / m["ours_step"])
    print("[*] weights as the checkpoint stores them (before agentd.plugins.projection); ratio = its time / agentd's")
    print(f"state per sequence: {state_bytes} bytes (fixed, 0 per token)")

if __name__ == "__main__":
    main()
