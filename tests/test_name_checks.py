"""Names that become file names, log fields or registry keys are checked whole.

``re.match`` with a pattern ending in ``$`` also accepts a trailing newline
(``$`` matches before a final ``\\n``): ``session_id="abc\\n"`` wrote a file with
a newline in its name and ``LoadModel name="nl\\n"`` passed (issue 12, break 7).
Each check below takes a good name and refuses the same name plus a newline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentd.agent.credentials import CredentialStore
from agentd.agent.memory import user_name
from agentd.config import load_serve_config
from agentd.errors import AgentdError, InvalidArgument
from agentd.server.access_log import _client_request_id
from agentd.server.served import ModelTable
from agentd.server.sessions import check_session_id
from agentd.tools import ToolSpec

BAD_ENDINGS = ("\n", "\r\n", " ", "\x00")


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_session_id(ending: str) -> None:
    check_session_id("chat-1")
    with pytest.raises(InvalidArgument, match="session_id"):
        check_session_id("chat-1" + ending)


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_load_model_name(ending: str, tmp_path: Path) -> None:
    table = ModelTable([])
    with pytest.raises(InvalidArgument, match="^name: must be 1-128 characters"):
        asyncio.run(table.start_load("nl" + ending, tmp_path))
    assert list(table) == []


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_configured_model_name(ending: str, tmp_path: Path) -> None:
    import json

    def config(name: str) -> Path:  # a TOML quoted key keeps the name as written (flags are trimmed)
        path = tmp_path / "agentd.toml"
        path.write_text(f"[models]\n{json.dumps(name)} = {json.dumps(str(tmp_path))}\n")
        return path

    assert set(load_serve_config(config("mine"), environ={}).models) == {"mine"}
    with pytest.raises(InvalidArgument, match="model name"):
        load_serve_config(config("mine" + ending), environ={})


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_client_request_id_is_logged_only_when_whole(ending: str) -> None:
    assert _client_request_id([("x-request-id", "req-1")]) == "req-1"
    assert _client_request_id([("x-request-id", "req-1" + ending)]) is None


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_user_name(ending: str) -> None:
    assert user_name("ana") == "ana"
    with pytest.raises(InvalidArgument, match="^user: "):
        user_name("ana" + ending)


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_credential_provider(ending: str, tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    with pytest.raises(InvalidArgument, match="^provider: "):
        store.add("bank" + ending, "s3cret-value")


@pytest.mark.parametrize("ending", BAD_ENDINGS)
def test_tool_name(ending: str) -> None:
    schema = {"type": "object", "properties": {}}
    def spec(name: str) -> ToolSpec:
        return ToolSpec(name=name, description="d", parameters=schema, result={}, call=lambda args, context: None, read_only=True)

    spec("search")
    with pytest.raises(AgentdError, match="tool name"):
        spec("search" + ending)
