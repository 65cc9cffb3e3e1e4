"""The gRPC servicers in-process: results against Hugging Face, status codes, health, reflection.

One daemon per module serves a tiny random Llama (``tiny-llama``) and a tiny
random BERT (``tiny-bert``) on a temporary Unix socket and a loopback TCP
port; tests talk to it with agentd's client and with raw gRPC stubs.
"""

from __future__ import annotations

import socket as socketlib
import stat
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import transformers
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from google.protobuf import descriptor_pb2

from agentd.client import Client, SamplingOptions
from _random_llama import RANDOM_WEIGHTS_LABEL, RandomLlamaSpec, build_random_llama
from agentd.errors import AgentdError, InvalidArgument, NotFound, OutOfRange, Unavailable
from agentd.server.app import Daemon
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import inference_pb2_grpc, models_pb2, models_pb2_grpc
from tests._daemon_fixtures import InProcessDaemon, socket_dir, tiny_bert, tiny_llama

LLAMA, BERT = "tiny-llama", "tiny-bert"
CONTEXT = 96  # tiny-llama's max_position_embeddings
LOGIT_ATOL = 1e-4  # float32 forward of agentd vs transformers on a 2-layer model
EMBED_ATOL = 1e-5


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {LLAMA: tiny_llama(root), BERT: tiny_bert(root)}


@pytest.fixture(scope="module")
def table(model_dirs) -> ModelTable:
    return ModelTable.load([ModelSource(name, path) for name, path in model_dirs.items()])


@pytest.fixture(scope="module")
def daemon(table):
    with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock", tcp=("127.0.0.1", 0)) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon) -> Client:
    with Client(daemon.targets[0], timeout=60) as connection:
        yield connection


@pytest.fixture(scope="module")
def channel(daemon):
    with grpc.insecure_channel(daemon.targets[0]) as connection:
        yield connection


@pytest.fixture(scope="module")
def hf_llama(model_dirs):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dirs[LLAMA], attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="module")
def hf_tokenizers(model_dirs):
    return {name: transformers.AutoTokenizer.from_pretrained(path) for name, path in model_dirs.items()}


