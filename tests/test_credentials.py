"""Credentials: encrypted at rest, mode 0600, handed to a tool only for the scopes it declared,
and nowhere in the journal, the audit log or the command's output."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agentd.agent.credentials import CredentialStore
from agentd.agent.executor import AutoApprove, Executor
from agentd.agent.journal import Journal
from agentd.agent.plan import Plan, Step
from agentd.errors import InvalidArgument, NotFound, PermissionDenied
from tests.test_agent_executor import Ledger, make_tools

SECRET = "tok_live_4242-quokka-zanzibar"
AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]


def test_secrets_are_encrypted_private_and_replaceable(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials")
    store.add("bank", SECRET)
    files = sorted(p.name for p in store.directory.iterdir())
    assert files == [".key", "bank.secret"]
    for path in store.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert SECRET.encode() not in (store.directory / "bank.secret").read_bytes()
    assert store.get("bank") == SECRET and store.providers() == ["bank"]
    store.add("bank", "rotated")
    assert CredentialStore(store.directory).get("bank") == "rotated"  # a new store object reads the same key
    assert store.remove("bank") and not store.remove("bank")
    with pytest.raises(NotFound, match="agentd credentials add bank"):
        store.get("bank")
    with pytest.raises(InvalidArgument, match="provider"):
        store.add("Bank Of X", "s")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "c")
    store.add("bank", SECRET)
    os.chmod(store.directory / ".key", 0o644)
    with pytest.raises(PermissionDenied, match="chmod 600"):
        store.get("bank")


def test_a_tool_gets_only_the_scopes_it_declared(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "c")
    store.add("bank", SECRET)
    assert store.for_tool("transfer_money", ("bank",))("bank") == SECRET
    with pytest.raises(PermissionDenied, match="did not declare credential scope 'bank'"):
        store.for_tool("web_search", ())("bank")


def test_the_secret_reaches_the_tool_and_no_record(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "c")
    store.add("bank", SECRET)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    tools = make_tools(ledger)
    seen: list[str] = []
    transfer = tools["transfer_money"]

    def with_credential(arguments, context):
        seen.append(context.credential("bank"))
        return transfer.call(arguments, context)

    tools["transfer_money"] = replace(transfer, call=with_credential, credential_scopes=("bank",))
    journal = Journal(tmp_path / "journal.sqlite")
    journal.create_run("r", "send Maria 45")
    plan = Plan((Step(1, "transfer_money", {"to": "maria@bank", "amount": 45}),))
    events = asyncio.run(_collect(Executor(journal, tools, tmp_path, credentials=store), plan))
    journal.close()
    assert seen == [SECRET] and events[-1].status == "done"
    for path in tmp_path.glob("journal.sqlite*"):  # the database and its WAL
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(events)


async def _collect(executor: Executor, plan: Plan) -> list:
    return [event async for event in executor.execute("r", plan, AutoApprove())]


def test_cli_reads_the_secret_from_stdin_and_never_prints_it(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTD_HOME": str(tmp_path)}
    added = subprocess.run([*AGENTD, "credentials", "add", "airline"], input=SECRET + "\n", capture_output=True, text=True, env=env)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([*AGENTD, "credentials", "list"], capture_output=True, text=True, env=env)
    assert listed.stdout.split() == ["airline"]
    for result in (added, listed):
        assert SECRET not in result.stdout + result.stderr
    assert CredentialStore(tmp_path / "agent" / "credentials").get("airline") == SECRET
    missing = subprocess.run([*AGENTD, "credentials", "remove", "hotel"], capture_output=True, text=True, env=env)
    assert missing.returncode == NotFound.exit_code and missing.stderr.strip() == "agentd: error: no credential for 'hotel'"
