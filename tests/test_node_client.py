"""A client not written in Python: Node.js (@grpc/grpc-js) streams a generation from the real daemon over TLS + token.

``agentd serve`` runs as a process with TLS and a bearer token on a free
loopback port; ``node tests/node/client.js`` loads the public proto, streams
a greedy Generate and prints JSON lines. Its token ids and text must equal
what the Python client gets for the same request. npm dependencies are
installed from the lock file when ``tests/node/node_modules`` is missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from agentd.client import Client, Credentials, SamplingOptions
from tests._daemon_fixtures import socket_dir, tiny_llama
from tests._deploy_fixtures import DaemonProcess, make_pki, write_token

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node"
PROMPT = "Once upon a time"
MAX_TOKENS = 12


def node_available() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client test needs Node.js >= 18 and npm")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node is installed but npm is not: cannot install tests/node dependencies")
        installed = subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            capture_output=True, text=True, timeout=600,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr}"
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return node_available()


@pytest.fixture(scope="module")
def secure_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("node")
    pki, token_file = make_pki(root / "pki"), write_token(root)
    checkpoint = tiny_llama(root)
    args = [
        "--no-defaults", "--model", f"tiny={checkpoint}", "--tcp", "127.0.0.1:0",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--auth-token-file", str(token_file),
    ]
    with socket_dir() as directory:
        daemon = DaemonProcess(args, root / "home", directory / "n.sock")
        try:
            daemon.wait_serving()
            yield daemon, pki, token_file
        finally:
            daemon.stop()


def run_node(node: str, target: str, ca: Path, token_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # Dial by host name, as an app would (TLS SNI must not be an IP address; the certificate names localhost).
    target = target.replace("127.0.0.1:", "localhost:")
    return subprocess.run(
        [node, str(NODE_DIR / "client.js"), "--target", target, "--ca", str(ca), "--token-file", str(token_file),
         "--model", "tiny", "--prompt", PROMPT, "--max-tokens", str(MAX_TOKENS), "--temperature", "0", *extra],
        capture_output=True, text=True, timeout=120,
    )


def test_node_client_streams_what_the_python_client_gets(node, secure_daemon) -> None:
    daemon, pki, token_file = secure_daemon
    target = daemon.tcp_target()
    result = run_node(node, target, pki.ca, token_file, "--request-id", "node-1")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    *deltas, end = lines
    assert (end["finish_reason"], end["request_id"], end["usage"]["completion_tokens"]) == ("length", "node-1", MAX_TOKENS)
    with Client(target, credentials=Credentials(ca_file=pki.ca, token_file=token_file), timeout=60) as client:
        stream = client.generate(PROMPT, model="tiny", sampling=SamplingOptions(max_tokens=MAX_TOKENS, temperature=0))
        chunks = list(stream)
    assert [i for d in deltas for i in d["token_ids"]] == [i for c in chunks for i in c.token_ids]
    assert "".join(d["text"] for d in deltas) == "".join(c.text for c in chunks)
    assert end["usage"]["prompt_tokens"] == stream.usage.prompt_tokens


def test_node_client_without_the_token_is_unauthenticated(node, secure_daemon, tmp_path) -> None:
    daemon, pki, _ = secure_daemon
    wrong = write_token(tmp_path, token="not-the-daemon-token-123")
    result = run_node(node, daemon.tcp_target(), pki.ca, wrong)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stderr) == {"error": "UNAUTHENTICATED", "details": "invalid bearer token"}
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0
