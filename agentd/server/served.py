"""The models a daemon serves, by name, each with the lock that serialises its work."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

from agentd.errors import AgentdError, InvalidArgument, NotFound

if TYPE_CHECKING:
    from agentd.model import Model

log = logging.getLogger(__name__)

#: ``config.json`` key holding a model's one-line description (see agentd.default_models).
DESCRIPTION_KEY = "agentd_description"


@dataclass(frozen=True)
class ModelSource:
    """A model to serve: a name and a checkpoint/bundle directory."""

    name: str
    path: Path
    #: Shown by GetModelInfo; None reads ``agentd_description`` from config.json.
    description: str | None = None


@dataclass
class ServedModel:
    """A loaded model under its served name."""

    name: str
    model: "Model"
    description: str
    #: One request at a time runs model work (continuous batching comes later).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def kind(self) -> Literal["decoder", "encoder"]:
        return self.model.info.kind


class ModelTable:
    """Served models in serving order; lookups raise the errors clients should see."""

    def __init__(self, models: Sequence[ServedModel]):
        self._models: dict[str, ServedModel] = {}
        for served in models:
            if served.name in self._models:
                raise InvalidArgument("--model", f"name {served.name!r} is given twice")
            self._models[served.name] = served

    @classmethod
    def load(cls, sources: Sequence[ModelSource]) -> "ModelTable":
        """Load every source (slow: weights are read here, before serving starts)."""
        from agentd.model import load_model

        models = []
        for source in sources:
            model = load_model(source.path)
            description = source.description
            if description is None:
                description = str(model.checkpoint.config.get(DESCRIPTION_KEY, ""))
            models.append(ServedModel(source.name, model, description))
            log.info("loaded %s from %s", source.name, model.path)
        return cls(models)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str, *, field_name: str = "model") -> ServedModel:
        """The model called ``name``; INVALID_ARGUMENT if empty, NOT_FOUND if unknown."""
        if not name:
            raise InvalidArgument(field_name, "is required (see `agentd models list`)")
        served = self._models.get(name)
        if served is None:
            known = ", ".join(self._models) or "none"
            raise NotFound(f"model {name!r} is not served (served: {known})")
        return served

    def decoder(self, name: str) -> ServedModel:
        """A model that can Generate."""
        served = self.get(name)
        if served.kind != "decoder":
            raise InvalidArgument("model", f"{name!r} is an {served.kind}: it cannot generate (use Embed)")
        return served

    def encoder(self, name: str) -> ServedModel:
        """A model that can Embed."""
        served = self.get(name)
        if served.kind != "encoder":
            raise InvalidArgument("model", f"{name!r} is a {served.kind}: it cannot embed (use Generate)")
        return served


def require_models(table: ModelTable) -> ModelTable:
    """Refuse to start a daemon that would serve nothing."""
    if not len(table):
        raise AgentdError("no models to serve (pass --model NAME=PATH or drop --no-defaults)")
    return table