def hf_log_probs(model, ids: list[int]) -> np.ndarray:
    """log_softmax of transformers' logits for every position of ``ids``, float64 ``(T, V)``."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def stream_all(client: Client, **kwargs) -> tuple[list[pb.GenerateResponse], object]:
    stream = client.generate(**kwargs)
    return list(stream), stream


# -- Generate -------------------------------------------------------------------------------
def test_greedy_generate_matches_model_and_transformers(client, table, hf_llama, hf_tokenizers) -> None:
    prompt = "The quick brown fox"
    chunks, stream = stream_all(client, prompt=prompt, model=LLAMA, sampling=SamplingOptions(max_tokens=12, temperature=0))
    ids = [i for chunk in chunks for i in chunk.token_ids]
    logprobs = [p for chunk in chunks for p in chunk.logprobs]
    text = "".join(chunk.text for chunk in chunks)

    # Same ids and text as the in-process Model API.
    model = table.get(LLAMA).model
    prompt_ids = model.tokenizer.encode(prompt)
    assert ids == model.generate(prompt_ids, max_new_tokens=12)
    assert text == model.tokenizer.decode(ids)

    # Reference: transformers tokenizes the prompt the same way and, teacher-forced,
    # ranks every generated token first, with the same log-probability.
    assert prompt_ids == hf_tokenizers[LLAMA](prompt).input_ids
    log_probs = hf_log_probs(hf_llama, prompt_ids + ids)
    for step, (token, logprob) in enumerate(zip(ids, logprobs)):
        row = log_probs[len(prompt_ids) - 1 + step]
        assert row[token] >= row.max() - LOGIT_ATOL, f"step {step}: token {token} is not the argmax"
        np.testing.assert_allclose(logprob, row[token], atol=LOGIT_ATOL, rtol=0)

    # One message per token, then the final one with finish reason and usage.
    assert all(len(chunk.token_ids) == 1 for chunk in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert last.usage.prompt_tokens == len(prompt_ids)
    assert last.usage.completion_tokens == len(ids)
    if last.finish_reason == pb.FINISH_REASON_LENGTH:
        assert len(ids) == 12
    assert stream.finish_reason in ("stop", "length")


def test_chat_uses_the_chat_template_like_transformers(client, table, hf_tokenizers) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    stream = client.chat(messages, model=LLAMA, sampling=SamplingOptions(max_tokens=6, temperature=0))
    chunks = list(stream)
    reference = hf_tokenizers[LLAMA].apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    reference_ids = list(reference["input_ids"] if hasattr(reference, "keys") else reference)
    assert stream.usage.prompt_tokens == len(reference_ids)
    ids = [i for chunk in chunks for i in chunk.token_ids]
    assert ids == table.get(LLAMA).model.generate(reference_ids, max_new_tokens=6)


def test_prompt_token_ids_and_seeded_sampling_are_reproducible(client, table) -> None:
    sampling = SamplingOptions(max_tokens=10, temperature=1.0, top_k=50, seed=1234)
    first = [i for c in client.generate_ids([10, 20, 30], model=LLAMA, sampling=sampling) for i in c.token_ids]
    second = [i for c in client.generate_ids([10, 20, 30], model=LLAMA, sampling=sampling) for i in c.token_ids]
    assert first == second
    expected = table.get(LLAMA).model.generate([10, 20, 30], max_new_tokens=10, temperature=1.0, top_k=50, seed=1234)
    assert first == expected


def test_stop_string_ends_generation_before_the_match(client) -> None:
    sampling = SamplingOptions(max_tokens=16, temperature=0)
    full = client.generate_ids([65, 66, 67], model=LLAMA, sampling=sampling).text()
    assert len(full) >= 3
    stop = full[1:3]
    stream = client.generate_ids(
        [65, 66, 67], model=LLAMA, sampling=SamplingOptions(max_tokens=16, temperature=0, stop=(stop,))
    )
    assert stream.text() == full[: full.index(stop)]
    assert stream.finish_reason == "stop"


def test_cancelling_the_call_stops_generation_at_the_next_token(client, table, monkeypatch) -> None:
    served = table.get(LLAMA)
    backend = served.model.backend
    decode_calls = 0
    original_decode = backend.decode

    def slow_decode(token_ids, states):
        nonlocal decode_calls
        decode_calls += 1
        time.sleep(0.05)  # so a run to max_tokens would take seconds
        return original_decode(token_ids, states)

    monkeypatch.setattr(backend, "decode", slow_decode)
    max_tokens = CONTEXT - 4
    stream = client.generate_ids([1, 2, 3], model=LLAMA, sampling=SamplingOptions(max_tokens=max_tokens, temperature=0))
    for received, _ in enumerate(stream, start=1):
        if received == 2:
            stream.cancel()
    assert stream.finish_reason == "cancelled"

    # The worker notices the flag and releases the model; wait for that, not for a time.
    deadline = time.monotonic() + 30
    while served.lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not served.lock.locked()
    assert decode_calls < max_tokens - 1, "generation ran on after the client cancelled"
    monkeypatch.undo()
    assert client.generate_ids([1], model=LLAMA, sampling=SamplingOptions(max_tokens=2)).text() is not None
    assert client.health() == "SERVING"


# -- Embed / Tokenize / Detokenize ------------------------------------------------------------------
def test_embed_matches_transformers_mean_pooling(client, model_dirs, hf_tokenizers) -> None:
    texts = ["hello world", "agentd serves embeddings", "a"]
    vectors = client.embed(texts, model=BERT)
    assert vectors.shape == (3, 32)

    model = transformers.BertModel.from_pretrained(model_dirs[BERT]).eval()
    batch = hf_tokenizers[BERT](texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double()  # (B, T, C)
    mask = batch["attention_mask"].unsqueeze(-1).double()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    reference = (pooled / pooled.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(vectors, reference, atol=EMBED_ATOL, rtol=0)


@pytest.mark.parametrize("name", [LLAMA, BERT])
def test_tokenize_detokenize_round_trip_matches_transformers(client, hf_tokenizers, name) -> None:
    text = "hello world, agentd é"
    tokens = client.tokenize(text, model=name, add_special_tokens=True)
    reference = hf_tokenizers[name]
    assert list(tokens.ids) == reference(text).input_ids
    assert list(tokens.tokens) == reference.convert_ids_to_tokens(reference(text).input_ids)
    assert client.detokenize(tokens.ids, model=name, skip_special_tokens=True) == reference.decode(
        tokens.ids, skip_special_tokens=True
    )
    assert client.detokenize(tokens.ids, model=name) == reference.decode(tokens.ids, skip_special_tokens=False)


def test_llama_byte_level_round_trip_is_exact(client) -> None:
    text = "Grüße, 世界! 🙂\n\tend"
    ids = client.tokenize(text, model=LLAMA, add_special_tokens=False).ids
    assert client.detokenize(ids, model=LLAMA) == text


# -- Models -------------------------------------------------------------------------------------
def test_list_models_and_model_info(client, table, model_dirs) -> None:
    listed = client.list_models()
    assert [info.name for info in listed] == [LLAMA, BERT]
    llama, bert = listed
    assert llama.kind == models_pb2.MODEL_KIND_DECODER and bert.kind == models_pb2.MODEL_KIND_ENCODER
    assert llama.architecture == "LlamaForCausalLM" and bert.architecture == "BertModel"
    assert llama.context_length == CONTEXT and llama.vocab_size == 259
    assert llama.state_bytes_per_token > 0 and bert.embedding_dim == 32
    # The random-weights label travels with the checkpoint's config.json.
    assert llama.description == RANDOM_WEIGHTS_LABEL and bert.description == ""
    assert llama.source == str(model_dirs[LLAMA].resolve())
    assert client.model_info(BERT) == bert
    assert client.default_model("decoder") == LLAMA and client.default_model("encoder") == BERT
    assert (llama.default, bert.default) == (True, True)


def test_requests_naming_no_model_go_to_the_default_of_their_kind(client, channel) -> None:
    sampling = SamplingOptions(max_tokens=5, temperature=0)
    assert client.generate("Hello", sampling=sampling).text() == client.generate("Hello", model=LLAMA, sampling=sampling).text()
    np.testing.assert_array_equal(client.embed(["a cat"]), client.embed(["a cat"], model=BERT))
    stub = inference_pb2_grpc.InferenceStub(channel)  # raw requests: nothing fills the model in client-side
    assert stub.Embed(pb.EmbedRequest(texts=["a cat"]), timeout=30).dim == 32
    chunks = list(stub.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=3, temperature=0), timeout=60))
    assert sum(len(chunk.token_ids) for chunk in chunks) == 3


# -- errors -----------------------------------------------------------------------------------
def _generate_request(**fields) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=fields.pop("model", LLAMA))
    if "messages" in fields:
        request.messages.CopyFrom(pb.ChatMessages(messages=[pb.ChatMessage(**m) for m in fields.pop("messages")]))
    if "prompt_token_ids" in fields:
        request.prompt_token_ids.CopyFrom(pb.TokenIds(ids=fields.pop("prompt_token_ids")))
    stop = fields.pop("stop", [])
    request.stop.extend(stop)
    for name, value in fields.items():
        setattr(request, name, value)
    return request


GENERATE_ERRORS = [
    # (request fields, status code, the field or phrase the message must start with)
    ({"model": "no-such-model", "prompt": "hi"}, grpc.StatusCode.NOT_FOUND, "model 'no-such-model' is not served"),
    ({"model": BERT, "prompt": "hi"}, grpc.StatusCode.INVALID_ARGUMENT, "model:"),
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "prompt:"),
    ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "prompt:"),
    ({"messages": []}, grpc.StatusCode.INVALID_ARGUMENT, "messages:"),
    ({"messages": [{"role": "", "content": "x"}]}, grpc.StatusCode.INVALID_ARGUMENT, "messages[0].role:"),
    ({"prompt_token_ids": []}, grpc.StatusCode.INVALID_ARGUMENT, "prompt_token_ids:"),
    ({"prompt_token_ids": [1, 259]}, grpc.StatusCode.INVALID_ARGUMENT, "prompt_token_ids:"),
    ({"prompt": "hi", "max_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens:"),
    ({"prompt": "hi", "max_tokens": CONTEXT + 1}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens:"),
    ({"prompt": "hi", "temperature": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "temperature:"),
    ({"prompt": "hi", "top_p": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "top_p:"),
    ({"prompt": "hi", "top_k": -1}, grpc.StatusCode.INVALID_ARGUMENT, "top_k:"),
    ({"prompt": "hi", "min_p": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "min_p:"),
    ({"prompt": "hi", "repetition_penalty": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "repetition_penalty:"),
    ({"prompt": "hi", "stop": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "stop:"),
    ({"prompt": "x" * CONTEXT}, grpc.StatusCode.OUT_OF_RANGE, "prompt has 96 tokens"),
]


@pytest.mark.parametrize(("fields", "code", "prefix"), GENERATE_ERRORS, ids=[e[2] for e in GENERATE_ERRORS])
def test_generate_errors_map_to_status_codes(channel, fields, code, prefix) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(_generate_request(**fields), timeout=30))
    assert caught.value.code() == code
    assert caught.value.details().startswith(prefix), caught.value.details()


def test_other_rpc_errors(channel) -> None:
    inference = inference_pb2_grpc.InferenceStub(channel)
    models = models_pb2_grpc.ModelsStub(channel)
    cases = [
        (lambda: inference.Embed(pb.EmbedRequest(model=LLAMA, texts=["x"])), grpc.StatusCode.INVALID_ARGUMENT, "model:"),
        (lambda: inference.Embed(pb.EmbedRequest(model=BERT)), grpc.StatusCode.INVALID_ARGUMENT, "texts:"),
        (lambda: inference.Tokenize(pb.TokenizeRequest(model="nope")), grpc.StatusCode.NOT_FOUND, "model 'nope'"),
        (lambda: inference.Detokenize(pb.DetokenizeRequest(model=LLAMA, ids=[-1])), grpc.StatusCode.INVALID_ARGUMENT, "ids:"),
        (lambda: models.GetModelInfo(models_pb2.GetModelInfoRequest(name="nope")), grpc.StatusCode.NOT_FOUND, "model 'nope'"),
        (lambda: models.GetModelInfo(models_pb2.GetModelInfoRequest()), grpc.StatusCode.INVALID_ARGUMENT, "name:"),
    ]
    for call, code, prefix in cases:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert (caught.value.code(), caught.value.details()[: len(prefix)]) == (code, prefix)


def test_client_raises_agentd_errors(client) -> None:
    with pytest.raises(NotFound, match="no-such-model"):
        client.model_info("no-such-model")
    with pytest.raises(InvalidArgument) as caught:
        client.generate("hi", model=LLAMA, sampling=SamplingOptions(top_p=2.0)).text()
    assert caught.value.field == "top_p"
    with pytest.raises(OutOfRange):
        client.generate("x" * CONTEXT, model=LLAMA).text()


def test_unexpected_errors_are_internal_without_details(channel, table, monkeypatch, caplog) -> None:
    def broken_embed(texts):
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(table.get(BERT).model, "embed", broken_embed)
    stub = inference_pb2_grpc.InferenceStub(channel)
    with caplog.at_level("ERROR", logger="agentd.server.interceptor"):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(model=BERT, texts=["x"]))
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details() and "Traceback" not in error.details()
    request_id = dict(error.trailing_metadata())["x-request-id"]
    assert f"request id {request_id}" in error.details()
    # The traceback stays in the server log, under the same request id.
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and "secret-internal-detail" in str(logged[0].exc_info[1])
    monkeypatch.undo()
    assert len(stub.Embed(pb.EmbedRequest(model=BERT, texts=["x"])).embeddings) == 1  # still serving


def test_unreachable_daemon_is_unavailable(tmp_path) -> None:
    with Client(f"unix://{tmp_path}/none.sock") as client:
        with pytest.raises(Unavailable, match="is `agentd serve` running"):
            client.list_models()


# -- health, reflection, listening ----------------------------------------------------------------
@pytest.mark.parametrize("service", ["", "agentd.v1.Inference", "agentd.v1.Models"])
def test_health_is_serving(channel, service) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services_and_serves_descriptors(channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="agentd.v1.Inference"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests)))
    names = {service.name for service in listed.list_services_response.service}
    assert {"agentd.v1.Inference", "agentd.v1.Models", "grpc.health.v1.Health"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in described.file_descriptor_response.file_descriptor_proto]
    assert "agentd/v1/inference.proto" in {f.name for f in files}


def test_unix_socket_is_owner_only_and_tcp_is_served(daemon) -> None:
    path = Path(daemon.targets[0].removeprefix("unix://"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert daemon.targets[1].startswith("127.0.0.1:")
    with Client(daemon.targets[1]) as tcp_client:
        assert tcp_client.health("agentd.v1.Inference") == "SERVING"


def test_listening_rules(table) -> None:
    with socket_dir() as directory:
        with pytest.raises(InvalidArgument, match="--tcp: 0.0.0.0 is not a loopback"):
            Daemon(table, socket_path=None, tcp=("0.0.0.0", 50051))
        with pytest.raises(InvalidArgument, match="--socket: .* too long"):
            InProcessDaemon(table, directory / ("x" * 120)).__enter__()

        # A stale socket (its daemon died) is replaced; a new directory is made 0700.
        stale = directory / "run" / "a.sock"
        stale.parent.mkdir()
        dead = socketlib.socket(socketlib.AF_UNIX)
        dead.bind(str(stale))
        dead.close()
        with InProcessDaemon(table, stale) as first:
            assert Client(first.targets[0]).health() == "SERVING"
            # ...but a live one is never stolen.
            with pytest.raises(AgentdError, match="already listening"):
                InProcessDaemon(table, stale).__enter__()
        assert not stale.exists()

        fresh = directory / "new" / "sub" / "a.sock"
        with InProcessDaemon(table, fresh):
            assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# -- the default model builder ---------------------------------------------------------------------
def test_random_llama_is_deterministic_and_loads_in_transformers(tmp_path, hf_tokenizers) -> None:
    spec = RandomLlamaSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=48, max_position_embeddings=64)
    first = build_random_llama(tmp_path / "a", spec)
    second = build_random_llama(tmp_path / "b", spec)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no staging leftovers

    model, loading = transformers.AutoModelForCausalLM.from_pretrained(first, output_loading_info=True)
    assert not any(loading.values()), loading
    weights = model.model.embed_tokens.weight.detach().numpy()
    assert abs(float(weights.std()) - spec.std) < 0.002
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied


def test_no_default_of_a_kind_that_is_not_served(model_dirs) -> None:
    only_encoder = ModelTable.load([ModelSource(BERT, model_dirs[BERT])])
    assert only_encoder.default_name("encoder") == BERT and only_encoder.default_name(None) == BERT
    with pytest.raises(InvalidArgument, match="model: is empty and no decoder model is served"):
        only_encoder.default_name("decoder")
