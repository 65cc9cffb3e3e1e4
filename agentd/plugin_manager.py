"""The plugin manager: finds plugins through entry points, lazily, once.

Set ``AGENTD_DISABLE_PLUGINS`` to a comma-separated list of entry-point names
(e.g. ``ssm,linear``) to keep those plugins from loading.

A plugin that cannot be imported or that implements a hook agentd does not
define (a misspelt name) stops loading with one :class:`AgentdError` naming
the plugin, instead of a traceback or a hook that silently never runs.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading

import pluggy

from agentd import hookspecs
from agentd.errors import AgentdError

ENTRY_POINT_GROUP = "agentd"
DISABLE_ENV = "AGENTD_DISABLE_PLUGINS"

pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
pm.add_hookspecs(hookspecs)

_loaded = False
_lock = threading.Lock()


def disabled_plugins() -> set[str]:
    """Entry-point names switched off by ``AGENTD_DISABLE_PLUGINS``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Load every enabled plugin of the ``agentd`` entry-point group (once)."""
    global _loaded
    with _lock:
        if _loaded:
            return pm
        for name in disabled_plugins():
            pm.set_blocked(name)
        _load_entry_points()
        # A misspelt hook name in a plugin fails here, not silently later.
        check_plugins()
        _loaded = True
    return pm


def check_plugins() -> None:
    """Fail if a registered plugin implements a hook with no spec in :mod:`agentd.hookspecs`."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        unknown = sorted(
            hook_name
            for hook_name, hook in vars(pm.hook).items()
            if not hook_name.startswith("_") and not hook.has_spec()
            and any(impl.plugin is exc.plugin for impl in hook.get_hookimpls())
        )
        known = ", ".join(sorted(n for n, h in vars(pm.hook).items() if not n.startswith("_") and h.has_spec()))
        raise AgentdError(
            f"plugin {name!r}: unknown hook {', '.join(unknown)!s} (agentd defines: {known}); "
            f"fix the plugin or disable it with {DISABLE_ENV}={name}"
        ) from None


def _load_entry_points() -> None:
    """Import and register each enabled entry point, naming the plugin on failure."""
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            # The same name from two installs (e.g. editable + site-packages) loads once.
            if pm.has_plugin(name) or pm.is_blocked(name):
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:  # any import-time failure of third-party code
                raise AgentdError(
                    f"plugin {name!r} ({entry_point.value}) failed to import: {type(exc).__name__}: {exc}; "
                    f"disable it with {DISABLE_ENV}={name}"
                ) from exc
            try:
                pm.register(plugin, name=name)
            except pluggy.PluginValidationError as exc:
                raise AgentdError(
                    f"plugin {name!r} ({entry_point.value}): {exc}; disable it with {DISABLE_ENV}={name}"
                ) from None
