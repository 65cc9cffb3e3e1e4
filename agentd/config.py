"""Where agentd keeps things: its home directory and the daemon's socket.

* ``AGENTD_HOME`` (default ``~/.cache/agentd``): built default models
  (``models/``) and, without ``XDG_RUNTIME_DIR``, the socket.
* ``AGENTD_SOCKET``: the Unix socket the daemon listens on and clients dial;
  default ``$XDG_RUNTIME_DIR/agentd/agentd.sock``, else
  ``$AGENTD_HOME/agentd.sock``.

Everything is read from the environment at call time so tests can point a
process at a temporary home.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from agentd.errors import InvalidArgument

HOME_ENV = "AGENTD_HOME"
SOCKET_ENV = "AGENTD_SOCKET"
SOCKET_NAME = "agentd.sock"


def agentd_home() -> Path:
    """``$AGENTD_HOME``, or ``~/.cache/agentd``."""
    raw = os.environ.get(HOME_ENV)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "agentd"


def models_dir() -> Path:
    """Where built-in default models are materialised."""
    return agentd_home() / "models"


def default_socket_path() -> Path:
    """``$AGENTD_SOCKET``, else ``$XDG_RUNTIME_DIR/agentd/agentd.sock``, else ``$AGENTD_HOME/agentd.sock``."""
    raw = os.environ.get(SOCKET_ENV)
    if raw:
        return Path(raw).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "agentd" / SOCKET_NAME
    return agentd_home() / SOCKET_NAME


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents owner-only (0700); existing ones are left as they are."""
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            continue
        os.chmod(candidate, 0o700)  # mkdir's mode is filtered by the umask


def unix_target(path: Path) -> str:
    """The gRPC target string for a Unix socket path (always absolute)."""
    return f"unix://{Path(path).expanduser().absolute()}"


def parse_tcp_address(address: str, *, option: str = "--tcp") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) and check the port (0: any free port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise InvalidArgument(option, f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if not 0 <= port < 65536:
        raise InvalidArgument(option, f"port must be in 0..65535, got {port}")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcp_target(host: str, port: int) -> str:
    """The gRPC target string for a TCP address (IPv6 literals bracketed)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
