"""The backend registry: architecture name -> BackendSpec, filled by plugins."""

from __future__ import annotations

import threading

from agentd.backend import BackendSpec
from agentd.errors import AgentdError, BackendUnavailable, UnsupportedArchitecture
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


def available_spec_for(architecture: str, path: object = "") -> BackendSpec:
    """:func:`spec_for`, and refuse a backend whose requirements are not installed."""
    spec = spec_for(architecture, path)
    reason = spec.unavailable_reason
    if reason is not None:
        raise BackendUnavailable(f"{path or architecture}: backend {spec.name!r} for {architecture} {reason}")
    return spec


def reset() -> None:
    """Forget the registry so it is rebuilt from plugins (tests use this)."""
    global _specs
    with _lock:
        _specs = None


def _by_architecture() -> dict[str, BackendSpec]:
    """Architecture -> spec, built on first use by asking every plugin to register."""
    global _specs
    with _lock:
        if _specs is None:
            specs: dict[str, BackendSpec] = {}
            names: set[str] = set()

            def register(spec: BackendSpec) -> None:
                # Either mistake would make backend_specs() hide a backend silently.
                if spec.name in names:
                    raise AgentdError(f"two backends are named {spec.name!r}; backend names must be unique")
                archs = spec.architectures
                if not isinstance(archs, tuple) or not archs or not all(isinstance(a, str) and a for a in archs):
                    raise AgentdError(f"backend {spec.name!r}: 'architectures' must be a non-empty tuple of names")
                for arch in spec.architectures:
                    if arch in specs:
                        raise AgentdError(
                            f"backend {spec.name!r} registers {arch!r}, "
                            f"already served by {specs[arch].name!r}"
                        )
                    specs[arch] = spec
                names.add(spec.name)

            load_plugins().hook.register_backends(register=register)
            _specs = specs
        return _specs
