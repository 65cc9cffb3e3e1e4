"""A full disk at every path agentd writes: a clear error, nothing half-written, serving goes on (issue 12).

Each scenario runs in a child process inside its own user and mount namespace
(``unshare``), where a small tmpfs stands in for the device's storage; a filler
file takes the space that is left, so the disk is really full (ENOSPC from the
kernel, not a mocked call). Paths written:

* ``agentd import`` and ``agentd export`` into the full disk: one ``agentd:
  error:`` line naming the cause, a non-zero exit, no staging copy, no output;
  once space is freed the same command succeeds.
* ``SaveSession`` with the session store on the full disk: RESOURCE_EXHAUSTED,
  the previously saved file byte for byte, no staging file; the daemon serves.
* An agent run (journal, memory and tool state on the full disk):
  RESOURCE_EXHAUSTED or a failed run that says why, no payment made twice, the
  journal passes ``integrity_check``; with space again a run completes.
* ``agentd serve`` starting on a full disk: it serves, or it exits with one line
  saying the disk is full.

Assertions run in the child (its traceback is the failure); the test asserts
it exited 0 and prints what it saw.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]
#: The stand-in device: big enough for a small model's bundle, full when the filler is written.
DISK_BYTES = 32 * 1024 * 1024
SCENARIOS = ["import", "export", "save_session", "agent_run", "serve_start"]


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*NAMESPACE, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _namespaces_work(), reason="needs unshare with user and mount namespaces for a size-limited tmpfs"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_full_disk_gets_a_clear_error_and_loses_nothing(scenario: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))}
    result = subprocess.run(
        [*NAMESPACE, sys.executable, __file__, scenario, str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=REPO, env=env
    )
    print(result.stdout)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-8000:]}"
    assert "scenario done" in result.stdout


# -- inside the namespace ---------------------------------------------------------------------


class Disk:
    """The tmpfs at ``path``; :meth:`fill` takes all its free space, :meth:`free` gives it back."""

    def __init__(self, path: Path):
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)], check=True)
        self.path = path
        self.filler = path / ".filler"

    def fill(self) -> None:
        chunk = b"\0" * (1 << 20)
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # unbuffered: every byte that fits is written
                try:
                    while True:
                        os.write(descriptor, chunk[:size])
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(descriptor)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink()

    def entries(self, directory: Path) -> list[str]:
        return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    from tests._deploy_fixtures import AGENTD, environment

    return subprocess.run([*AGENTD, *args], capture_output=True, text=True, timeout=600, env=environment(home))


def check_one_line_error(result: subprocess.CompletedProcess[str], what: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (what, result)
    assert len(lines) == 1 and lines[0].startswith("agentd: error: "), (what, result.stderr)
    assert "Traceback" not in result.stderr
    assert "No space left on device" in lines[0] or "disk is full" in lines[0], lines[0]
    return lines[0]


def scenario_bundle(root: Path, disk: Disk, command: str) -> None:
    from agentd.manifest import verify_manifest
    from tests._llama_fixtures import save_variant

    source = root / "source"
    save_variant("llama", source)
    out = disk.path / "models" / "bundle"
    out.parent.mkdir()
    args = ("import", str(source), str(out)) if command == "import" else ("export", str(source), "-o", str(out), "-q")
    disk.fill()
    line = check_one_line_error(run_cli(*args, home=root / "home"), command)
    print(f"{command} on a full disk: {line}")
    assert disk.entries(out.parent) == [], disk.entries(out.parent)  # no staging copy, no output
    disk.free()
    done = run_cli(*args, home=root / "home")
    assert done.returncode == 0, done.stderr
    verify_manifest(out)
    assert disk.entries(out.parent) == ["bundle"]
    print(f"{command} with space again: a verified bundle")


def daemon_on(disk: Disk, root: Path, models: dict[str, Path], env: dict[str, str] | None = None, socket_name: str = "d.sock"):
    """``agentd serve`` with its home on the disk, its log outside (a full disk would swallow it)."""
    from tests._deploy_fixtures import DaemonProcess, environment

    home = disk.path / "home"
    args = ["--no-defaults", *(arg for name, path in models.items() for arg in ("--model", f"{name}={path}"))]
    (root / "sock").mkdir(exist_ok=True)
    return DaemonProcess(args, root / "logs", root / "sock" / socket_name, env={**environment(home), **(env or {})})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scenario_save_session(root: Path, disk: Disk) -> None:
    from agentd.client import Client, SamplingOptions
    from agentd.errors import ResourceExhausted
    from tests._daemon_fixtures import tiny_llama

    daemon = daemon_on(disk, root, {"llama": tiny_llama(root)})
    try:
        daemon.wait_serving()
        with Client(daemon.unix_target, timeout=60) as client:
            for _ in client.generate("hello there", session_id="chat", sampling=SamplingOptions(max_tokens=4, temperature=0)):
                pass
            client.save_session("chat")
            saved = disk.path / "home" / "sessions" / "chat.session"
            before = sha256(saved)
            for _ in client.generate("hello there, and more", session_id="chat", sampling=SamplingOptions(max_tokens=4, temperature=0)):
                pass
            disk.fill()
            try:
                client.save_session("chat")
                raise AssertionError("SaveSession succeeded on a full disk")
            except ResourceExhausted as exc:
                assert "No space left on device" in str(exc), exc
                print(f"SaveSession on a full disk: RESOURCE_EXHAUSTED: {exc}")
            assert sha256(saved) == before  # the old file, untouched
            assert [name for name in disk.entries(saved.parent) if name != "chat.session"] == []  # no staging file
            assert client.health() == "SERVING"
            disk.free()
            assert client.save_session("chat").tokens > 0
            assert sha256(saved) != before
        print("SaveSession with space again: saved")
        assert "Traceback" not in daemon.stderr(), daemon.stderr()
    finally:
        daemon.stop()


def scenario_agent_run(root: Path, disk: Disk) -> None:
    from agentd.client import Client
    from agentd.errors import ResourceExhausted
    from tests._daemon_fixtures import tiny_llama
    from tests._fault_fixtures import integrity
    from tests.test_agent_durable import install_plugin, paid

    site = install_plugin(root / "site")
    ledger = root / "ledger.sqlite"  # the bank is not on this device
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ["PYTHONPATH"]]), "KT_LEDGER": str(ledger), "AGENTD_PLANNER": "kt_fixed"}
    daemon = daemon_on(disk, root, {"llama": tiny_llama(root)}, env)

    def refused(call, what: str) -> None:
        try:
            call()
        except ResourceExhausted as exc:
            assert "No space left on device" in str(exc), exc
            print(f"{what} on a full disk: RESOURCE_EXHAUSTED: {exc}")
            return
        raise AssertionError(f"{what} succeeded on a full disk")

    try:
        daemon.wait_serving()
        with Client(daemon.unix_target, timeout=120) as client:
            first = list(client.run_task("send Maria 45", auto_approve=True))
            assert first[-1].run_finished.status == "done", first[-1]
            # A run waiting for approval when the disk fills: the approval cannot be journaled.
            waiting = []
            for event in client.run_task("send Maria 45 again"):
                waiting.append(event)
                if event.WhichOneof("event") == "approval_needed":
                    break
            run_id, step = waiting[0].run_id, waiting[-1].approval_needed.step
            disk.fill()
            refused(lambda: list(client.run_task("and once more", auto_approve=True)), "a new agent run")
            refused(lambda: client.approve(run_id, step, approved=True), "an approval")
            assert client.health() == "SERVING"
            assert len(paid(ledger)) == 1  # nothing paid while the approval could not be recorded
            disk.free()
            client.approve(run_id, step, approved=True)
            events = list(client.run_task(run_id=run_id))
            assert events[-1].run_finished.status == "done", events[-1]
            again = list(client.run_task("send Maria 45 once more", auto_approve=True))
            assert again[-1].run_finished.status == "done", again[-1]
            keys = [key for key, _, _ in paid(ledger)]
            assert len(keys) == 3 == len(set(keys)), keys  # each run paid once
        print("with space again: the approved run and a new one done, each paid once")
    finally:
        daemon.stop()
    assert integrity(disk.path / "home" / "agent" / "journal.sqlite") == "ok"
    assert "Traceback" not in daemon.stderr(), daemon.stderr()


def scenario_serve_start(root: Path, disk: Disk) -> None:
    from tests._daemon_fixtures import tiny_llama

    model = tiny_llama(root)
    disk.fill()
    daemon = daemon_on(disk, root, {"llama": model})
    try:
        deadline = time.monotonic() + 180
        while daemon.process.poll() is None and not daemon.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if daemon.process.poll() is None:
            daemon.wait_serving()
            print("agentd serve on a full disk: serving")
        else:
            lines = daemon.stderr().strip().splitlines()
            assert daemon.process.returncode != 0 and "Traceback" not in daemon.stderr(), daemon.stderr()
            assert lines and lines[-1].startswith("agentd: error: ") and "No space left on device" in lines[-1], daemon.stderr()
            print(f"agentd serve on a full disk: exit {daemon.process.returncode}: {lines[-1]}")
    finally:
        daemon.stop()


if __name__ == "__main__":
    name, work = sys.argv[1], Path(sys.argv[2])
    stand_in = Disk(work / "disk")
    if name in ("import", "export"):
        scenario_bundle(work, stand_in, name)
    else:
        globals()[f"scenario_{name}"](work, stand_in)
    print("scenario done")
