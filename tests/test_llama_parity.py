"""Parity of the Llama/Qwen2 decoder backend with Hugging Face transformers (float32, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _llama_fixtures import VARIANTS, VOCAB, greedy, hf_logits, load_backend, make_hf_model, save_variant
from agentd.formats import open_checkpoint
from agentd.errors import InvalidArgument, ModelLoadError, OutOfRange
from agentd.plugins.transformer.decoder import load
from agentd.plugins.transformer.kv_cache import GROW_TOKENS

pytest.importorskip("transformers")

#: fp32 logits of our backend vs transformers eager, max absolute difference.
ATOL = 1e-4


def ids(count: int, seed: int = 0) -> list[int]:
    return np.random.RandomState(seed).randint(0, VOCAB, count).tolist()


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory):
    """(name, HF model, our backend) for each variant, saved once per module."""
    directory = tmp_path_factory.mktemp(request.param)
    model = save_variant(request.param, directory)
    return request.param, model, load_backend(directory)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama")
    model = save_variant("llama", directory)
    return model, load_backend(directory)


def test_logits_match_transformers(variant):
    _, model, backend = variant
    prompt = ids(37)  # odd length, not a multiple of any block size
    ours = backend.prefill(np.array(prompt), backend.new_state(), all_logits=True)
    assert ours.shape == (37, VOCAB) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, hf_logits(model, prompt), rtol=0, atol=ATOL)


def test_last_logits_only_by_default(variant):
    _, model, backend = variant
    prompt = ids(21, seed=1)
    last = backend.prefill(np.array(prompt), backend.new_state())
    assert last.shape == (1, VOCAB)
    np.testing.assert_allclose(last[0], hf_logits(model, prompt)[-1], rtol=0, atol=ATOL)


def test_model_info(variant):
    _, model, backend = variant
    config = model.config
    info = backend.info
    assert info.architecture == config.architectures[0]
    assert info.kind == "decoder"
    assert info.parameters == sum(p.numel() for p in model.parameters())  # tied counted once
    assert info.context_length == config.max_position_embeddings
    assert info.vocab_size == VOCAB
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert info.state_bytes_per_token == 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4


def test_rope_frequencies_equal_transformers(variant):
    _, model, backend = variant
    ours = backend.model.rotary.inv_freq
    torch.testing.assert_close(ours, model.model.rotary_emb.inv_freq.float(), rtol=0, atol=0)


def test_llama3_rope_scaling_is_applied(tmp_path):
    from transformers import AutoModelForCausalLM

    plain = save_variant("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = VARIANTS["llama3-rope"][1]["rope_scaling"] | {"rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    scaled = load_backend(tmp_path)
    prompt = ids(60, seed=2)
    ours = scaled.prefill(np.array(prompt), scaled.new_state(), all_logits=True)
    # Same weights, different rope: the scaling must change the logits...
    assert np.abs(ours - hf_logits(plain, prompt)).max() > 1e-2
    # ...exactly as transformers applies it.
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    np.testing.assert_allclose(ours, hf_logits(reference, prompt), rtol=0, atol=ATOL)


def test_rope_scaling_in_legacy_config_layout(tmp_path):
    """transformers 4.x wrote `rope_scaling` with `type` plus a top-level `rope_theta`."""
    name = "llama3-rope"
    model = save_variant(name, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    config["rope_scaling"] = rope
    (tmp_path / "config.json").write_text(json.dumps(config))
    backend = load(open_checkpoint(tmp_path))
    prompt = ids(50, seed=3)
    np.testing.assert_allclose(
        backend.prefill(np.array(prompt), backend.new_state(), all_logits=True), hf_logits(model, prompt), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("name", ["llama", "llama3-rope-tied-headdim", "qwen2"])
def test_greedy_generation_matches_transformers(name, tmp_path):
    model = save_variant(name, tmp_path)
    prompt = ids(9, seed=4)
    with torch.no_grad():
        expected = model.generate(
            torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0
        )[0, len(prompt) :].tolist()
    assert len(set(expected)) > 3  # a degenerate repetition would prove little
    assert greedy(load_backend(tmp_path), prompt, 32) == expected
    try:
        from agentd import load_model

        generated = load_model(tmp_path).generate(prompt, max_new_tokens=32)
    except ImportError:  # agentd.generation / agentd.tokenizer not there yet
        return
    assert generated == expected


def test_prefill_then_decode_equals_full_forward(llama):
    model, backend = llama
    prompt = ids(30, seed=5)
    full = hf_logits(model, prompt)
    state = backend.new_state()
    first = backend.prefill(np.array(prompt[:19]), state)
    np.testing.assert_allclose(first[0], full[18], rtol=0, atol=ATOL)
    for position in range(19, 30):
        step = backend.decode(np.array([prompt[position]]), [state])
        np.testing.assert_allclose(step[0], full[position], rtol=0, atol=ATOL)
    assert state.length == 30


@pytest.mark.parametrize("split", [1, 13, 200])
def test_chunked_prefill_equals_one_prefill(llama, split):
    model, backend = llama
    prompt = ids(301, seed=6)  # the second chunk spans several masked query blocks when split is small
    one = backend.prefill(np.array(prompt), backend.new_state(), all_logits=True)
    state = backend.new_state()
    head = backend.prefill(np.array(prompt[:split]), state, all_logits=True)
    tail = backend.prefill(np.array(prompt[split:]), state, all_logits=True)
    np.testing.assert_allclose(np.concatenate([head, tail]), one, rtol=0, atol=ATOL)
    np.testing.assert_allclose(one, hf_logits(model, prompt), rtol=0, atol=ATOL)


def test_batched_decode_equals_each_alone(llama):
    model, backend = llama
    prompts = [ids(5, seed=7), ids(23, seed=8), ids(12, seed=9)]
    nexts = [ids(4, seed=10 + i) for i in range(3)]
    batch_states = [backend.new_state() for _ in prompts]
    alone_states = [backend.new_state() for _ in prompts]
    for prompt, a, b in zip(prompts, batch_states, alone_states):
        backend.prefill(np.array(prompt), a)
        backend.prefill(np.array(prompt), b)
    for step in range(4):
        tokens = np.array([n[step] for n in nexts])
        batched = backend.decode(tokens, batch_states)
        assert batched.shape == (3, VOCAB)
        for i, state in enumerate(alone_states):
            alone = backend.decode(tokens[i : i + 1], [state])
            np.testing.assert_allclose(batched[i], alone[0], rtol=0, atol=1e-5)
            reference = hf_logits(model, prompts[i] + nexts[i][: step + 1])[-1]
            np.testing.assert_allclose(batched[i], reference, rtol=0, atol=ATOL)


def test_save_load_state_round_trip(llama):
    _, backend = llama
    state = backend.new_state()
    backend.prefill(np.array(ids(40, seed=11)), state)
    backend.decode(np.array([3]), [state])
    restored = backend.load_state(backend.save_state(state))
    assert restored.length == state.length == 41
    for token in (5, 7, 11):
        expected = backend.decode(np.array([token]), [state])
        np.testing.assert_array_equal(backend.decode(np.array([token]), [restored]), expected)
    assert backend.state_bytes(restored) >= 44 * backend.info.state_bytes_per_token


def test_load_state_rejects_garbage_and_other_shapes(llama, tmp_path):
    _, backend = llama
    with pytest.raises(InvalidArgument, match="state"):
        backend.load_state(b"not a state at all")
    make_hf_model("llama", num_hidden_layers=1).save_pretrained(tmp_path, safe_serialization=True)
    other = load_backend(tmp_path)
    saved = other.save_state(other.new_state())
    with pytest.raises(InvalidArgument, match="layers=1"):
        backend.load_state(saved)


def test_kv_cache_grows_in_chunks_in_place(llama):
    _, backend = llama
    state = backend.new_state()
    backend.prefill(np.array(ids(10, seed=12)), state)
    assert state.capacity == GROW_TOKENS
    pointer = state.keys.data_ptr()
    for token in range(GROW_TOKENS - 10):
        backend.decode(np.array([token % VOCAB]), [state])
    assert state.keys.data_ptr() == pointer  # written in place, no reallocation within a chunk
    backend.decode(np.array([1]), [state])
    assert state.capacity == 2 * GROW_TOKENS and state.length == GROW_TOKENS + 1


def test_sharded_checkpoint_loads(tmp_path):
    model = save_variant("qwen2", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    backend = load_backend(tmp_path)
    prompt = ids(17, seed=13)
    np.testing.assert_allclose(
        backend.prefill(np.array(prompt), backend.new_state(), all_logits=True), hf_logits(model, prompt), rtol=0, atol=ATOL
    )


def test_bfloat16_checkpoint_is_converted_to_float32(tmp_path):
    from transformers import AutoModelForCausalLM

    make_hf_model("llama").to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    backend = load_backend(tmp_path)
    assert backend.model.embed.dtype == torch.float32
    # The reference reads the same bf16 file into float32 (rope tables stay float32).
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")
    prompt = ids(15, seed=14)
    ours = backend.prefill(np.array(prompt), backend.new_state(), all_logits=True)
    np.testing.assert_allclose(ours, hf_logits(reference.eval(), prompt), rtol=0, atol=ATOL)


def test_unknown_and_missing_tensors_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_variant("llama", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file(weights | {"model.layers.0.mystery.weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="model.layers.0.mystery.weight"):
        load(open_checkpoint(tmp_path))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="model.layers.1.mlp.up_proj.weight"):
        load(open_checkpoint(tmp_path))


def test_bad_config_names_the_field(tmp_path):
    save_variant("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="rope_type"):
        load(open_checkpoint(tmp_path))


def test_context_length_and_token_range_are_enforced(llama):
    _, backend = llama
    state = backend.new_state()
    with pytest.raises(OutOfRange):
        backend.prefill(np.zeros(backend.info.context_length + 1, dtype=np.int64), state)
    with pytest.raises(InvalidArgument, match="token_ids"):
        backend.prefill(np.array([VOCAB]), state)
    assert state.length == 0
