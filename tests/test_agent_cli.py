"""``agentd run`` against a real daemon: --json events, --yes approvals, and no approval without a terminal.

Uses the fixed-plan test plugin of test_agent_durable.py (installed on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests._daemon_fixtures import AGENTD, daemon_process, socket_dir, tiny_llama
from tests.test_agent_durable import install_plugin, paid

pytestmark = pytest.mark.slow


def test_agent_run_cli(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site")
    ledger = tmp_path / "ledger.sqlite"
    env = {"PYTHONPATH": str(site), "KT_LEDGER": str(ledger), "AGENTD_PLANNER": "kt_fixed"}
    with socket_dir() as directory, daemon_process({"llama": tiny_llama(tmp_path)}, tmp_path / "home", directory / "a.sock", env=env):
        cli_env = {**os.environ, **env, "AGENTD_SOCKET": str(directory / "a.sock")}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*AGENTD, "run", *args], capture_output=True, text=True, env=cli_env, timeout=120, stdin=subprocess.DEVNULL)

        refused = run("send Maria 45 bucks")  # no terminal, no --yes: the payment is rejected, nothing is paid
        assert refused.returncode == 1 and "rejected (pass --yes to approve)" in refused.stderr
        assert "? step 2 needs your approval: kt_pay(amount=45, to=\"maria@bank\")" in refused.stdout
        assert paid(ledger) == []

        done = run("send Maria 45 bucks", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        assert [e["kind"] for e in events][0] == "plan" and events[-1]["kind"] == "run_finished"
        assert events[-1]["status"] == "done" and events[-1]["answer"] == "paid"
        assert events[-1]["steps"] == [
            {"step": 1, "tool": "kt_lookup", "arguments": {"name": "Maria"}, "status": "done", "result": {"handle": "maria@bank"}, "error": None},
            {"step": 2, "tool": "kt_pay", "arguments": {"to": "maria@bank", "amount": 45}, "status": "done", "result": {"ok": True}, "error": None},
        ]
        assert len(paid(ledger)) == 1
