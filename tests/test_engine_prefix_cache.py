"""Prefix cache: a repeated prefix (a system prompt) is prefilled once, with identical output.

Engine level on a tiny Llama and a tiny Mamba (transformers is the greedy
reference), then over the wire with a chat whose system prompt repeats, and
the cache's own LRU budget.
"""

from __future__ import annotations

import numpy as np
import pytest
import transformers

from _serving_fixtures import ServingHarness, assert_greedy_under, collect
from agentd import load_model
from agentd.engine import Engine, PrefixCache
from agentd.generation import SamplingParams
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import inference_pb2 as pb
from tests._daemon_fixtures import socket_dir, tiny_llama

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, tuple[object, object]]:
    """name -> (agentd Model, transformers reference)."""
    from _llama_fixtures import make_hf_model
    from _ssm_fixtures import make_hf_mamba

    root = tmp_path_factory.mktemp("models")
    llama = make_hf_model("llama", seed=1, vocab_size=128)
    llama.save_pretrained(root / "llama", safe_serialization=True)
    mamba = make_hf_mamba(root / "mamba")
    return {"llama": (load_model(root / "llama"), llama), "mamba": (load_model(root / "mamba"), mamba)}


@pytest.mark.parametrize("name", ["llama", "mamba"])
def test_second_request_with_the_same_prefix_prefills_only_the_rest(tiny_models, name) -> None:
    model, reference = tiny_models[name]
    rng = np.random.default_rng(7)
    system = rng.integers(0, 128, size=40).tolist()
    first, second = system + rng.integers(0, 128, size=9).tolist(), system + rng.integers(0, 128, size=6).tolist()
    cache = PrefixCache(1 << 20)
    with Engine.from_model(model, prefix_cache=cache, prefill_chunk=16) as engine:
        one = engine.submit(first, GREEDY, prefix_boundaries=[len(system)])
        first_ids = [e.token_id for e in one if e.token_id is not None]
        two = engine.submit(second, GREEDY, prefix_boundaries=[len(system)])
        second_ids = [e.token_id for e in two if e.token_id is not None]
    assert one.cached_tokens == 0 and two.cached_tokens == len(system)
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    # Identical to generating without any cache, and greedy under transformers.
    assert first_ids == model.generate(first, 8, ignore_eos=True)
    assert second_ids == model.generate(second, 8, ignore_eos=True)
    assert_greedy_under(reference, second, second_ids)


def test_repeated_system_prompt_over_the_wire(tmp_path) -> None:
    path = tiny_llama(tmp_path)
    table = ModelTable.load([ModelSource("chat", path)])
    system = {"role": "system", "content": "Be brief, always."}

    def chat(user: str) -> tuple[list[int], pb.GenerateResponse]:
        request = pb.GenerateRequest(model="chat", max_tokens=6, temperature=0.0)
        messages = [system, {"role": "user", "content": user}]
        request.messages.CopyFrom(pb.ChatMessages(messages=[pb.ChatMessage(**m) for m in messages]))
        return collect(harness.inference.Generate(request, timeout=60))

    with socket_dir() as directory, ServingHarness(table, directory / "p.sock") as harness:
        first, first_last = chat("Hi!")
        second, second_last = chat("Yo.")
    model = table.get("chat").model
    head = model.tokenizer.apply_chat_template([system], add_generation_prompt=False)
    prompt = model.tokenizer.apply_chat_template([system, {"role": "user", "content": "Yo."}])
    assert first_last.usage.cached_prompt_tokens == 0
    assert second_last.usage.cached_prompt_tokens == len(head) > 0
    assert second_last.usage.prompt_tokens == len(prompt)
    assert second == model.generate(prompt, 6)  # no cache involved
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    assert_greedy_under(reference, prompt, second)
    assert table.get("chat").prefix_cache.hits == 1


def test_prefix_cache_budget_evicts_least_recently_used() -> None:
    cache = PrefixCache(budget_bytes=3 * (100 + 8 * 4))
    prefixes = [np.arange(i, i + 4) for i in range(4)]
    for prefix in prefixes[:3]:
        assert cache.store(prefix, bytes(100))
    prompt = np.concatenate([prefixes[0], [99]])
    assert cache.lookup(prompt, [4]) == (4, bytes(100))  # touches prefixes[0]
    cache.store(prefixes[3], bytes(100))
    assert not cache.contains(prefixes[1]) and cache.contains(prefixes[0]) and len(cache) == 3
    assert cache.nbytes <= cache.budget_bytes
    assert not cache.store(prefixes[1], bytes(10_000))  # larger than the whole budget
    # Only boundaries strictly inside the prompt count (one token must be left to prefill).
    assert cache.lookup(prefixes[0], [4]) is None
