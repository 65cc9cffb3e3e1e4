"""The models a daemon serves: loaded at start or at run time, evicted under a memory budget.

A :class:`ModelTable` maps served names to :class:`ServedModel` entries. Each
entry is ``loading``, ``ready``, ``evicted`` or ``failed``; a ready decoder has
an :class:`~agentd.engine.Engine` (continuous batching) and a prefix cache,
a ready encoder a lock that serialises its ``embed`` and ``classify`` calls.
Requests naming no model go to the first served model of their kind; Classify's
to the first with labels (a token classifier, itself an encoder).

Run-time changes (``load`` / ``unload``) happen on the daemon's event loop;
weights are read in a worker thread. Readiness is reported through the gRPC
health service under ``agentd.model.<name>`` once :meth:`ModelTable.bind_health`
has been called: NOT_SERVING while loading (or evicted, or failed), SERVING
when ready, SERVICE_UNKNOWN once unloaded.

With a memory budget (bytes of weights), loading past it first evicts the
least recently used idle model (no RPC using it); a later request for an
evicted model reloads it from its recorded path. Its sessions are dropped
with it: a state only means something to the weights that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Literal, Sequence

from agentd.backend import QUANTS
from agentd.errors import (
    AgentdError, FailedPrecondition, InvalidArgument, ModelLoadError, NotFound, PermissionDenied, ResourceExhausted,
)
from agentd.server.sessions import SessionSettings, SessionStore

if TYPE_CHECKING:
    from agentd.backend import ModelInfo
    from agentd.engine import Engine, PrefixCache
    from agentd.model import Model

log = logging.getLogger(__name__)

#: ``config.json`` key holding a model's one-line description (see agentd.default_models).
DESCRIPTION_KEY = "agentd_description"
#: Health service name of a model: ``agentd.model.<name>``.
HEALTH_PREFIX = "agentd.model."

#: Characters of a LoadModel description.
MAX_DESCRIPTION = 1024
#: Directory entries :func:`estimate_weight_bytes` looks at before it stops counting.
MAX_SCANNED = 10_000
#: Names a client may give LoadModel (they also name a health service).
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Status = Literal["loading", "ready", "evicted", "failed"]
Kind = Literal["decoder", "encoder"]


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: a name and the path of its directory or file."""

    name: str
    path: Path
    #: Shown by GetModelInfo; None reads ``agentd_description`` from config.json.
    description: str | None = None


@dataclass(frozen=True)
class ServingSettings:
    """How models are served: engine limits, caches, budgets (``agentd serve`` flags)."""

    #: Sequences decoded together per step, per model.
    max_batch: int = 16
    #: Requests waiting for a slot, per model; beyond it RESOURCE_EXHAUSTED.
    max_queue: int = 64
    #: Prompt tokens prefilled per engine step (long prompts are spread over steps).
    prefill_chunk: int = 256
    #: Bytes of saved prefix states kept per model (0 turns the prefix cache off).
    prefix_cache_bytes: int = 64 * 2**20
    #: Bytes of model weights kept loaded; 0 means no limit.
    memory_budget: int = 0
    #: Seconds in-flight streams of an unloaded model may finish in.
    unload_grace: float = 5.0
    #: Weight encoding models are computed in (``fp32``, ``int8``, ``int4``); None: each checkpoint's own.
    quant: str | None = None
    #: Directories LoadModel may load from; empty: any path the daemon can read.
    model_dirs: tuple[Path, ...] = ()
    sessions: SessionSettings = field(default_factory=SessionSettings)


