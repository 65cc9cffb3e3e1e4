"""Recurrent models through the whole stack: the real daemon process, the real client.

One ``agentd serve`` process hosts a tiny random Mamba, Mamba-2 and RWKV-4
(written by Hugging Face ``transformers``' ``save_pretrained``, with a small
byte-level BPE tokenizer) next to a tiny Llama. For each model,
``GetModelInfo`` must report the architecture and the state size computed here
from ``config.json`` (bytes per sequence for the recurrent models and none per
token; bytes per token for the transformer), and greedy ``Generate`` over gRPC
must return the ids ``agentd.load_model(path).generate`` gives in-process —
alone, with requests decoded together in one batch, and on a session's second
turn, which continues from the state the first turn left.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

import agentd
from agentd.client import Client, SamplingOptions, ids_request
from agentd.v1 import inference_pb2, inference_pb2_grpc, models_pb2
from tests._daemon_fixtures import serve_process, tiny_llama
from tests._rwkv_fixtures import make_hf_rwkv4
from tests._ssm_fixtures import make_hf_mamba, make_hf_mamba2
from tests._tokenizer_fixtures import write_chat_tokenizer

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 240  # torch plus four models on a busy two-core machine
NEW_TOKENS = 12
#: Tokens of the tiny BPE tokenizer the recurrent checkpoints get.
TOKENIZER_VOCAB = 300
PROMPTS = ("The quick brown fox", "What is the weather like today?", "Hello! How are you?")


def _recurrent_checkpoint(directory: Path, make) -> Path:  # noqa: ANN001 - a fixture builder
    make(directory, vocab=TOKENIZER_VOCAB)
    write_chat_tokenizer(directory, "smollm2")
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "mamba": _recurrent_checkpoint(root / "mamba", make_hf_mamba),
        "mamba2": _recurrent_checkpoint(root / "mamba2", make_hf_mamba2),
        "rwkv4": _recurrent_checkpoint(root / "rwkv4", make_hf_rwkv4),
        "llama": tiny_llama(root),
    }


@pytest.fixture(scope="module")
def target(checkpoints, tmp_path_factory):
    """``unix://`` target of an ``agentd serve`` process serving every checkpoint."""
    with serve_process(checkpoints, tmp_path_factory.mktemp("home"), timeout=STARTUP_TIMEOUT) as running:
        yield running


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _expected_state_bytes(name: str, config: dict) -> tuple[int, int]:
    """``(per_token, per_sequence)`` fp32 state bytes, from the architecture's definition."""
    layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    if name == "mamba":
        inner = config["expand"] * hidden
        # Per layer: the last conv_kernel - 1 inputs of each inner channel, and a (inner, state) SSM state.
        return 0, 4 * layers * ((config["conv_kernel"] - 1) * inner + inner * config["state_size"])
    if name == "mamba2":
        inner, groups, n = config["expand"] * hidden, config["n_groups"], config["state_size"]
        conv_channels = inner + 2 * groups * n  # x, B and C go through the conv
        ssm = config["num_heads"] * config["head_dim"] * n
        return 0, 4 * layers * ((config["conv_kernel"] - 1) * conv_channels + ssm)
    if name == "rwkv4":
        # Per layer: both token-shift inputs and the WKV numerator, denominator and running max.
        return 0, 4 * layers * 5 * hidden
    # Llama: a key and a value vector per KV head, per layer, per token.
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    return 4 * 2 * layers * config["num_key_value_heads"] * head_dim, 0


@pytest.mark.parametrize("name", ["mamba", "mamba2", "rwkv4", "llama"])
def test_model_info_reports_architecture_and_state_size(target, checkpoints, name) -> None:
    config = _config(checkpoints[name])
    with Client(target, timeout=30) as client:
        info = client.model_info(name)
    assert info.status == models_pb2.MODEL_STATUS_READY
    assert info.architecture == config["architectures"][0]
    assert info.kind == models_pb2.MODEL_KIND_DECODER
    assert info.vocab_size == config["vocab_size"]
    per_token, per_sequence = _expected_state_bytes(name, config)
    assert (info.state_bytes_per_token, info.state_bytes_per_sequence) == (per_token, per_sequence)
    if name == "llama":
        assert per_token > 0
    else:
        assert per_sequence > 0


