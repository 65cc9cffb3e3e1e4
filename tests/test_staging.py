"""Leftovers of killed writers (issue 12, break 6).

A kill -9 during SaveSession left ``.NAME.session.XXXX``, during export/import a
``.NAME.<hex>.exporting/.importing`` directory (hundreds of MB), and a late one a
staging directory with full weights that ``load_model`` opened as an unverified
checkpoint. Staging names now carry the writer's pid: the next writer to the same
place (and the daemon at start) removes a dead writer's copy and never a live one's,
puts back an old bundle a ``--force`` run had set aside, and no staging copy loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agentd
from _bundle_fixtures import run_agentd, tiny_llama  # noqa: F401 - fixture
from agentd.errors import ModelLoadError
from agentd.server.sessions import SessionSettings, SessionStore
from agentd.staging import is_staging, remove_stale, staging_name


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(directory: Path, target: str, pid: int | None, purpose: str, *, as_dir: bool = True) -> Path:
    owner = f"{pid}-" if pid is not None else ""
    path = directory / f".{target}.{owner}0123abcd.{purpose}"
    if as_dir:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"\0" * 1024)
    else:
        path.write_bytes(b"half a session")
    return path


def test_dead_writers_copies_go_and_live_ones_stay(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = leftover(tmp_path, "bundle", dead_pid(), "exporting")
        old_style = leftover(tmp_path, "bundle", None, "importing")  # from before pids were recorded
        running = leftover(tmp_path, "bundle", live.pid, "exporting")
        other_target = leftover(tmp_path, "other", dead_pid(), "exporting")
        unrelated = tmp_path / ".bundle.notes"
        unrelated.write_text("keep me")
        assert sorted(remove_stale(tmp_path, "bundle")) == sorted([dead, old_style])
        assert running.exists() and other_target.exists() and unrelated.exists()
        assert remove_stale(tmp_path) == [other_target]
    finally:
        live.kill()
        live.wait()


def test_an_old_bundle_set_aside_comes_back_when_the_new_one_never_arrived(tmp_path: Path) -> None:
    aside = leftover(tmp_path, "bundle", dead_pid(), "replaced")
    remove_stale(tmp_path, "bundle")
    assert not aside.exists() and (tmp_path / "bundle" / "model.safetensors").exists()
    # With the new one in place, the old copy is just removed.
    aside = leftover(tmp_path, "bundle", dead_pid(), "replaced")
    remove_stale(tmp_path, "bundle")
    assert not aside.exists() and (tmp_path / "bundle").exists()


def test_staging_names_are_recognised() -> None:
    name = staging_name(Path("/x/my.bundle"), "importing")
    assert name.parent == Path("/x") and name.name.startswith(f".my.bundle.{os.getpid()}-") and is_staging(name)
    assert not is_staging(Path("/x/my.bundle")) and not is_staging(Path("/x/.hidden"))


def test_import_removes_a_killed_imports_leftover_and_no_staging_copy_loads(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "bundle"
    stale = leftover(tmp_path, "bundle", dead_pid(), "importing")
    for file in tiny_llama.iterdir():  # full weights and config, no manifest: it would have opened before
        (stale / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ModelLoadError, match="staging copy"):
        agentd.load_model(stale)
    result = run_agentd("import", str(tiny_llama), str(target))
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and (target / "manifest.json").exists()


WRITER = """
import sys, time
from pathlib import Path
from agentd.bundle import write_atomically

def fill(staging):
    (staging / "model.safetensors").write_bytes(b"\\0" * 4096)
    print("writing", flush=True)
    time.sleep(60)  # killed here, half-way through

write_atomically(Path(sys.argv[1]), Path(sys.argv[2]), True, fill, purpose="importing")
"""


def test_a_kill_mid_write_leaves_nothing_the_next_writer_keeps(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "bundle"
    assert run_agentd("import", str(tiny_llama), str(target)).returncode == 0
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_llama), str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len([p for p in tmp_path.iterdir() if is_staging(p)]) == 1  # what a kill -9 leaves
    agentd.load_model(target)  # the old bundle is untouched
    result = run_agentd("import", str(tiny_llama), str(target), "--force")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    agentd.load_model(target)  # verified: every sha256 matches


def test_the_daemon_removes_a_killed_saves_temp_file(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    stale = leftover(directory, "chat-1.session", dead_pid(), "session", as_dir=False)
    kept = directory / "chat-1.session"
    kept.write_bytes(b"a saved session")
    SessionStore(SessionSettings(directory=directory))
    assert not stale.exists() and kept.exists()