@dataclass(eq=False)
class ServedModel:
    """A model under its served name, in whatever state of loading it is."""

    name: str
    path: Path
    description: str
    status: Status = "loading"
    model: "Model | None" = None
    #: Encoding LoadModel asked for (``auto`` or one of :data:`agentd.backend.QUANTS`), kept for
    #: reloads after eviction; None: the daemon's setting, for the models whose backend has it.
    quant: str | None = None
    #: Continuous-batching engine of a ready decoder.
    engine: "Engine | None" = None
    prefix_cache: "PrefixCache | None" = None
    #: What the model is; kept after eviction so it can still be described.
    info: "ModelInfo | None" = None
    #: Bytes of weights: estimated from the files until loaded, then what the backend
    #: reports holding (``ModelInfo.weight_bytes``).
    weight_bytes: int = 0
    #: Why loading failed (``status == "failed"``).
    error: AgentdError | None = None
    #: RPCs using the model now; a model in use is never evicted.
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    #: Serialises an encoder's embed and classify calls (one piece at a time).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Embed / Classify requests taking turns on the encoder (one running, the rest waiting).
    encoder_requests: int = 0
    _loading: "asyncio.Future[None] | None" = None

    @property
    def kind(self) -> Kind | None:
        return self.info.kind if self.info is not None else None

    @property
    def health_service(self) -> str:
        return HEALTH_PREFIX + self.name


