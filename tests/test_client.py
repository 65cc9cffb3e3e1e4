"""The Python SDK: blocking and asyncio clients against an in-process daemon, checked against Hugging Face.

The daemon serves a tiny random Llama and a tiny random BERT over a Unix
socket and over TLS + token TCP; greedy tokens are compared with
``transformers`` ``generate`` and embeddings with a mean-pooled ``BertModel``.
The CLI's ``--tcp --tls-ca --token-file`` flags are checked to stream what
the SDK gets.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

from agentd.aio_client import AsyncClient
from agentd.cli import _register_commands, app
from agentd.client import Client, Credentials, SamplingOptions
from agentd.config import ServeConfig
from agentd.errors import InvalidArgument, NotFound
from agentd.server.auth import Security
from agentd.server.served import ModelSource, ModelTable
from tests._daemon_fixtures import socket_dir, tiny_bert, tiny_llama
from tests._deploy_fixtures import in_process_daemon, make_pki, write_token

LLAMA, BERT = "tiny-llama", "tiny-bert"
EMBED_ATOL = 1e-5  # float32 BERT forward of agentd vs transformers, 2 layers
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {LLAMA: tiny_llama(root), BERT: tiny_bert(root)}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    directory = tmp_path_factory.mktemp("secrets")
    return make_pki(directory), write_token(directory)


@pytest.fixture(scope="module")
def daemon(model_dirs, secrets):
    pki, token_file = secrets
    table = ModelTable.load([ModelSource(name, path) for name, path in model_dirs.items()])
    security = Security.from_config(
        ServeConfig(tcp=("127.0.0.1", 0), tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=token_file)
    )
    with socket_dir() as directory:
        with in_process_daemon(table, directory / "c.sock", tcp=("127.0.0.1", 0), security=security) as running:
            yield running


@pytest.fixture(scope="module")
def remote(daemon, secrets) -> Credentials:
    pki, token_file = secrets
    return Credentials(ca_file=pki.ca, token_file=token_file)


@pytest.fixture(scope="module")
def hf_greedy(model_dirs):
    """Greedy continuation ids of PROMPT from transformers (the reference)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs[LLAMA])
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dirs[LLAMA], attn_implementation="eager").eval()
    prompt_ids = tokenizer(PROMPT, return_tensors="pt").input_ids

    def continuation(max_new_tokens: int) -> list[int]:
        with torch.no_grad():
            out = model.generate(
                prompt_ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        return out[0, prompt_ids.shape[1]:].tolist()

    return continuation


def run(coroutine):
    return asyncio.run(coroutine)


def test_sync_client_over_tls_matches_transformers(daemon, remote, hf_greedy) -> None:
    with Client(daemon.targets[1], credentials=remote, timeout=60) as client:
        stream = client.generate(PROMPT, model=LLAMA, sampling=SamplingOptions(max_tokens=10, temperature=0))
        ids = [i for chunk in stream for i in chunk.token_ids]
        assert stream.request_id and stream.usage.completion_tokens == 10
    assert ids == hf_greedy(10)


def test_async_client_matches_transformers_and_the_sync_client(daemon, remote, hf_greedy) -> None:
    async def scenario():
        async with AsyncClient(daemon.targets[1], credentials=remote, timeout=60) as client:
            assert [m.name for m in await client.list_models()] == [LLAMA, BERT]
            assert await client.default_model("encoder") == BERT
            stream = await client.generate(PROMPT, sampling=SamplingOptions(max_tokens=10, temperature=0))
            ids = [i async for chunk in stream for i in chunk.token_ids]
            return ids, stream.finish_reason, await stream.request_id()

    ids, finish, request_id = run(scenario())
    assert ids == hf_greedy(10) and finish == "length" and request_id


def test_async_client_runs_concurrent_streams(daemon) -> None:
    async def scenario():
        async with AsyncClient(daemon.targets[0], timeout=60) as client:
            streams = [
                await client.generate(PROMPT, model=LLAMA, sampling=SamplingOptions(max_tokens=6, temperature=0))
                for _ in range(3)
            ]
            return await asyncio.gather(*(stream.text() for stream in streams))

    with Client(daemon.targets[0], timeout=60) as client:
        expected = client.generate(PROMPT, model=LLAMA, sampling=SamplingOptions(max_tokens=6, temperature=0)).text()
    assert run(scenario()) == [expected] * 3


def test_async_chat_tokenize_detokenize_and_embed(daemon, model_dirs) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    texts = ["a cat sat", "a dog ran"]

    async def scenario():
        async with AsyncClient(daemon.targets[0], timeout=60) as client:
            chat = await (await client.chat(messages, sampling=SamplingOptions(max_tokens=5, temperature=0))).text()
            tokens = await client.tokenize("hello world", model=LLAMA)
            text = await client.detokenize(list(tokens.ids), model=LLAMA)
            vectors = await client.embed(texts)
            return chat, tokens, text, vectors

    chat, tokens, text, vectors = run(scenario())
    with Client(daemon.targets[0], timeout=60) as client:
        assert chat == client.chat(messages, sampling=SamplingOptions(max_tokens=5, temperature=0)).text()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs[LLAMA])
    assert list(tokens.ids) == hf_tokenizer("hello world").input_ids and text == "hello world"
    # Reference: mean-pooled, L2-normalised transformers BertModel.
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dirs[BERT])
    bert = transformers.BertModel.from_pretrained(model_dirs[BERT]).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**batch).last_hidden_state
    mask = batch.attention_mask.unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=EMBED_ATOL, rtol=0)


def test_async_cancel_stops_the_stream(daemon) -> None:
    async def scenario():
        async with AsyncClient(daemon.targets[0], timeout=60) as client:
            stream = await client.generate("Tell me a story", model=LLAMA, sampling=SamplingOptions(max_tokens=80, temperature=0))
            received = 0
            async for _ in stream:
                received += 1
                if received == 2:
                    stream.cancel()
            return received, stream.finish_reason, await client.health()

    received, finish, health = run(scenario())
    assert finish == "cancelled" and received < 80 and health == "SERVING"


def test_async_errors_are_agentd_errors(daemon) -> None:
    async def scenario(coroutine_factory):
        async with AsyncClient(daemon.targets[0], timeout=60) as client:
            stream = await coroutine_factory(client)
            return await stream.text()

    with pytest.raises(NotFound, match="model 'nope' is not served"):
        run(scenario(lambda c: c.generate("hi", model="nope")))
    with pytest.raises(InvalidArgument, match="^top_p: must be in"):
        run(scenario(lambda c: c.generate("hi", model=LLAMA, sampling=SamplingOptions(top_p=7.0))))


def test_cli_streams_over_tls_with_a_token(daemon, secrets) -> None:
    pki, token_file = secrets
    _register_commands()
    args = ["generate", PROMPT, "--max-tokens", "8", "--temperature", "0", "--model", LLAMA,
            "--tcp", daemon.targets[1], "--tls-ca", str(pki.ca), "--token-file", str(token_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with Client(daemon.targets[0], timeout=60) as client:
        expected = client.generate(PROMPT, model=LLAMA, sampling=SamplingOptions(max_tokens=8, temperature=0)).text()
    assert result.output == expected + "\n"
    # The same through the client environment variables, for `agentd models list`.
    listed = CliRunner().invoke(
        app, ["models", "list", "--tcp", daemon.targets[1]],
        env={"AGENTD_TLS_CA": str(pki.ca), "AGENTD_TOKEN_FILE": str(token_file)},
    )
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[1].startswith(LLAMA)
