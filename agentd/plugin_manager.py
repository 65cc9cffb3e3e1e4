"""The plugin manager: finds plugins through entry points, lazily, once.

Set ``AGENTD_DISABLE_PLUGINS`` to a comma-separated list of entry-point names
(e.g. ``ssm,linear``) to keep those plugins from loading.
"""

from __future__ import annotations

import os
import threading

import pluggy

from agentd import hookspecs

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
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        # A misspelt hook name in a plugin fails here, not silently later.
        pm.check_pending()
        _loaded = True
    return pm
