"""Where agentd keeps things, and the daemon's configuration (:class:`ServeConfig`).

Paths:

* ``AGENTD_HOME`` (default ``~/.cache/agentd``): built default models
  (``models/``), the default config file ``agentd.toml`` and, without
  ``XDG_RUNTIME_DIR``, the socket.
* ``AGENTD_SOCKET``: the Unix socket the daemon listens on and clients dial;
  default ``$XDG_RUNTIME_DIR/agentd/agentd.sock``, else
  ``$AGENTD_HOME/agentd.sock``.

``agentd serve`` settings come from one table, :data:`KEYS`, in increasing
precedence: defaults, the TOML file (``--config``, else
``$AGENTD_HOME/agentd.toml`` if present), ``AGENTD_<KEY>`` environment
variables, command-line flags. docs/configuration.md documents every key.

Everything is read from the environment at call time so tests can point a
process at a temporary home.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from agentd.errors import InvalidArgument

HOME_ENV = "AGENTD_HOME"
SOCKET_ENV = "AGENTD_SOCKET"
CONFIG_ENV = "AGENTD_CONFIG"
SOCKET_NAME = "agentd.sock"
CONFIG_NAME = "agentd.toml"
ENV_PREFIX = "AGENTD_"

LogFormat = Literal["auto", "json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- paths ------------------------------------------------------------------------------
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


# -- the serve configuration -----------------------------------------------------------------
@dataclass(frozen=True)
class ServeConfig:
    """Everything ``agentd serve`` is told; build it with :func:`load_serve_config`.

    Holds file *paths* only, never the token or key material, so printing it
    (``--print-config``) leaks nothing.
    """

    socket: Path = field(default_factory=default_socket_path)
    tcp: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    insecure_loopback: bool = False
    socket_requires_token: bool = False
    remote_admin: bool = False
    models: Mapping[str, Path] = field(default_factory=dict)
    no_defaults: bool = False
    grace: float = 5.0
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    log_prompts: bool = False
    # Consumed by the engine (issue 4 part A).
    max_batch: int = 16
    max_queue: int = 64
    prefill_chunk: int = 256
    memory_budget: int = 0
    prefix_cache_budget: int = 64 * 2**20
    session_budget: int = 512 * 2**20
    session_ttl: float = 1800.0
    quant: str = "auto"
    model_dirs: tuple[Path, ...] = ()
    threads: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    planner: str | None = None
    plan_cache: bool = True
    ray: str | None = None
    replicas: int = 1
    max_replicas: int = 0
    ray_grpc_port: int = 0
    upstream: str | None = None

    @property
    def tls(self) -> bool:
        """Whether the TCP listener uses TLS."""
        return self.tls_cert is not None


@dataclass(frozen=True)
class Source:
    """Where a value came from: names it in errors, anchors relative paths."""

    #: How the key is spelt there: ``--grace``, ``AGENTD_GRACE``, ``/etc/agentd.toml: grace``.
    label: str
    #: Directory relative paths are resolved against (a config file's own directory).
    base: Path | None = None


Parser = Callable[[Any, Source], Any]


@dataclass(frozen=True)
class Key:
    """One configuration key: its parser and documentation (docs/configuration.md mirrors these)."""

    name: str
    parse: Parser
    help: str
    #: The command-line flag when it is not ``--`` + the name with dashes.
    flag_name: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


def _text(value: Any, source: Source) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(source.label, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _path(value: Any, source: Source) -> Path:
    path = Path(_text(value if not isinstance(value, Path) else str(value), source)).expanduser()
    if not path.is_absolute() and source.base is not None:
        path = source.base / path
    return path.absolute()


def _dirs(value: Any, source: Source) -> tuple[Path, ...]:
    """Directories: a TOML list, ``DIR,DIR`` in the environment, or repeated flags."""
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)):
        raise InvalidArgument(source.label, f"must be a list of directories, got {value!r}")
    return tuple(_path(item, source) for item in value)


def _bool(value: Any, source: Source) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(source.label, f"must be true or false, got {value!r}")


def _number(value: Any, source: Source, kind: type, least: float, what: str) -> Any:
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise InvalidArgument(source.label, f"must be {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InvalidArgument(source.label, f"must be {what}, got {value!r}")
    if not value >= least:  # also rejects NaN
        raise InvalidArgument(source.label, f"must be {what}, got {value!r}")
    return kind(value)


def _seconds(value: Any, source: Source) -> float:
    return _number(value, source, float, 0.0, "a number of seconds >= 0")


def _count(least: int) -> Parser:
    return lambda value, source: _number(value, source, int, least, f"an integer >= {least}")


def _port(value: Any, source: Source) -> int:
    port = _number(value, source, int, 0, "a port in 0..65535")
    if port > 65535:
        raise InvalidArgument(source.label, f"must be a port in 0..65535, got {port}")
    return port


def _size(value: Any, source: Source) -> int:
    """Bytes, from an integer or a string such as ``"512MiB"`` or ``"2GB"``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        unit = SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise InvalidArgument(source.label, f"must be a size such as 4GiB, 512MB or a byte count, got {value!r}")
        return int(float(match.group(1)) * unit)
    return _number(value, source, int, 0, "a size in bytes >= 0")


