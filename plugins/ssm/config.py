"""Reading ``config.json`` fields into the architecture dataclasses.

The dataclasses raise ``ValueError`` naming the field; :func:`parse_config`
turns that into a :class:`ModelLoadError` naming the file, so a bad config is
one clear line for the user.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError

ConfigT = TypeVar("ConfigT")
_REQUIRED = object()


def config_field(config: dict[str, Any], name: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``config[name]`` checked against ``kind`` (ints accepted for floats); ``default`` when absent."""
    if name not in config or config[name] is None:
        if default is _REQUIRED:
            raise ValueError(f"missing field {name!r}")
        return default
    value = config[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise ValueError(f"field {name!r} must be {kind.__name__}, got {value!r}")
    return value


#: transformers >= 5 writes non-finite floats as ``{"__float__": "Infinity"}`` (strict JSON).
_SPECIAL_FLOATS = {"Infinity": float("inf"), "-Infinity": float("-inf")}


def config_number(value: Any, name: str) -> float:
    """A finite or infinite number: plain JSON, Python's ``Infinity`` or transformers' tagged form."""
    if isinstance(value, dict) and set(value) == {"__float__"} and value["__float__"] in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value["__float__"]]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:  # not NaN
        return float(value)
    raise ValueError(f"field {name!r} has a non-numeric entry {value!r}")


def require_silu(config: dict[str, Any]) -> None:
    """Both Mamba generations use SiLU; anything else would silently compute another model."""
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"field 'hidden_act' {act!r} is not supported (only 'silu')")


def parse_config(checkpoint: Checkpoint, from_dict: Callable[[dict[str, Any]], ConfigT]) -> ConfigT:
    """Run ``from_dict`` on the checkpoint's config, mapping ``ValueError`` to ``ModelLoadError``."""
    try:
        return from_dict(checkpoint.config)
    except ValueError as exc:
        raise ModelLoadError(checkpoint.where("config.json"), str(exc)) from None
