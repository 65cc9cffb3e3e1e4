"""The backend registry: architecture name -> BackendSpec, filled by plugins."""

from __future__ import annotations

import threading

from agentd.backend import BackendSpec
from agentd.errors import AgentdError, UnsupportedArchitecture
from agentd.plugin_manager import load_plugins

_specs: dict[str, BackendSpec] | None = None
_lock = threading.Lock()


def backend_specs() -> list[BackendSpec]:
    """Every registered backend, in registration order."""
    seen: dict[str, BackendSpec] = {}
    for spec in _by_architecture().values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def spec_for(architecture: str, path: object = "") -> BackendSpec:
    """The backend serving ``architecture``, or a clear error naming it."""
    spec = _by_architecture().get(architecture)
    if spec is None:
        known = ", ".join(sorted(_by_architecture())) or "none"
        raise UnsupportedArchitecture(
            path or architecture,
            f"unknown architecture {architecture!r} (registered backends serve: {known})",
        )
    return spec


def reset() -> None:
    """Forget the registry so it is rebuilt from plugins (tests use this)."""
    global _specs
    with _lock:
        _specs = None


def _by_architecture() -> dict[str, BackendSpec]:
    global _specs
    with _lock:
        if _specs is None:
            specs: dict[str, BackendSpec] = {}

            def register(spec: BackendSpec) -> None:
                for arch in spec.architectures:
                    if arch in specs:
                        raise AgentdError(
                            f"backend {spec.name!r} registers {arch!r}, "
                            f"already served by {specs[arch].name!r}"
                        )
                    specs[arch] = spec

            load_plugins().hook.register_backends(register=register)
            _specs = specs
        return _specs
