"""The exporter registry: (target, architecture) -> ExporterSpec, filled by plugins.

Mirrors :mod:`agentd.registry` for ``agentd export``: plugins announce
exporters through the ``register_exporters`` hook; the CLI asks
:func:`exporter_for` which one converts a checkpoint to a target format.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from agentd.errors import AgentdError, InvalidArgument, UnsupportedArchitecture
from agentd.plugin_manager import load_plugins

if TYPE_CHECKING:
    from agentd.checkpoint import Checkpoint

#: ``progress(stage, done, total)``: called as an export advances (``done`` of ``total`` steps).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked of an export, checked against the spec before it runs."""

    #: Weight format: one of the spec's ``quantizations`` (``fp32``, ``fp16``, ``int8``, ``int4``).
    quant: str = "fp32"
    #: Weights per quantisation block (``int4`` only).
    block_size: int = 32
    #: Replace an existing output directory.
    force: bool = False


@dataclass(frozen=True)
class ExporterSpec:
    """How a plugin announces an exporter through ``register_exporters``."""

    #: Short unique name, e.g. ``onnx-decoder``.
    name: str
    #: Output format, the ``agentd export --target`` value, e.g. ``onnx``.
    target: str
    #: Hugging Face architectures converted, e.g. ``("LlamaForCausalLM",)``.
    architectures: tuple[str, ...]
    #: ``export(checkpoint, out_dir, options, progress) -> bundle path``; writes atomically.
    export: Callable[["Checkpoint", Path, ExportOptions, Progress], Path]
    #: ``--quant`` values this exporter accepts.
    quantizations: tuple[str, ...] = ("fp32",)
    #: One line shown in ``agentd export --help`` errors and listings.
    description: str = ""


_specs: dict[tuple[str, str], ExporterSpec] | None = None
_lock = threading.Lock()


def exporter_specs() -> list[ExporterSpec]:
    """Every registered exporter, in registration order."""
    seen: dict[str, ExporterSpec] = {}
    for spec in _by_key().values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def exporter_for(target: str, architecture: str, path: object = "") -> ExporterSpec:
    """The exporter converting ``architecture`` to ``target``, or a clear error naming both."""
    specs = _by_key()
    spec = specs.get((target, architecture))
    if spec is not None:
        return spec
    targets = sorted({key[0] for key in specs})
    if target not in targets:
        raise InvalidArgument("target", f"unknown export target {target!r} (known: {', '.join(targets) or 'none'})")
    known = ", ".join(sorted(arch for tgt, arch in specs if tgt == target))
    raise UnsupportedArchitecture(
        path or architecture, f"architecture {architecture!r} cannot be exported to {target} (supported: {known})"
    )


def check_options(spec: ExporterSpec, options: ExportOptions) -> None:
    """Refuse options the exporter does not support, naming the field."""
    if options.quant not in spec.quantizations:
        raise InvalidArgument(
            "quant", f"{options.quant!r} is not supported by {spec.name} (choose {', '.join(spec.quantizations)})"
        )
    if options.block_size < 16 or options.block_size & (options.block_size - 1):
        raise InvalidArgument("block-size", f"must be a power of two >= 16, got {options.block_size}")


def reset() -> None:
    """Forget the registry so it is rebuilt from plugins (tests use this)."""
    global _specs
    with _lock:
        _specs = None


def _by_key() -> dict[tuple[str, str], ExporterSpec]:
    global _specs
    with _lock:
        if _specs is None:
            specs: dict[tuple[str, str], ExporterSpec] = {}

            def register(spec: ExporterSpec) -> None:
                for arch in spec.architectures:
                    key = (spec.target, arch)
                    if key in specs:
                        raise AgentdError(
                            f"exporter {spec.name!r} registers {arch!r} for {spec.target}, "
                            f"already exported by {specs[key].name!r}"
                        )
                    specs[key] = spec

            load_plugins().hook.register_exporters(register=register)
            _specs = specs
        return _specs
