"""``agentd serve`` configuration (file < environment < flags), its docs, and what a real daemon logs and does on SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import tomllib
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from agentd.cli import _register_commands, app
from agentd.client import Client, SamplingOptions
from agentd.config import KEYS, ServeConfig, load_serve_config
from agentd.errors import InvalidArgument
from agentd.v1 import inference_pb2, inference_pb2_grpc
from tests._daemon_fixtures import socket_dir
from tests._deploy_fixtures import TOKEN, DaemonProcess, long_llama, write_token

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
SECRET_PROMPT = "the quokka whispers zanzibar"


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- precedence and parsing ------------------------------------------------------------------
def test_flags_beat_environment_beat_file_beat_defaults(tmp_path) -> None:
    config_file = write_toml(tmp_path / "agentd.toml", "grace = 1.5\nmax_batch = 4\nlog_level = \"debug\"\n")
    environ = {"AGENTD_GRACE": "2.5", "AGENTD_MAX_BATCH": "6"}
    config = load_serve_config(config_file, flags={"grace": 3.5, "max_queue": None}, environ=environ)
    assert (config.grace, config.max_batch, config.log_level, config.max_queue) == (3.5, 6, "debug", 64)
    assert load_serve_config(config_file, environ=environ).grace == 2.5
    assert load_serve_config(config_file, environ={}).grace == 1.5
    assert load_serve_config(environ={"AGENTD_HOME": str(tmp_path / "empty")}).grace == ServeConfig().grace == 5.0


def test_default_file_is_agentd_home_toml_and_paths_are_relative_to_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    write_toml(home / "agentd.toml", 'socket = "run/a.sock"\n[models]\nmine = "models/mine"\n')
    config = load_serve_config(environ={"AGENTD_HOME": str(home), "AGENTD_AUTH_TOKEN_FILE": "token"})
    assert config.socket == home / "run" / "a.sock"
    assert config.models == {"mine": home / "models" / "mine"}
    assert config.auth_token_file == tmp_path / "token"  # environment and flag paths: relative to the cwd
    with pytest.raises(InvalidArgument, match="^AGENTD_TLS_CLIENT_CA: mutual TLS needs --tls-cert and --tls-key$"):
        load_serve_config(environ={"AGENTD_HOME": str(home), "AGENTD_TLS_CLIENT_CA": "ca.pem"})


def test_models_merge_by_name_across_sources(tmp_path) -> None:
    config_file = write_toml(tmp_path / "c.toml", '[models]\na = "/m/a"\nb = "/m/b"\n')
    config = load_serve_config(
        config_file, environ={"AGENTD_MODELS": "b=/env/b,c=/env/c"}, flags={"models": ["c=/flag/c", "d=/flag/d"]}
    )
    assert config.models == {"a": Path("/m/a"), "b": Path("/env/b"), "c": Path("/flag/c"), "d": Path("/flag/d")}


@pytest.mark.parametrize(
    ("toml", "environ", "flags", "message"),
    [
        ("gracee = 1\n", {}, {}, r"^{file}: gracee: unknown key \(known: socket, tcp, "),
        ("max_batch = 0\n", {}, {}, r"^{file}: max_batch: must be an integer >= 1, got 0$"),
        ("grace = \"soon\"\n", {}, {}, r"^{file}: grace: must be a number of seconds >= 0, got 'soon'$"),
        ("log_prompts = \"yes please\"\n", {}, {}, r"^{file}: log_prompts: must be true or false, got 'yes please'$"),
        ("[models]\n\"bad name\" = \"/x\"\n", {}, {}, r"^{file}: models: model name 'bad name' must be letters"),
        ("grace = [1\n", {}, {}, r"^--config: {file}: not valid TOML"),
        ("", {"AGENTD_LOG_FORMAT": "xml"}, {}, r"^AGENTD_LOG_FORMAT: must be one of auto, json, text; got 'xml'$"),
        ("", {"AGENTD_MEMORY_BUDGET": "lots"}, {}, r"^AGENTD_MEMORY_BUDGET: must be a size such as 4GiB"),
        ("", {"AGENTD_METRICS_PORT": "70000"}, {}, r"^AGENTD_METRICS_PORT: must be a port in 0..65535, got 70000$"),
        ("", {}, {"tcp": "localhost"}, r"^--tcp: expected HOST:PORT, got 'localhost'$"),
        ("", {}, {"models": ["nopath"]}, r"^--model: expected NAME=PATH, got 'nopath'$"),
        ("", {}, {"session_ttl": -1.0}, r"^--session-ttl: must be a number of seconds >= 0, got -1.0$"),
    ],
)
def test_bad_keys_and_values_name_the_key(tmp_path, toml, environ, flags, message) -> None:
    config_file = write_toml(tmp_path / "agentd.toml", toml)
    with pytest.raises(InvalidArgument, match=message.format(file=re.escape(str(config_file)))):
        load_serve_config(config_file, flags=flags, environ=environ)


def test_sizes_and_booleans_parse() -> None:
    environ = {"AGENTD_MEMORY_BUDGET": "1.5GiB", "AGENTD_SESSION_BUDGET": "200MB", "AGENTD_NO_DEFAULTS": "yes"}
    config = load_serve_config(environ=environ, flags={"prefix_cache_budget": "4096", "log_prompts": False})
    assert (config.memory_budget, config.session_budget, config.prefix_cache_budget) == (3 * 2**29, 200 * 10**6, 4096)
    assert config.no_defaults is True and config.log_prompts is False


# -- print-config --------------------------------------------------------------------------------
def test_print_config_round_trips_and_holds_no_secret(tmp_path) -> None:
    token_file = write_token(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    _register_commands()
    result = CliRunner().invoke(
        app,
        ["serve", "--print-config", "--tcp", "127.0.0.1:0", "--insecure-loopback", "--auth-token-file", str(token_file),
         "--model", "m.v2=/srv/m", "--memory-budget", "1GiB", "--log-prompts"],
        env={"AGENTD_HOME": str(home), "AGENTD_MAX_QUEUE": "9", "AGENTD_SOCKET": str(tmp_path / "s.sock")},
    )
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output and f'auth_token_file = "{token_file}"' in result.output
    document = tomllib.loads(result.output)
    assert document["max_queue"] == 9 and document["memory_budget"] == 2**30 and document["models"] == {"m.v2": "/srv/m"}
    printed = write_toml(tmp_path / "printed.toml", result.output)
    expected = load_serve_config(
        flags={"tcp": "127.0.0.1:0", "insecure_loopback": True, "auth_token_file": token_file, "models": ["m.v2=/srv/m"],
               "memory_budget": "1GiB", "log_prompts": True, "max_queue": 9, "socket": tmp_path / "s.sock"},
        environ={"AGENTD_HOME": str(home)},
    )
    assert load_serve_config(printed, environ={}) == expected


def test_cli_reports_config_errors_in_one_line(tmp_path) -> None:
    _register_commands()
    config_file = write_toml(tmp_path / "agentd.toml", "log_level = 3\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(config_file)], env={"AGENTD_HOME": str(tmp_path)})
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidArgument)
    assert str(result.exception) == f"{config_file}: log_level: must be one of debug, info, warning, error; got 3"


# -- documentation ---------------------------------------------------------------------------------
def test_every_key_is_documented_and_has_a_flag() -> None:
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == {key.name for key in KEYS} == {f.name for f in dataclasses.fields(ServeConfig)}
    _register_commands()
    import typer.main

    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for key in KEYS:
        assert rows[key.name][1] == f"`{key.env}`" and rows[key.name][2] == f"`{key.flag}`", key.name
        assert key.flag in flags, key.flag


# -- the real daemon: logs and drain ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return long_llama(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def daemons(tmp_path_factory, checkpoint):
    """Two daemons started together: flags with prompts unlogged, and a config file with log_prompts = true."""
    quiet_home = tmp_path_factory.mktemp("quiet")
    loud_home = tmp_path_factory.mktemp("loud")
    write_toml(
        loud_home / "agentd.toml",
        f'no_defaults = true\nlog_format = "json"\nlog_prompts = true\ngrace = 1\n[models]\nlong = "{checkpoint}"\n',
    )
    with socket_dir() as directory:
        quiet = DaemonProcess(
            ["--no-defaults", "--model", f"long={checkpoint}", "--log-format", "json", "--grace", "60"],
            quiet_home, directory / "q.sock",
        )
        loud = DaemonProcess([], loud_home, directory / "l.sock")
        try:
            quiet.wait_serving()
            loud.wait_serving()
            yield quiet, loud
        finally:
            quiet.stop()
            loud.stop()


def json_log(daemon: DaemonProcess) -> list[dict]:
    """Every stderr line, each of which must be one JSON object."""
    return [json.loads(line) for line in daemon.stderr().splitlines() if line.strip()]


def generate_with_request_id(target: str, prompt: str, request_id: str) -> tuple[list[int], str]:
    with grpc.insecure_channel(target) as channel:
        call = inference_pb2_grpc.InferenceStub(channel).Generate(
            inference_pb2.GenerateRequest(model="long", prompt=prompt, max_tokens=4, temperature=0),
            metadata=(("x-request-id", request_id),), timeout=60,
        )
        ids = [i for chunk in call for i in chunk.token_ids]
        return ids, dict(call.trailing_metadata())["x-request-id"]


@pytest.mark.slow
def test_json_logs_carry_request_ids_and_no_prompt_text(daemons) -> None:
    quiet, _ = daemons
    ids, echoed = generate_with_request_id(quiet.unix_target, SECRET_PROMPT, "app-req-42")
    assert echoed == "app-req-42" and len(ids) == 4
    with Client(quiet.unix_target, timeout=60) as client:
        stream = client.chat([{"role": "user", "content": SECRET_PROMPT}], sampling=SamplingOptions(max_tokens=3))
        stream.text()
        made_up = stream.request_id
    assert made_up and re.fullmatch(r"[0-9a-f]{12}", made_up)
    records = json_log(quiet)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "agentd.access" and r.get("rpc") == "Generate"}
    first = access["app-req-42"]
    assert (first["model"], first["status"], first["completion_tokens"], first["streamed_tokens"]) == ("long", "OK", 4, 4)
    assert first["duration_ms"] >= first["first_response_ms"] > 0
    assert access[made_up]["status"] == "OK"
    assert SECRET_PROMPT not in quiet.stderr() and "quokka" not in quiet.stderr()
    # Lines logged while serving a call (here the error mapping's) carry its request id too.
    with grpc.insecure_channel(quiet.unix_target) as channel, pytest.raises(grpc.RpcError) as failed:
        list(inference_pb2_grpc.InferenceStub(channel).Generate(
            inference_pb2.GenerateRequest(model="nope", prompt=SECRET_PROMPT), metadata=(("x-request-id", "bad-1"),), timeout=60
        ))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(failed.value.trailing_metadata())["x-request-id"] == "bad-1"
    error_lines = [r for r in json_log(quiet) if r.get("request_id") == "bad-1" and r["logger"] != "agentd.access"]
    assert error_lines and error_lines[0]["rpc"] == "Generate" and "NOT_FOUND" in error_lines[0]["msg"]
    assert "quokka" not in quiet.stderr()


@pytest.mark.slow
def test_log_prompts_from_the_config_file_logs_prompts(daemons) -> None:
    _, loud = daemons
    generate_with_request_id(loud.unix_target, SECRET_PROMPT, "loud-1")
    record = next(r for r in json_log(loud) if r.get("request_id") == "loud-1" and r["logger"] == "agentd.access")
    assert record["prompt"] == SECRET_PROMPT
    loud.process.send_signal(signal.SIGTERM)
    assert loud.process.wait(timeout=60) == 0


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_stream_finish_within_grace(daemons) -> None:
    quiet, _ = daemons
    max_tokens = 2000  # greedy on this random model never stops early; context is 2048
    with Client(quiet.unix_target, timeout=120) as client:
        stream = client.generate("Tell me a long story", model="long", sampling=SamplingOptions(max_tokens=max_tokens, temperature=0))
        chunks = iter(stream)
        received = len(next(chunks).token_ids)
        quiet.process.send_signal(signal.SIGTERM)
        received += sum(len(chunk.token_ids) for chunk in chunks)
    assert (stream.finish_reason, received) == ("length", max_tokens)
    assert quiet.process.wait(timeout=120) == 0
    assert not quiet.socket_path.exists()
    records = json_log(quiet)
    stopping = next(i for i, r in enumerate(records) if r["msg"].startswith("stopping: in-flight requests get 60.0 s"))
    finished = next(
        i for i, r in enumerate(records)
        if r["logger"] == "agentd.access" and r.get("completion_tokens") == max_tokens
    )
    assert stopping < finished, "the stream had already finished when SIGTERM arrived: nothing was drained"
    assert records[finished]["status"] == "OK"
    assert "Traceback" not in quiet.stderr()
