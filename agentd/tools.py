"""Tools an agent can call: the contract tool plugins implement, and the registry they fill.

A tool is a :class:`ToolSpec`: a name, a description the planner reads, JSON
schemas for its parameters and its result, the flags the executor enforces,
and a ``call`` function. Plugins announce tools through the
``register_tools(register)`` hook, built-in packs exactly like third-party ones.

The flags are what keeps a personal agent safe, so they are part of the
contract rather than conventions:

* ``read_only`` — no effect on the world; may run without asking, in parallel.
* ``needs_approval`` — irreversible or spends money: the executor pauses the run
  and shows the exact resolved arguments until the user approves.
* ``idempotent`` — a call repeated with the same ``ToolContext.idempotency_key``
  has its effect once (the tool checks the key), so a resumed run never pays twice.
* ``credential_scopes`` — the credentials (by provider) the tool needs; they are
  handed over by handle at call time and never appear in prompts, logs or records.
* ``untrusted_output`` — the result carries third-party text (web pages, menus):
  data for the planner to read, never instructions to follow.

Torch-free: a tool pack runs on the phone-class install too.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from agentd.errors import AgentdError, InvalidArgument, NotFound
from agentd.plugin_manager import load_plugins

if TYPE_CHECKING:
    from agentd.agent.memory import UserMemory

#: Tool names the planner grammar can spell: a letter, then letters, digits, underscores.
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ToolError(AgentdError):
    """A tool call failed in a way the planner may react to (no such flight, insufficient funds)."""

    grpc_code = "FAILED_PRECONDITION"
    exit_code = 1


@dataclass(frozen=True)
class ToolContext:
    """What a tool gets besides its arguments."""

    #: The run this call belongs to.
    run_id: str
    #: The plan step making the call (1-based, as the plan numbers them).
    step: int
    #: Where tool packs keep their state (``$AGENTD_HOME/tools``); each pack uses its own subfolder.
    data_dir: Path
    #: Returns the secret for a provider the tool declared in ``credential_scopes``.
    credential: Callable[[str], str] | None = None
    #: Who the run is for (``RunTaskRequest.user``).
    user: str = "default"
    #: That user's memory (profile facts, past runs), scoped to them; None when the daemon keeps none.
    memory: "UserMemory | None" = None

    @property
    def idempotency_key(self) -> str:
        """``run:step``: the same for every attempt of this step, so a side effect happens once."""
        return f"{self.run_id}:{self.step}"


@dataclass(frozen=True)
class ToolSpec:
    """One tool, as a plugin registers it."""

    #: Unique name the planner calls it by, e.g. ``search_flights``.
    name: str
    #: One or two sentences the planner reads to choose the tool.
    description: str
    #: JSON schema (an ``object``) of the arguments; ``required`` lists the mandatory ones.
    parameters: Mapping[str, Any]
    #: JSON schema of the result.
    result: Mapping[str, Any]
    #: ``call(arguments, context) -> result``: arguments already validated against ``parameters``.
    #: Raises :class:`ToolError` for failures the planner should see.
    call: Callable[[dict[str, Any], ToolContext], Any]
    read_only: bool = False
    needs_approval: bool = False
    idempotent: bool = False
    credential_scopes: tuple[str, ...] = ()
    untrusted_output: bool = False
    #: Registering plugin's name (filled by the registry).
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not TOOL_NAME.fullmatch(self.name):
            raise AgentdError(f"tool name {self.name!r} must match {TOOL_NAME.pattern}")
        if self.parameters.get("type") != "object":
            raise AgentdError(f"tool {self.name!r}: 'parameters' must be a JSON schema of type 'object'")
        if self.read_only and self.needs_approval:
            raise AgentdError(f"tool {self.name!r}: a read-only tool does not need approval")

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the mandatory arguments."""
        return tuple(self.parameters.get("required", ()))


_tools: dict[str, ToolSpec] | None = None
_lock = threading.Lock()


def tool_specs() -> list[ToolSpec]:
    """Every registered tool, in registration order."""
    return list(_by_name().values())


def tool(name: str) -> ToolSpec:
    """The tool called ``name``, or NOT_FOUND naming the known ones."""
    spec = _by_name().get(name)
    if spec is None:
        raise NotFound(f"no tool named {name!r} (registered: {', '.join(_by_name()) or 'none'})")
    return spec


def validate_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` checked against the tool's parameter schema; INVALID_ARGUMENT naming the field."""
    import jsonschema

    value = dict(arguments)
    validator = jsonschema.Draft202012Validator(spec.parameters, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "arguments"
        raise InvalidArgument(f"{spec.name}.{where}", error.message)
    return value


def reset() -> None:
    """Forget the registry so it is rebuilt from plugins (tests use this)."""
    global _tools
    with _lock:
        _tools = None


def _by_name() -> dict[str, ToolSpec]:
    global _tools
    with _lock:
        if _tools is None:
            tools: dict[str, ToolSpec] = {}
            manager = load_plugins()
            for impl in manager.hook.register_tools.get_hookimpls():

                def register(spec: ToolSpec, _plugin: str = impl.plugin_name) -> None:
                    if spec.name in tools:
                        raise AgentdError(
                            f"plugin {_plugin!r} registers tool {spec.name!r}, already registered by {tools[spec.name].plugin!r}"
                        )
                    tools[spec.name] = _with_plugin(spec, _plugin)

                impl.function(register=register)
            _tools = tools
        return _tools


def _with_plugin(spec: ToolSpec, plugin: str) -> ToolSpec:
    from dataclasses import replace

    return replace(spec, plugin=plugin)
