"""``model_dirs``: LoadModel loads only from configured directories (issue 12, break 2).

Without it, any path was accepted, so a remote admin learned from NOT_FOUND vs
other errors which directories exist. With it, a path outside (symlinks
resolved) is PERMISSION_DENIED before it is looked at.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentd.config import load_serve_config
from agentd.errors import PermissionDenied
from agentd.server.served import ModelTable, ServingSettings
from tests._daemon_fixtures import tiny_llama


def test_the_key_parses_from_file_environment_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "agentd.toml"
    config_file.write_text('model_dirs = ["models", "/srv/models"]\n')
    assert load_serve_config(config_file, environ={}).model_dirs == (tmp_path / "models", Path("/srv/models"))
    assert load_serve_config(environ={"AGENTD_HOME": str(tmp_path / "h"), "AGENTD_MODEL_DIRS": "/a,/b"}).model_dirs == (Path("/a"), Path("/b"))
    assert load_serve_config(flags={"model_dirs": [Path("/c")]}, environ={"AGENTD_HOME": str(tmp_path / "h")}).model_dirs == (Path("/c"),)
    assert load_serve_config(environ={"AGENTD_HOME": str(tmp_path / "h")}).model_dirs == ()


def test_load_model_stays_inside_the_configured_directories(tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    model = tiny_llama(allowed)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (allowed / "sneaky").symlink_to(outside)

    async def scenario() -> None:
        table = ModelTable([], ServingSettings(model_dirs=(allowed,)))
        served = await table.start_load("inside", model)
        await table.wait_loaded("inside")
        assert served.status == "ready", served.error
        for path in (outside, tmp_path / "does-not-exist", allowed / "sneaky", allowed / ".." / "elsewhere"):
            with pytest.raises(PermissionDenied, match="outside the directories models are loaded from"):
                await table.start_load("probe", path)
        assert [s.name for s in table] == ["inside"]
        await table.close()

    asyncio.run(scenario())


def test_fifos_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe or a device where a model should be: opening a FIFO to read its magic would block
    the loader until a writer came, a device could stream forever. Each load fails at once, naming the path."""
    import os

    allowed = tmp_path / "models"
    allowed.mkdir()
    os.mkfifo(allowed / "model.gguf")
    piped = allowed / "piped-config"
    piped.mkdir()
    os.mkfifo(piped / "config.json")
    (allowed / "zero.gguf").symlink_to("/dev/zero")

    async def scenario() -> None:
        table = ModelTable([], ServingSettings())
        for name, path in (("fifo", allowed / "model.gguf"), ("dir", piped), ("device", allowed / "zero.gguf"), ("null", Path("/dev/null"))):
            try:
                served = await table.start_load(name, path)
            except Exception as exc:  # refused up front
                assert "not" in str(exc), exc
                continue
            await asyncio.wait_for(table.wait_loaded(name), timeout=30)
            assert served.status == "failed" and path.name in str(served.error), (name, served.status, served.error)
        await table.close()

    asyncio.run(scenario())