def _address(value: Any, source: Source) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value
    return parse_tcp_address(_text(value, source), option=source.label)


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any, source: Source) -> str:
        text = value.value if hasattr(value, "value") else value  # typer hands str Enums
        if not isinstance(text, str) or text.strip().lower() not in choices:
            raise InvalidArgument(source.label, f"must be one of {', '.join(choices)}; got {value!r}")
        return text.strip().lower()

    return parse


def _ray_address(value: Any, source: Source) -> str:
    text = _text(value, source)
    if text.startswith("-"):
        raise InvalidArgument(source.label, f"must be 'local' or a Ray cluster address (ray://HOST:PORT, HOST:PORT, auto), got {text!r}")
    return text


def _models(value: Any, source: Source) -> dict[str, Path]:
    """A TOML table ``{name = "path"}``, or ``NAME=PATH`` items (comma-separated in the environment)."""
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        pairs = {}
        for item in value:
            name, sep, path = str(item).partition("=")
            if not sep or not name.strip() or not path.strip():
                raise InvalidArgument(source.label, f"expected NAME=PATH, got {item!r}")
            pairs[name.strip()] = path.strip()
        value = pairs
    if not isinstance(value, dict):
        raise InvalidArgument(source.label, f"must be a table of name = \"path\", got {value!r}")
    models = {}
    for name, path in value.items():
        if not MODEL_NAME.fullmatch(name):
            raise InvalidArgument(source.label, f"model name {name!r} must be letters, digits, '.', '_' or '-'")
        models[name] = _path(path, Source(f"{source.label}.{name}", source.base))
    return models