def _ids_over_grpc(client: Client, name: str, prompt: list[int]) -> list[int]:
    stream = client.generate_ids(prompt, model=name, sampling=SamplingOptions(max_tokens=NEW_TOKENS, temperature=0))
    return [token for chunk in stream for token in chunk.token_ids]


@pytest.mark.parametrize("name", ["mamba", "mamba2", "rwkv4", "llama"])
def test_greedy_generate_over_grpc_equals_in_process(target, checkpoints, name) -> None:
    model = agentd.load_model(checkpoints[name])
    prompts = [model.tokenizer.encode(text) for text in PROMPTS]
    expected = [model.generate(prompt, max_new_tokens=NEW_TOKENS) for prompt in prompts]
    assert all(expected), "the in-process generations are empty: nothing compared"
    with Client(target, timeout=60) as client:
        # One at a time: each request decodes alone (batch of one, in-place state views).
        alone = [_ids_over_grpc(client, name, prompt) for prompt in prompts]
        # All at once: the engine decodes them together (stacked states, written back).
        with ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(lambda prompt: _ids_over_grpc(client, name, prompt), prompts))
    assert alone == expected
    assert together == expected


@pytest.mark.parametrize("name", ["mamba", "rwkv4"])
def test_text_prompt_over_grpc_equals_in_process(target, checkpoints, name) -> None:
    """A text prompt is tokenized by the daemon as the in-process tokenizer does."""
    model = agentd.load_model(checkpoints[name])
    text = PROMPTS[0]
    expected = model.generate(model.tokenizer.encode(text, add_special_tokens=True), max_new_tokens=NEW_TOKENS)
    with Client(target, timeout=60) as client:
        stream = client.generate(text, model=name, sampling=SamplingOptions(max_tokens=NEW_TOKENS, temperature=0))
        got = [token for chunk in stream for token in chunk.token_ids]
    assert got == expected


def _session_turn(target: str, name: str, prompt: list[int], session: str) -> tuple[list[int], int, int]:
    """Greedy ids, session outcome and cached prompt tokens of one Generate in ``session``."""
    request = ids_request(prompt, name, SamplingOptions(max_tokens=NEW_TOKENS, temperature=0))
    request.session_id = session
    ids: list[int] = []
    with grpc.insecure_channel(target) as channel:
        for chunk in inference_pb2_grpc.InferenceStub(channel).Generate(request, timeout=60):
            ids.extend(chunk.token_ids)
            last = chunk
    return ids, last.session_outcome, last.usage.cached_prompt_tokens


@pytest.mark.parametrize("name", ["mamba", "rwkv4"])
def test_session_second_turn_continues_from_the_kept_state(target, checkpoints, name) -> None:
    """Turn two prefills only its new tokens onto turn one's state, and equals a fresh full run."""
    model = agentd.load_model(checkpoints[name])
    first = model.tokenizer.encode(PROMPTS[1])
    reply, outcome, _ = _session_turn(target, name, first, f"s-{name}")
    assert outcome == inference_pb2.SESSION_OUTCOME_CREATED
    assert reply == model.generate(first, max_new_tokens=NEW_TOKENS)
    second = [*first, *reply, *model.tokenizer.encode(PROMPTS[2])]
    ids, outcome, cached = _session_turn(target, name, second, f"s-{name}")
    assert outcome == inference_pb2.SESSION_OUTCOME_CONTINUED
    assert cached >= len(first)  # the first turn's prompt was not prefilled again
    assert ids == model.generate(second, max_new_tokens=NEW_TOKENS)
