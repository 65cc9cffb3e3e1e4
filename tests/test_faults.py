"""Fault injection: agentd killed with SIGKILL at chosen points, then started again (issue 12, faults).

Every test runs the daemon or the CLI as a real process, kills it with
``kill -9`` at a point named by :mod:`tests._fault_fixtures` (paused at a
file-system step, or a few milliseconds after it) and checks what the next
start finds:

* mid-stream Generate: the next daemon on the same socket serves;
* mid-SaveSession (eight points from "staging file not yet created" to "renamed,
  directory not yet flushed"): the ``.session`` file is the previous one or the
  complete new one, RestoreSession of it works, no staging file survives a start;
* mid ``agentd import`` / ``agentd export``: the output is absent or a verified
  bundle, no staging copy loads, the next run of the same command cleans up and
  succeeds, and a daemon start cleans its ``model_dirs``;
* mid agent run (waiting for approval, inside a payment's transaction, after a
  payment, after a message): the run resumes and ends ``done``, the sandbox world
  shows each effect once, and the SQLite files pass ``integrity_check``.

After every restart no staging file is left and no log holds a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from _random_llama import RandomLlamaSpec, build_random_llama
from agentd.client import Client, SamplingOptions
from agentd.errors import AgentdError, ModelLoadError, Unavailable
from agentd.formats import open_checkpoint
from agentd.manifest import verify_manifest
from agentd.v1 import models_pb2
from tests._daemon_fixtures import socket_dir
from tests._deploy_fixtures import AGENTD, long_llama
from tests._fault_fixtures import (
    KillPoint, assert_no_traceback, child_environment, daemon, hooked, install_pause_hook, kill_at, staging_leftovers,
    wait_for_pause,
)

pytestmark = pytest.mark.slow


# -- 1. a kill mid-stream ---------------------------------------------------------------


def test_kill_9_mid_stream_then_the_same_socket_serves_again(tmp_path: Path) -> None:
    models = {"llama": long_llama(tmp_path)}
    home = tmp_path / "home"
    with socket_dir() as directory:
        socket_path = directory / "agentd.sock"
        for chunks_before_kill in (1, 100):  # at the first token, and deep into a long answer
            with daemon(home, socket_path, models) as process:
                assert_serves(process.unix_target)
                received = 0
                with Client(process.unix_target, timeout=120) as client:
                    stream = client.generate("once upon a time", sampling=SamplingOptions(max_tokens=1500, temperature=0))
                    with pytest.raises(Unavailable):  # the documented status of a daemon that went away
                        for _ in stream:
                            received += 1
                            if received == chunks_before_kill:
                                process.process.kill()
                # Chunks already on the wire may still arrive after the kill; the stream must not finish.
                assert chunks_before_kill <= received < 1500, received
            assert stat.S_ISSOCK(socket_path.lstat().st_mode)  # what a kill -9 leaves behind
        with daemon(home, socket_path, models) as process:
            assert "removed stale socket" in process.stderr()
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            assert_serves(process.unix_target)
    assert staging_leftovers(home) == []


def assert_serves(target: str) -> None:
    with Client(target, timeout=120) as client:
        assert client.health() == "SERVING"
        stream = client.generate("hello", sampling=SamplingOptions(max_tokens=4))
        assert sum(len(chunk.token_ids) for chunk in stream) > 0 and stream.finish_reason in ("length", "stop")


# -- 2. a kill mid-SaveSession ------------------------------------------------------------

#: A decoder whose KV cache is big enough (8 KiB a token) for a save to take a while.
WIDE_LLAMA = RandomLlamaSpec(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
    intermediate_size=256, max_position_embeddings=2048,
)
SESSION = "chat"
SESSION_STAGING = r"/\.chat\.session\.\d+-[0-9a-f]{8}\.session$"
SAVE_POINTS = [
    KillPoint("before-create", "open", SESSION_STAGING),
    *(KillPoint(f"writing-{ms}ms", "open", SESSION_STAGING, after=ms / 1000) for ms in (0, 2, 8, 30, 100)),
    KillPoint("before-rename", "os.rename", SESSION_STAGING),
    KillPoint("before-directory-fsync", "open", r"/sessions$"),
]


def test_kill_9_mid_save_session_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    models = {"wide": build_random_llama(tmp_path / "wide", WIDE_LLAMA)}
    home, markers = tmp_path / "home", tmp_path / "markers"
    hook = install_pause_hook(tmp_path / "hook")
    saved = home / "sessions" / f"{SESSION}.session"
    on_disk: tuple[str, int] | None = None  # (sha256, tokens) of the file a restore must give back
    attempted = 0  # tokens of the save the kill interrupted
    outcomes: list[str] = []
    with socket_dir() as directory:
        socket_path = directory / "agentd.sock"
        for index, point in enumerate([*SAVE_POINTS, None]):
            # The first daemon saves once in full, so every kill has a previous file to spoil.
            armed = dataclasses.replace(point, skip=1) if index == 0 and point else point
            with daemon(home, socket_path, models, env=hooked({}, hook, armed, markers)) as process:
                assert staging_leftovers(home) == []  # the start removed what the kill left
                with Client(process.unix_target, timeout=120) as client:
                    if on_disk is None:
                        generate_session(client, 1000)
                        tokens = client.save_session(SESSION).tokens
                        on_disk = (sha256(saved), tokens)
                    else:
                        on_disk, finding = check_saved_session(client, saved, on_disk, attempted)
                        outcomes[-1] += f"; after the restart: {finding}"
                    attempted = generate_session(client, 1200 + 37 * index)
                    if point is None:  # the last daemon: a save nobody interrupts
                        assert client.save_session(SESSION).tokens == attempted
                        break
                    errors: list[BaseException] = []
                    saver = threading.Thread(target=save_quietly, args=(process.unix_target, errors))
                    saver.start()
                    kill_at(process.process, point, markers)
                    saver.join(timeout=60)
                    assert not errors or isinstance(errors[0], Unavailable), errors
            left = staging_leftovers(home)
            outcomes.append(f"{point.name}: " + (f"left a {left[0].stat().st_size} B staging file" if left else "left no staging file"))
    assert staging_leftovers(home) == []
    assert any("staging file" in outcome and "no staging" not in outcome for outcome in outcomes), outcomes
    print("\n".join(outcomes))


def generate_session(client: Client, length: int) -> int:
    """Fill the session with a ``length``-byte prompt (one token a byte); returns the tokens it holds."""
    prompt = ("the quick brown fox jumps over the lazy dog " * 60)[:length]
    stream = client.generate(prompt, session_id=SESSION, sampling=SamplingOptions(max_tokens=1, temperature=0))
    for _ in stream:
        pass
    return next(info.tokens for info in client.list_sessions() if info.session_id == SESSION)


def save_quietly(target: str, errors: list[BaseException]) -> None:
    with Client(target, timeout=120) as client:
        try:
            client.save_session(SESSION)
        except AgentdError as exc:  # the daemon died under the call
            errors.append(exc)


def check_saved_session(client: Client, saved: Path, before: tuple[str, int], attempted: int | None) -> tuple[tuple[str, int], str]:
    """The file is the one saved before the kill, byte for byte, or the complete new one; it restores."""
    assert saved.is_file(), "the kill lost the previously saved session"
    digest = sha256(saved)
    restored = client.restore_session(SESSION)
    if digest == before[0]:
        assert restored.tokens == before[1]
        return before, "old file kept"
    assert restored.tokens == attempted, "the file is neither the previous session nor the new one"
    return (digest, restored.tokens), "new file complete"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 3. a kill mid `agentd import` / `agentd export` -----------------------------------------

#: A decoder the ONNX exporter takes (head_dim 16) and that imports in a second.
SMALL_LLAMA = RandomLlamaSpec(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, max_position_embeddings=64,
)
IMPORTING = r"/\.bundle\.\d+-[0-9a-f]{8}\.importing"
EXPORTING = r"/\.bundle\.\d+-[0-9a-f]{8}\.exporting"
IMPORT_POINTS = [
    KillPoint("before-staging", "os.mkdir", IMPORTING + "$"),
    KillPoint("empty-staging", "open", IMPORTING + r"/config\.json$"),
    KillPoint("before-weights", "open", IMPORTING + r"/model\.safetensors$"),
    KillPoint("before-manifest", "open", IMPORTING + r"/manifest\.json$"),
    KillPoint("before-rename", "os.rename", IMPORTING + "$"),
    KillPoint("before-directory-fsync", "open", r"/out$"),
    # The bundle now exists: --force sets it aside first, then is killed before renaming the new one in.
    KillPoint("replacing-before-rename", "os.rename", IMPORTING + "$"),
]
EXPORT_POINTS = [
    KillPoint("mid-graph", "open", EXPORTING + r"/model\.onnx"),
    KillPoint("before-manifest", "open", EXPORTING + r"/manifest\.json$"),
    KillPoint("before-rename", "os.rename", EXPORTING + "$"),
]


@pytest.mark.parametrize(
    ("command", "points"),
    [(("import", "{src}", "{out}", "--force"), IMPORT_POINTS), (("export", "{src}", "-o", "{out}", "--force", "-q"), EXPORT_POINTS)],
    ids=["import", "export"],
)
def test_kill_9_mid_bundle_write_leaves_nothing_or_a_whole_bundle(tmp_path: Path, command: tuple[str, ...], points: list[KillPoint]) -> None:
    source = build_random_llama(tmp_path / "source", SMALL_LLAMA)
    out = tmp_path / "out" / "bundle"
    hook, markers = install_pause_hook(tmp_path / "hook"), tmp_path / "markers"
    args = [part.format(src=source, out=out) for part in command]
    outcomes, left = [], []
    for point in points:
        process, log = run_cli(args, tmp_path, hooked(child_environment(tmp_path / "home"), hook, point, markers))
        wait_for_pause(process, point, markers)
        # This run is past its clean-up: a dead writer's copies are gone (a set-aside bundle is back in place).
        assert not [path for path in left if path.exists() and path != out], left
        kill_at(process, point, markers)
        assert_no_traceback(log.read_text(), f"agentd {command[0]}")
        if out.exists():
            verify_manifest(out)  # complete, every file's sha256 as recorded
        left = staging_leftovers(out.parent)
        for copy in left:
            if copy.is_dir():
                with pytest.raises(ModelLoadError, match="staging copy"):
                    open_checkpoint(copy)
        outcomes.append(f"{point.name}: output {'complete' if out.exists() else 'absent'}, left {[p.name.rsplit('.', 1)[1] for p in left]}")
    process, log = run_cli(args, tmp_path, child_environment(tmp_path / "home"))
    assert process.wait(timeout=300) == 0, log.read_text()
    assert_no_traceback(log.read_text(), f"agentd {command[0]}")
    assert [path.name for path in out.parent.iterdir()] == ["bundle"]
    verify_manifest(out)
    print("\n".join(outcomes))


def run_cli(args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """``agentd ARGS`` as a process, its stderr in a file."""
    log = tmp_path / "cli.err"
    with log.open("w") as err:
        return subprocess.Popen([*AGENTD, *args], stdout=subprocess.DEVNULL, stderr=err, env=env), log


def test_a_daemon_start_cleans_its_model_dirs_and_restores_a_set_aside_bundle(tmp_path: Path) -> None:
    source = build_random_llama(tmp_path / "source", SMALL_LLAMA)
    model_dir = tmp_path / "models"
    bundle = model_dir / "bundle"
    hook, markers, home = install_pause_hook(tmp_path / "hook"), tmp_path / "markers", tmp_path / "home"
    process, log = run_cli(["import", str(source), str(bundle)], tmp_path, child_environment(home))
    assert process.wait(timeout=300) == 0, log.read_text()
    # A `--force` re-import killed between setting the old bundle aside and renaming the new one in.
    point = KillPoint("replacing-before-rename", "os.rename", IMPORTING + "$")
    process, _ = run_cli(["import", str(source), str(bundle), "--force"], tmp_path, hooked(child_environment(home), hook, point, markers))
    kill_at(process, point, markers)
    assert not bundle.exists() and len(staging_leftovers(model_dir)) == 2
    # A copy whose writer still runs (this test's process) must survive the start.
    live = model_dir / f".other.{os.getpid()}-0123abcd.importing"
    shutil.copytree(source, live)
    with socket_dir() as directory:
        with daemon(home, directory / "agentd.sock", {"m": bundle}, args=("--model-dir", str(model_dir))) as running:
            assert staging_leftovers(model_dir) == [live]
            verify_manifest(bundle)
            with Client(running.unix_target, timeout=120) as client:
                assert client.model_info("m").status == models_pb2.MODEL_STATUS_READY
                refused = client.load_model("half", live, wait=True)  # a staging copy never loads, even in model_dirs
                assert refused.status == models_pb2.MODEL_STATUS_FAILED and "staging copy" in refused.error, refused
            assert "restored" in running.stderr()
