"""Kill points for the fault-injection tests: pause a real agentd process at one file-system step, then kill -9 it.

A kill at a random moment mostly lands where nothing interesting happens; a
kill at a named step (the staging file is about to be created, the finished
copy is about to be renamed into place...) shows what a crash there leaves.
:func:`install_pause_hook` writes a ``sitecustomize`` module that a child
process finds through ``PYTHONPATH``; it adds an audit hook (``sys.addaudithook``)
which, at the first ``open`` / ``os.mkdir`` / ``os.rename`` (``os.replace``
too) of a path matching a pattern, writes a marker file and stops that thread.
The test sees the marker and sends SIGKILL, either at once or after letting
the writer carry on for a few milliseconds (a kill in the middle of the write).
Nothing in agentd knows about this: the process is paused where a crash could
strike anyway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import pytest

from agentd.staging import is_staging
from tests._deploy_fixtures import DaemonProcess, environment

#: Seconds a process may take to reach its kill point (a daemon loads torch and a model first).
PAUSE_TIMEOUT = 180.0

HOOK = textwrap.dedent(
    '''
    """Fault injection for agentd's tests: stop at one file-system step so the test can kill -9 here."""
    import os, re, sys, time

    _spec = os.environ.get("FAULT_PAUSE")  # "EVENT:REGEX", the regex searched in the event's path
    if _spec:
        _event, _, _pattern = _spec.partition(":")
        _regex = re.compile(_pattern)
        _state = {"skip": int(os.environ.get("FAULT_SKIP", "0")), "paused": False}
        _marker, _go = os.environ["FAULT_MARKER"], os.environ.get("FAULT_GO")

        def _hook(event, args):
            if event != _event or _state["paused"] or not args:
                return
            try:
                path = os.fsdecode(os.fspath(args[0]))
            except TypeError:  # open() of a file descriptor
                return
            if not _regex.search(path):
                return
            if _state["skip"]:
                _state["skip"] -= 1
                return
            _state["paused"] = True  # once: the hook's own files, and what follows, pass
            with open(_marker + ".part", "w") as out:
                out.write(path)
            os.rename(_marker + ".part", _marker)
            while not (_go and os.path.exists(_go)):  # no go file: wait for the kill
                time.sleep(0.001 if _go else 1.0)

        sys.addaudithook(_hook)
    '''
)


def install_pause_hook(directory: Path) -> Path:
    """Write the ``sitecustomize`` module into ``directory`` (put it on the child's ``PYTHONPATH``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(HOOK)
    return directory


@dataclass(frozen=True)
class KillPoint:
    """Where to kill: the ``skip``-th next ``event`` on a path matching ``pattern``, then ``after`` seconds more.

    ``after=None`` kills the process while it is paused before the step; a
    number lets it run on for that long first.
    """

    name: str
    event: str
    pattern: str
    skip: int = 0
    after: float | None = None

    def environment(self, markers: Path) -> dict[str, str]:
        markers.mkdir(parents=True, exist_ok=True)
        env = {"FAULT_PAUSE": f"{self.event}:{self.pattern}", "FAULT_SKIP": str(self.skip), "FAULT_MARKER": str(markers / self.name)}
        if self.after is not None:
            env["FAULT_GO"] = str(markers / f"{self.name}.go")
        return env


def hooked(env: Mapping[str, str], hook_dir: Path, point: KillPoint | None, markers: Path) -> dict[str, str]:
    """``env`` with the pause hook on the path and ``point`` armed (None: no kill point)."""
    result = dict(env)
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH", "")]))
    if point is not None:
        result.update(point.environment(markers))
    return result


def wait_for_pause(process: subprocess.Popen, point: KillPoint, markers: Path) -> str:
    """Wait until ``process`` is paused at ``point``; returns the path it paused on."""
    marker = markers / point.name
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}) without reaching kill point {point.name}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"kill point {point.name} not reached within {PAUSE_TIMEOUT}s")
        time.sleep(0.01)
    return marker.read_text()


def kill_at(process: subprocess.Popen, point: KillPoint, markers: Path) -> str:
    """Wait until ``process`` reaches ``point`` and SIGKILL it there; returns the path it paused on."""
    paused_on = wait_for_pause(process, point, markers)
    if point.after is not None:  # let it run on into the step first
        (markers / f"{point.name}.go").touch()
        time.sleep(point.after)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return paused_on


def staging_leftovers(root: Path) -> list[Path]:
    """Every staging copy (``.NAME.<pid>-<hex>.<purpose>``) under ``root``."""
    return sorted(path for path in root.rglob(".*") if is_staging(path))


def assert_no_traceback(log: str, who: str = "agentd") -> None:
    assert "Traceback" not in log, f"{who} logged a traceback:\n{log[-4000:]}"


def integrity(database: Path) -> str:
    """``PRAGMA integrity_check`` of an SQLite file ("ok" when sound)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def child_environment(home: Path) -> dict[str, str]:
    """A child's environment on ``home``, keeping the suite's settings (conftest: kernel, cache dir)."""
    kept = {key: os.environ[key] for key in ("AGENTD_PROJECTION", "AGENTD_CACHE_DIR") if key in os.environ}
    return {**environment(home), **kept}


def model_args(models: Mapping[str, Path]) -> list[str]:
    return ["--no-defaults", *(arg for name, path in models.items() for arg in ("--model", f"{name}={path}"))]


@contextlib.contextmanager
def daemon(
    home: Path, socket_path: Path, models: Mapping[str, Path], *, env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (), wait: bool = True,
) -> Iterator[DaemonProcess]:
    """``agentd serve`` on ``home``/``socket_path`` serving ``models``, SERVING when yielded (unless not ``wait``).

    Afterwards it is killed if still running, and its log must hold no traceback
    (a daemon the test killed included: nothing may have gone wrong before the kill).
    """
    process = DaemonProcess([*model_args(models), *args], home, socket_path, env={**child_environment(home), **(env or {})})
    try:
        if wait:
            process.wait_serving()
        yield process
    except BaseException:
        process.stop()
        raise
    process.stop()
    assert_no_traceback(process.stderr())
