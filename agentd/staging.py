"""Names of files and directories still being written, and the removal of dead writers' leftovers.

Everything agentd writes atomically is first written under a hidden staging
name beside its destination, then renamed into place. A writer killed with
SIGKILL (or a power cut) cannot remove its staging copy, so the name carries
the writer's process id: ``.<destination>.<pid>-<random>.<purpose>``. The next
writer to the same directory, or the daemon at start, removes the staging
copies of writers that no longer run, and never those of one that still does;
an old copy moved aside to be replaced goes back where it was when the new one
never arrived.
A staging name from before pids were recorded counts as dead. A staging
directory is never a model: :func:`is_staging` lets the loader refuse one,
whatever it holds.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

#: What staging copies are for; a name ends in one of these.
PURPOSES = ("exporting", "importing", "replaced", "session")

_STAGING = re.compile(r"\.(?P<target>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.(?P<purpose>" + "|".join(PURPOSES) + r")")


def staging_name(destination: Path, purpose: str) -> Path:
    """A fresh staging path for ``destination`` (same directory), owned by this process."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown staging purpose {purpose!r}")
    return destination.with_name(f".{destination.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{purpose}")


def is_staging(path: Path) -> bool:
    """Whether ``path``'s name is a staging copy's (of any writer, alive or not)."""
    return _STAGING.fullmatch(path.name) is not None


def remove_stale(directory: Path, target: str | None = None) -> list[Path]:
    """Remove the staging copies in ``directory`` (only ``target``'s, if given) whose writer is dead.

    Returns what was removed. Errors (a copy another user owns, a race with a
    writer finishing) leave that copy and are logged, never raised.
    """
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING.fullmatch(entry.name)
        if match is None or (target is not None and match["target"] != target):
            continue
        if match["pid"] is not None and _alive(int(match["pid"])):
            continue
        original = directory / match["target"]
        try:
            if match["purpose"] == "replaced" and not (original.exists() or original.is_symlink()):
                # Killed between moving the old copy aside and renaming the new one in: put it back.
                os.rename(entry, original)
                log.info("restored %s from %s, left by a writer that did not finish", original, entry)
                removed.append(entry)
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            log.warning("cannot remove the leftover %s: %s", entry, exc.strerror or exc)
            continue
        log.info("removed %s, left by a writer that did not finish", entry)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