class ModelTable:
    """Served models in serving order; lookups raise the errors clients should see."""

    def __init__(self, models: Sequence[ServedModel], settings: ServingSettings | None = None):
        self.settings = settings or ServingSettings()
        self.sessions = SessionStore(self.settings.sessions)
        self._models: dict[str, ServedModel] = {}
        self._health: Any = None  # grpc_health.v1.health.aio.HealthServicer, once bound
        for served in models:
            if served.name in self._models:
                raise InvalidArgument("--model", f"name {served.name!r} is given twice")
            self._models[served.name] = served
            if served.model is not None:
                self._activate(served, served.model)
        from agentd.server import metrics

        metrics.watch(self)

    @classmethod
    def load(cls, sources: Sequence[ModelSource], settings: ServingSettings | None = None) -> "ModelTable":
        """Load every source now (slow: weights are read here, before serving starts)."""
        from agentd.model import load_model

        remove_staging_leftovers((settings or ServingSettings()).model_dirs)
        models = []
        for source in sources:
            model = load_model(source.path, _quant_for(source.path, settings))
            models.append(ServedModel(source.name, model.path, _description(source, model), model=model))
            log.info("loaded %s from %s", source.name, model.path)
        return cls(models, settings)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    # -- lookups -----------------------------------------------------------------------
    def get(self, name: str, *, field_name: str = "model") -> ServedModel:
        """The entry called ``name`` in any state; INVALID_ARGUMENT if empty, NOT_FOUND if unknown."""
        if not name:
            raise InvalidArgument(field_name, "is required (see `agentd models list`)")
        served = self._models.get(name)
        if served is None:
            known = ", ".join(self._models) or "none"
            raise NotFound(f"model {name!r} is not served (served: {known})")
        return served

    def default_name(self, kind: Kind | None, *, field_name: str = "model") -> str:
        """The default model of ``kind`` (None: any): the first one served, as ListModels lists them.

        A model still loading for the first time has no known kind and is passed over.
        """
        for served in self._models.values():
            if kind is None or served.kind == kind:
                return served.name
        what = f"no {kind} model" if kind else "no model"
        raise InvalidArgument(field_name, f"is empty and {what} is served to default to (see `agentd models list`)")

    def default_classifier(self, *, field_name: str = "model") -> str:
        """The default token classifier: the first served model with labels (Classify's default).

        Like :meth:`default_name`, a model still loading for the first time is passed over.
        """
        for served in self._models.values():
            if served.info is not None and served.info.labels:
                return served.name
        raise InvalidArgument(
            field_name, "is empty and no token-classification model (one with labels) is served to default to"
        )

    def is_default(self, served: ServedModel) -> bool:
        """Whether requests naming no model go to ``served``: the default of its kind,
        or (a model with labels) the default token classifier."""
        if served.kind is None:
            return False
        if served.info is not None and served.info.labels and self.default_classifier() == served.name:
            return True
        return self.default_name(served.kind) == served.name

    @contextlib.asynccontextmanager
    async def use(self, name: str, kind: Kind | None, *, field_name: str = "model") -> AsyncIterator[ServedModel]:
        """A ready model of ``kind`` (None: any) for the duration of one RPC (reloaded first if evicted).

        While the block runs the model counts as in use, so it is not evicted.
        """
        served = self.get(name or self.default_name(kind, field_name=field_name), field_name=field_name)
        served.in_use += 1
        try:
            await self._ready(served)
            if kind == "decoder" and served.kind != "decoder":
                raise InvalidArgument(field_name, f"{name!r} is an {served.kind}: it cannot generate (use Embed)")
            if kind == "encoder" and served.kind != "encoder":
                raise InvalidArgument(field_name, f"{name!r} is a {served.kind}: it cannot embed (use Generate)")
            served.last_used = time.monotonic()
            yield served
        finally:
            served.in_use -= 1
            served.last_used = time.monotonic()

    async def _ready(self, served: ServedModel) -> None:
        if served.status == "evicted":
            log.info("reloading evicted model %s from %s", served.name, served.path)
            self._start_loading(served)
        if served.status == "loading" and served._loading is not None:
            await asyncio.shield(served._loading)
        if served.status == "failed":
            assert served.error is not None
            raise served.error
        if served.status != "ready":
            raise ModelLoadError(served.path, f"model {served.name!r} is {served.status}")

    # -- run-time loading ----------------------------------------------------------------
    async def bind_health(self, health: Any) -> None:
        """Report each model's readiness on ``health`` (a grpc.aio HealthServicer) from now on."""
        self._health = health
        for served in self:
            await self._report(served)

    async def start_load(
        self, name: str, path: Path, description: str | None = None, quant: str | None = None
    ) -> ServedModel:
        """Begin loading ``path`` as ``name`` in the background; returns its (loading) entry,
        already reported NOT_SERVING. Refuses a name already served (unload it first).

        ``quant`` (``auto`` or one of :data:`agentd.backend.QUANTS`) is required of the model's
        backend; None applies the daemon's setting where the backend has it.
        """
        if not MODEL_NAME.fullmatch(name):
            raise InvalidArgument("name", "must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")
        if name in self._models:
            raise InvalidArgument("name", f"model {name!r} is already served (unload it first)")
        path = Path(path).expanduser()
        if quant is not None and quant != "auto" and quant not in QUANTS:
            raise InvalidArgument("quant", f"{quant!r}: must be auto, {', '.join(QUANTS)}")
        if description is not None and len(description) > MAX_DESCRIPTION:
            # It is repeated in every ListModels answer: a huge one would break every client.
            raise InvalidArgument("description", f"has {len(description)} characters; at most {MAX_DESCRIPTION}")
        # Off the event loop: a path on a slow disk or a huge directory must not stall other clients.
        resolved, weight_bytes = await asyncio.to_thread(_inspect_model_path, path, self.settings.model_dirs)
        if name in self._models:  # loaded by a concurrent call meanwhile
            raise InvalidArgument("name", f"model {name!r} is already served (unload it first)")
        served = ServedModel(name, resolved, description or "", quant=quant)
        served.weight_bytes = weight_bytes
        self._make_room(served)
        self._models[name] = served
        self._start_loading(served, described=description is not None)
        await self._report(served)
        return served

    async def wait_loaded(self, name: str) -> ServedModel:
        """Wait for ``name`` to finish loading (or failing)."""
        served = self.get(name, field_name="name")
        if served._loading is not None:
            await asyncio.shield(served._loading)
        return served

    async def unload(self, name: str) -> None:
        """Stop serving ``name``: new requests get NOT_FOUND; running streams get ``unload_grace``."""
        served = self.get(name, field_name="name")
        del self._models[name]
        if served._loading is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(served._loading)
        await self._release(served, drain=True)
        if self._health is not None:
            from grpc_health.v1 import health_pb2

            await self._health.set(served.health_service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        log.info("unloaded %s", name)

    async def close(self) -> None:
        """Stop every engine (the daemon is stopping); in-flight streams end as cancelled."""
        for served in self:
            if served.engine is not None:
                await asyncio.to_thread(served.engine.close)

    def loaded_bytes(self) -> int:
        """Weight bytes of the models loaded or loading (what the budget counts)."""
        return sum(s.weight_bytes for s in self._models.values() if s.status in ("loading", "ready"))

    def _start_loading(self, served: ServedModel, *, described: bool = True) -> None:
        if served.status == "evicted":
            self._make_room(served)
        served.status, served.error = "loading", None
        served._loading = asyncio.ensure_future(self._load(served, described))

    async def _load(self, served: ServedModel, described: bool) -> None:
        await self._report(served)  # NOT_SERVING while loading (a reload after eviction, too)
        started = time.monotonic()
        try:
            model = await asyncio.to_thread(self._load_blocking, served)
        except AgentdError as exc:
            served.status, served.error = "failed", exc
            log.warning("loading %s failed: %s", served.name, exc)
        except Exception as exc:  # a bug in a backend: still a failed load, not a dead daemon
            served.status, served.error = "failed", ModelLoadError(served.path, f"{type(exc).__name__}: {exc}")
            log.exception("loading %s failed", served.name)
        else:
            if not described:
                served.description = str(model.checkpoint.config.get(DESCRIPTION_KEY, ""))
            self._activate(served, model)
            log.info("loaded %s from %s in %.2fs", served.name, served.path, time.monotonic() - started)
            self._settle_budget(served)
        finally:
            served._loading = None
        if self._models.get(served.name) is served:
            await self._report(served)

    def _load_blocking(self, served: ServedModel) -> "Model":
        """Read ``served``'s weights in the encoding it asked for (off the event loop: files are opened)."""
        from agentd.model import load_model

        quant = _quant_for(served.path, self.settings) if served.quant is None else _explicit(served.quant)
        return load_model(served.path, quant)

    def _activate(self, served: ServedModel, model: "Model") -> None:
        """Make a loaded model ready: its engine and prefix cache for a decoder."""
        from agentd.engine import Engine, PrefixCache

        settings = self.settings
        served.model, served.info, served.status = model, model.info, "ready"
        served.weight_bytes = weight_bytes(model.info, served.path)
        if model.info.kind == "decoder":
            cache = PrefixCache(settings.prefix_cache_bytes) if settings.prefix_cache_bytes > 0 else None
            served.prefix_cache = cache
            served.engine = Engine.from_model(
                model,
                prefix_cache=cache,
                name=served.name,
                max_batch=settings.max_batch,
                max_queue=settings.max_queue,
                prefill_chunk=settings.prefill_chunk,
            )

    def _make_room(self, incoming: ServedModel) -> None:
        """Evict least recently used idle models until ``incoming`` fits the budget."""
        budget = self.settings.memory_budget
        if budget <= 0:
            return
        if incoming.weight_bytes > budget:
            raise ResourceExhausted(
                f"model {incoming.name!r} needs about {incoming.weight_bytes} bytes; the memory budget is {budget}"
            )
        while self.loaded_bytes() + incoming.weight_bytes > budget:
            idle = [
                s for s in self._models.values()
                if s is not incoming and s.status == "ready" and s.in_use == 0 and (s.engine is None or s.engine.active_count() + s.engine.queued_count() == 0)
            ]
            if not idle:
                raise ResourceExhausted(
                    f"memory budget {budget} bytes: cannot fit {incoming.name!r} "
                    f"({incoming.weight_bytes} bytes) while the loaded models are in use; retry later"
                )
            victim = min(idle, key=lambda s: s.last_used)
            log.info("evicting %s (least recently used) to fit %s in the memory budget", victim.name, incoming.name)
            self._evict(victim)

    def _settle_budget(self, loaded: ServedModel) -> None:
        """Room was made for ``loaded`` by its files' size; loaded, it reports what it holds
        (a packed copy of a tied head, say). Evict idle models again while that overflows."""
        budget = self.settings.memory_budget
        while budget > 0 and self.loaded_bytes() > budget:
            idle = [s for s in self._models.values() if s is not loaded and self._idle(s)]
            if not idle:
                log.warning("%s holds %d bytes of weights: over the memory budget of %d while the others are in use",
                            loaded.name, loaded.weight_bytes, budget)
                return
            victim = min(idle, key=lambda s: s.last_used)
            log.info("evicting %s (least recently used): %s holds more than its files implied", victim.name, loaded.name)
            self._evict(victim)

    @staticmethod
    def _idle(served: ServedModel) -> bool:
        engine = served.engine
        return served.status == "ready" and served.in_use == 0 and (
            engine is None or engine.active_count() + engine.queued_count() == 0
        )

    def _evict(self, served: ServedModel) -> None:
        """Drop an idle model's weights, engine and sessions; it reloads on its next request."""
        engine = served.engine
        served.status, served.model, served.engine, served.prefix_cache = "evicted", None, None, None
        self.sessions.drop_model(served.name)
        if engine is not None:
            engine.close()  # idle: returns as soon as its thread wakes and exits
        asyncio.ensure_future(self._report(served))

    async def _release(self, served: ServedModel, *, drain: bool) -> None:
        engine = served.engine
        served.model, served.engine, served.prefix_cache = None, None, None
        self.sessions.drop_model(served.name)
        if engine is not None:
            await asyncio.to_thread(engine.close, drain=drain, grace=self.settings.unload_grace)

    async def _report(self, served: ServedModel) -> None:
        if self._health is None:
            return
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING if served.status == "ready" else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set(served.health_service, status)


def require_models(table: ModelTable) -> ModelTable:
    """Refuse to start a daemon that would serve nothing."""
    if not len(table):
        raise AgentdError("no models to serve (pass --model NAME=PATH or drop --no-defaults)")
    return table


def weight_bytes(info: "ModelInfo", path: Path) -> int:
    """Bytes of a loaded model's weights: what its backend reports holding resident
    (packed copies, int4 blocks as they are); for a backend that reports nothing,
    the size of its weight files."""
    return int(info.weight_bytes) if info.weight_bytes > 0 else estimate_weight_bytes(path)


def estimate_weight_bytes(path: Path) -> int:
    """A model's size before it is loaded: its file, or the files of its directory and of the
    directories in it (at most :data:`MAX_SCANNED` entries: a model is not a file system).

    Whatever the format: the weights dominate any model's files, and knowing
    which files hold them is the format plugin's business, not the server's.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total, seen = 0, 0
    for directory in (path, *(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())):
        for entry in directory.iterdir():
            seen += 1
            if seen > MAX_SCANNED:
                return total
            if entry.is_file():
                total += entry.stat().st_size
    return total


def remove_staging_leftovers(directories: Sequence[Path]) -> None:
    """Remove what killed imports and exports left in the model directories, before anything loads.

    Only the staging copies of writers that no longer run (:func:`agentd.staging.remove_stale`),
    and an old bundle a killed ``--force`` run had set aside goes back in place, so the model
    it was is served again. The directories themselves are scanned, not their subdirectories.
    """
    from agentd.staging import remove_stale

    for directory in directories:
        remove_stale(Path(directory).expanduser())


def _inspect_model_path(path: Path, allowed: Sequence[Path] = ()) -> tuple[Path, int]:
    """``path`` resolved and its estimated weight bytes; a clear error when it cannot be a model.

    With ``allowed`` directories, a path outside them (symlinks resolved) is refused before
    anything else is said about it: whether it exists is not the caller's to learn.
    """
    if allowed:
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(os.path.realpath(root)) for root in allowed):
            raise PermissionDenied(f"path: {path} is outside the directories models are loaded from (model_dirs)")
    try:
        if not path.exists():
            raise NotFound(f"path: {path} does not exist")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise FailedPrecondition(f"path: {path} is not readable by the daemon")
        return path.resolve(), estimate_weight_bytes(path)
    except OSError as exc:  # a directory that cannot be listed, a dangling link, ...
        raise FailedPrecondition(f"path: cannot read {path} ({exc.strerror or exc})") from None


def _description(source: ModelSource, model: "Model") -> str:
    if source.description is not None:
        return source.description
    return str(model.checkpoint.config.get(DESCRIPTION_KEY, ""))


def _explicit(quant: str) -> str | None:
    """A LoadModel ``quant`` as :func:`agentd.load_model` takes it (``auto``: the checkpoint's own)."""
    return None if quant == "auto" else quant


def _quant_for(path: Path, settings: ServingSettings | None) -> str | None:
    """The encoding to load ``path`` in: the configured one when its backend computes with it, else its own."""
    quant = (settings or ServingSettings()).quant
    if quant is None:
        return None
    from agentd.model import backend_for

    _, spec = backend_for(path)
    return quant if quant in spec.quantizations else None
