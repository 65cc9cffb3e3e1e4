"""The agent runtime: plans of tool calls, carried out safely and durably.

* :mod:`.plan` — a plan is a DAG of numbered tool calls whose arguments may hold
  typed references to earlier steps' results (a :class:`~.plan.Ref` is its own
  value, never ``$N`` text inside a string), checked against the tool registry.
* :mod:`.journal` — SQLite: every run, every step's resolved arguments and
  result, approvals, and an append-only audit log of tool calls.
* :mod:`.executor` — runs independent steps concurrently, pauses for approval
  before any tool that needs it, enforces budgets, honours cancellation, streams
  events, and resumes a run from its journal after a restart without repeating
  an effect (each call carries the ``run:step`` idempotency key).

Planners (which write the plans) are plugins; this package is torch-free and
talks to models only through the daemon, like any client.
"""
