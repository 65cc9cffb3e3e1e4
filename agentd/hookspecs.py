"""Hook specifications: the whole plugin API of agentd.

A plugin is any importable object (usually a module) exposing functions marked
with :data:`hookimpl` whose names match the specs below. Plugins are found
through the ``agentd`` entry-point group; the built-in ones are registered the
same way, in agentd's own ``pyproject.toml``::

    [project.entry-points.agentd]
    my_backend = "my_package.agentd_plugin"

Each spec's docstring is its documentation; ``tests/test_hookspecs.py`` fails
when one is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from agentd.backend import BackendSpec
    from agentd.checkpoint import Checkpoint
    from agentd.agent.planner import PlannerSpec
    from agentd.tools import ToolSpec
    from agentd.exporter_registry import ExporterSpec

PROJECT_NAME = "agentd"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorator plugins use to implement a hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backends(register: Callable[["BackendSpec"], None]) -> None:
    """Register model backends this plugin provides.

    Called once, when agentd first needs the backend registry (loading a model,
    ``agentd models backends``). Call ``register`` once per backend with a
    :class:`agentd.backend.BackendSpec` naming the Hugging Face architectures
    (``config.json`` ``architectures[0]``) it serves and a ``load`` function
    that builds a :class:`agentd.backend.Backend` from a
    :class:`agentd.checkpoint.Checkpoint`. Import heavy dependencies (torch)
    inside ``load``, not at module import, so listing backends stays cheap.

    :param register: callback taking one ``BackendSpec``; registering two
        backends for the same architecture is an error.
    """


@hookspec
def register_exporters(register: Callable[["ExporterSpec"], None]) -> None:
    """Register model exporters (``agentd export`` targets) this plugin provides.

    Called once, when agentd first needs the exporter registry (``agentd export``,
    :func:`agentd.exporter_registry.exporter_for`). Call ``register`` once per
    exporter with a :class:`agentd.exporter_registry.ExporterSpec` naming the
    target format (e.g. ``onnx``), the Hugging Face architectures it converts
    and an ``export`` function that writes a complete bundle. Import heavy
    dependencies (torch, onnx) inside ``export``, not at module import.

    :param register: callback taking one ``ExporterSpec``; registering two
        exporters for the same target and architecture is an error.
    """


@hookspec(firstresult=True)
def open_checkpoint(path: "Path") -> "Checkpoint | None":
    """Open ``path`` as a checkpoint if it is in a format this plugin reads.

    Called by :func:`agentd.formats.open_checkpoint` whenever a model is
    loaded, imported or exported. Return a :class:`agentd.checkpoint.Checkpoint`
    to claim the path (the first plugin that does wins, as with pytest's
    collection hooks), or ``None`` to let other plugins look. Check cheaply
    (a directory's marker file, a file's magic bytes) before reading more;
    once claimed, a broken model raises :class:`agentd.errors.ModelLoadError`
    naming the file rather than returning ``None``. Mark a catch-all format
    ``trylast`` so specific ones are asked first.

    :param path: an existing file or directory, absolute and resolved.
    """


@hookspec
def register_tools(register: Callable[["ToolSpec"], None]) -> None:
    """Register tools the agent may call (see :mod:`agentd.tools`).

    Called once, when agentd first needs the tool registry (planning a run,
    ``agentd tools list``). Call ``register`` once per tool with a
    :class:`agentd.tools.ToolSpec`: name, description, JSON schemas of the
    parameters and result, the safety flags (read-only, needs approval,
    idempotent, credential scopes, untrusted output) and the ``call`` function.
    Keep registration cheap: open databases or connections on first call.

    :param register: callback taking one ``ToolSpec``; two tools with the same
        name are an error naming both plugins.
    """


@hookspec
def register_planners(register: Callable[["PlannerSpec"], None]) -> None:
    """Register planners: what turns a request into a plan of tool calls.

    Called once, when the agent first needs one. Call ``register`` with a
    :class:`agentd.agent.planner.PlannerSpec` whose ``make`` builds an object
    with ``plan(context)`` and ``answer(context, results)`` (see
    :class:`agentd.agent.planner.Planner`). A planner reaches models only
    through ``context.client`` (the daemon's API), so it also runs on the
    torch-free install. The daemon uses the planner its configuration names,
    else the registered planner with the highest ``rank`` (ties: the first registered).

    :param register: callback taking one ``PlannerSpec``; names must be unique.
    """


@hookspec
def planner_facts(data_dir: "Path") -> "dict[str, str] | None":
    """Facts the planner should know, e.g. ``{"today": "2027-03-01 (Monday)", "home_city": "San Francisco"}``.

    Called for every run, so a tool pack with its own clock (the demo world)
    can say what "tomorrow" means. Return ``None`` to contribute nothing. Never
    return a secret: facts are put in the model's prompt.

    :param data_dir: where tool packs keep their state (``ToolContext.data_dir``).
    """