KEYS: tuple[Key, ...] = (
    Key("socket", _path, "Unix socket to listen on (mode 0600 in a 0700 directory). Default: $XDG_RUNTIME_DIR/agentd/agentd.sock, else $AGENTD_HOME/agentd.sock."),
    Key("tcp", _address, "Also listen on TCP at HOST:PORT (port 0: any free port). Needs tls_cert + tls_key, or insecure_loopback on a loopback address."),
    Key("tls_cert", _path, "PEM server certificate chain for the TCP listener."),
    Key("tls_key", _path, "PEM private key of tls_cert."),
    Key("tls_client_ca", _path, "PEM CA bundle: TCP clients must present a certificate it signed (mutual TLS)."),
    Key("auth_token_file", _path, "File holding the bearer token TCP clients send as 'authorization: Bearer <token>' (at least 16 characters; must not be readable by group or others)."),
    Key("insecure_loopback", _bool, "Allow TCP without TLS, on a loopback address only. For development."),
    Key("socket_requires_token", _bool, "Require the bearer token on the Unix socket too (by default the socket's file mode is its access control)."),
    Key("remote_admin", _bool, "Allow model management RPCs (LoadModel, UnloadModel) over TCP; by default they are PERMISSION_DENIED there and allowed on the Unix socket."),
    Key("models", _models, "Models to serve: NAME = \"PATH\" (a [models] table in TOML; NAME=PATH,... in AGENTD_MODELS; repeatable --model NAME=PATH). Sources merge by name, later ones win.", "--model"),
    Key("no_defaults", _bool, "Do not serve the built-in default models."),
    Key("grace", _seconds, "Seconds in-flight requests may run after SIGTERM/SIGINT before they are cancelled."),
    Key("log_format", _choice(LOG_FORMATS), "json (one object per line), text, or auto: json unless stderr is a terminal."),
    Key("log_level", _choice(LOG_LEVELS), "Least severe level logged."),
    Key("log_prompts", _bool, "Log prompt and message text (off: prompts never reach the log)."),
    Key("max_batch", _count(1), "Most requests one model decodes together (continuous batching)."),
    Key("max_queue", _count(0), "Most requests waiting per model; beyond it RESOURCE_EXHAUSTED at once."),
    Key("prefill_chunk", _count(1), "Prompt tokens prefilled per engine step, so long prompts do not stall other streams."),
    Key("memory_budget", _size, "Bytes of model weights kept loaded, e.g. 4GiB (0: no limit). Loading past it evicts the least recently used idle model; a request for it reloads it."),
    Key("prefix_cache_budget", _size, "Bytes of cached prompt-prefix states per model (0: no prefix cache)."),
    Key("session_budget", _size, "Bytes of state all in-memory sessions may hold together; past it the least recently used session is evicted."),
    Key("session_ttl", _seconds, "Seconds an idle session is kept."),
    Key("model_dirs", _dirs, "Directories LoadModel may load from (a TOML list; DIR,DIR in the environment; repeatable --model-dir). Not set: any path the daemon can read. Set, any other path is PERMISSION_DENIED without being looked at, so a remote admin cannot probe the disk.", "--model-dir"),
    Key("quant", _choice(("auto", "fp32", "int8", "int4")), "Weight encoding the torch backends compute with: auto (each checkpoint's own: a GGUF Q4 file runs int4, Q5-Q8 int8, float checkpoints fp32), or fp32, int8 (rows), int4 (groups of 32) for every model that can; ONNX bundles keep the encoding they were exported with."),
    Key("threads", _count(0), "Intra-op threads for model work, torch and onnxruntime alike (0: one less than the cores, at least 1: on small machines the gRPC loop and the OS need a core)."),
    Key("metrics_host", _text, "Address the Prometheus metrics endpoint binds."),
    Key("metrics_port", _port, "Port of the Prometheus /metrics endpoint (unset: no metrics server; 0: any free port)."),
    Key("planner", _text, "Planner the agent plans requests with, by the name its plugin registers (not set: the highest-ranked registered planner — `frames`, the trained one, when its adapter is installed)."),
    Key("plan_cache", _bool, "Plan a request from one of the user's plan templates (a plan that worked for a similar request) without the planner when one fits; false: always ask the planner."),
    Key("ray", _ray_address, "Serve through Ray Serve: 'local' starts a Ray instance on this machine, anything else is the address of a running cluster (ray://HOST:PORT, HOST:PORT or auto). Each model becomes a deployment; agentd's listeners forward to Ray's gRPC proxy (docs/ray.md)."),
    Key("replicas", _count(1), "With ray: replicas of every model deployment (with max_replicas: the fewest)."),
    Key("max_replicas", _count(0), "With ray: autoscale every model deployment between replicas and this many on its queue length (0: a fixed count)."),
    Key("ray_grpc_port", _port, "With ray: port of Ray Serve's gRPC proxy (0: any free port)."),
    Key("upstream", _text, "Serve no models here: forward Inference and Models to HOST:PORT, a Ray Serve gRPC proxy running the agentd application (a KubeRay RayService, docs/ray.md), behind this daemon's listeners and auth."),
)
KEYS_BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}
assert set(KEYS_BY_NAME) == {f.name for f in dataclasses.fields(ServeConfig)}, "KEYS and ServeConfig disagree"


