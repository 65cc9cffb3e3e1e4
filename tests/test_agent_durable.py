"""A run killed with ``kill -9`` mid-step resumes on the next daemon without repeating its side effect.

A plugin written into a temporary directory (a module plus a ``.dist-info`` with
its entry point, found through ``PYTHONPATH``, as an installed third-party
plugin is) provides a planner with a fixed two-step plan and two tools: a
lookup and a payment that records itself in its own SQLite ledger under the
call's idempotency key, then lingers. The daemon is killed while the payment
lingers — after its effect, before the journal heard of it; the next daemon
resumes the run, calls the payment again with the same key, and the ledger
still shows one payment.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agentd.client import Client
from tests._daemon_fixtures import daemon_process, socket_dir, tiny_llama

pytestmark = pytest.mark.slow

PLUGIN = textwrap.dedent(
    '''
    """Test plugin: a fixed planner and a payment tool that lingers after its effect."""
    import os, sqlite3, time
    from agentd.hookspecs import hookimpl
    from agentd.agent.plan import Plan, Ref, Step
    from agentd.agent.planner import PlannerSpec, PlanResult
    from agentd.tools import ToolSpec

    LEDGER = os.environ["KT_LEDGER"]

    def lookup(arguments, context):
        return {"handle": arguments["name"].lower() + "@bank"}

    def pay(arguments, context):
        with sqlite3.connect(LEDGER) as db:
            db.execute("CREATE TABLE IF NOT EXISTS paid (key TEXT PRIMARY KEY, recipient TEXT, amount REAL)")
            db.execute("INSERT OR IGNORE INTO paid VALUES (?, ?, ?)", (context.idempotency_key, arguments["to"], arguments["amount"]))
        time.sleep(float(os.environ.get("KT_LINGER", "0")))
        return {"ok": True}

    class Fixed:
        async def plan(self, context):
            plan = Plan((Step(1, "kt_lookup", {"name": "Maria"}), Step(2, "kt_pay", {"to": Ref(1, ("handle",)), "amount": 45})))
            return PlanResult(plan, text="fixed")

        async def answer(self, context, plan, results):
            return "paid"

    @hookimpl
    def register_tools(register):
        obj = {"type": "object"}
        register(ToolSpec("kt_lookup", "Look a contact up.", {"type": "object", "properties": {"name": {"type": "string"}}}, obj, lookup, read_only=True))
        register(ToolSpec("kt_pay", "Pay someone.", {"type": "object", "properties": {"to": {"type": "string"}, "amount": {"type": "number"}}},
                          obj, pay, needs_approval=True, idempotent=True))

    @hookimpl
    def register_planners(register):
        register(PlannerSpec("kt_fixed", make=Fixed))
    '''
)


def install_plugin(site: Path) -> Path:
    site.mkdir(parents=True)
    (site / "agentd_killtest.py").write_text(PLUGIN)
    info = site / "agentd_killtest-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentd-killtest\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[agentd]\nkilltest = agentd_killtest\n")
    return site


def paid(ledger: Path) -> list[tuple[str, str, float]]:
    if not ledger.exists():
        return []
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT key, recipient, amount FROM paid").fetchall()


def test_kill_9_mid_payment_resumes_without_paying_twice(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site")
    ledger = tmp_path / "ledger.sqlite"
    home = tmp_path / "home"
    models = {"llama": tiny_llama(tmp_path)}
    # The built-in planner is registered too; the test plugin's is picked by name.
    env = {"PYTHONPATH": str(site), "KT_LEDGER": str(ledger), "AGENTD_PLANNER": "kt_fixed"}
    with socket_dir() as directory:
        with daemon_process(models, home, directory / "first.sock", env={**env, "KT_LINGER": "60"}) as (target, process):
            run_ids: list[str] = []

            def start() -> None:
                with Client(target, timeout=120) as client:
                    try:
                        for event in client.run_task("send Maria 45 bucks", auto_approve=True):
                            run_ids.append(event.run_id)
                    except Exception:
                        pass  # the daemon is about to die under this stream

            watcher = threading.Thread(target=start, daemon=True)
            watcher.start()
            deadline = time.monotonic() + 60
            while not paid(ledger) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(paid(ledger)) == 1, "the payment never happened"
            os.kill(process.pid, signal.SIGKILL)  # mid-step: paid, not yet journaled as done
            process.wait(timeout=30)
        assert run_ids, "RunTask never streamed an event"
        run_id = run_ids[0]

        with daemon_process(models, home, directory / "second.sock", env=env) as (target, _):
            with Client(target, timeout=120) as client:
                events = list(client.run_task(run_id=run_id))
                info = client.get_run(run_id)
    assert events[-1].run_finished.status == "done", events[-1]
    assert paid(ledger) == [(f"{run_id}:2", "maria@bank", 45.0)]  # one payment, under the step's key
    assert [s.attempts for s in info.steps] == [1, 2]  # the payment was called again, the lookup was not
    replayed = [e.step_finished.step for e in events if e.WhichOneof("event") == "step_finished" and e.step_finished.replayed]
    assert replayed == [1]