def load_serve_config(
    config_file: Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeConfig:
    """The effective configuration: defaults < TOML file < ``AGENTD_*`` environment < ``flags``.

    ``config_file`` None means ``$AGENTD_CONFIG``, else ``$AGENTD_HOME/agentd.toml``
    if it exists. ``flags`` maps key names to values the user gave on the command
    line (None values are ignored). Errors name the key and where it was set.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def merge(name: str, raw: Any, source: Source) -> None:
        parsed = KEYS_BY_NAME[name].parse(raw, source)
        if name == "models":  # merged by model name: a later source overrides one model, not all
            parsed = {**values.get("models", {}), **parsed}
        values[name] = parsed
        origins[name] = source.label

    path = _config_path(config_file, environ)
    if path is not None:
        for name, raw in _read_toml(path).items():
            merge(name, raw, Source(f"{path}: {name}", path.parent))
    for key in KEYS:
        raw = environ.get(key.env)
        if raw is not None and raw.strip():
            merge(key.name, raw, Source(key.env))
    for name, raw in (flags or {}).items():
        if name not in KEYS_BY_NAME:
            raise KeyError(f"no configuration key {name!r}")  # a bug in the caller, not a user error
        if raw is not None and raw != []:
            merge(name, raw, Source(KEYS_BY_NAME[name].flag))
    config = ServeConfig(**values)
    check_security(config, origins)
    return config


def check_security(config: ServeConfig, origins: Mapping[str, str] | None = None) -> None:
    """Refuse combinations that would expose the models; errors name the key as the user set it."""
    origins = origins or {}

    def label(name: str) -> str:
        return origins.get(name, name)

    if (config.tls_cert is None) != (config.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if config.tls_key is None else ("tls_key", "tls_cert")
        raise InvalidArgument(label(given), f"needs {KEYS_BY_NAME[missing].flag} too")
    if config.tls_client_ca is not None and not config.tls:
        raise InvalidArgument(label("tls_client_ca"), "mutual TLS needs --tls-cert and --tls-key")
    if config.socket_requires_token and config.auth_token_file is None:
        raise InvalidArgument(label("socket_requires_token"), "needs --auth-token-file")
    if config.tcp is None:
        return
    host = config.tcp[0]
    if not config.tls:
        if not is_loopback(host):
            raise InvalidArgument(
                label("tcp"),
                f"{host} is not a loopback address; TCP beyond this machine needs --tls-cert and --tls-key",
            )
        if not config.insecure_loopback:
            raise InvalidArgument(
                label("tcp"), "plain TCP is refused: give --tls-cert and --tls-key, or --insecure-loopback for development"
            )
    elif config.auth_token_file is None and config.tls_client_ca is None:
        raise InvalidArgument(
            label("tcp"), "TCP clients must authenticate: give --auth-token-file or --tls-client-ca"
        )


def _config_path(config_file: Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file is None and environ.get(CONFIG_ENV, "").strip():
        config_file = Path(environ[CONFIG_ENV].strip())
    if config_file is not None:
        path = config_file.expanduser().absolute()
        if not path.is_file():
            raise InvalidArgument("--config", f"{path}: no such file")
        return path
    home = Path(environ[HOME_ENV]).expanduser() if environ.get(HOME_ENV) else agentd_home()
    default = home / CONFIG_NAME
    return default.absolute() if default.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise InvalidArgument("--config", f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument("--config", f"{path}: not valid TOML ({exc})") from None
    for name in document:
        if name not in KEYS_BY_NAME:
            raise InvalidArgument(f"{path}: {name}", f"unknown key (known: {', '.join(KEYS_BY_NAME)})")
    return document


# -- printing ------------------------------------------------------------------------------
def config_to_toml(config: ServeConfig) -> str:
    """``config`` as a TOML document that :func:`load_serve_config` reads back to an equal config."""
    lines = ["# agentd serve: effective configuration (defaults < config file < AGENTD_* < flags)"]
    for key in KEYS:
        if key.name == "models":
            continue
        value = getattr(config, key.name)
        if value is None:
            lines.append(f"# {key.name} is not set")
        else:
            lines.append(f"{key.name} = {_toml_value(value)}")
    lines.append("")
    lines.append("[models]")
    for name, path in config.models.items():
        lines.append(f"{json.dumps(name)} = {_toml_value(path)}")  # quoted: a '.' in a bare key would nest
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(item, Path) for item in value):  # directories
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, tuple):  # a TCP address
        value = tcp_target(*value)
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(str(value), ensure_ascii=False)
