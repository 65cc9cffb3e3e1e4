"""Tool retrieval: which tools (and which in-context examples) the model is shown for a request.

Each tool is embedded once as ``"name: description"`` with the daemon's
encoder (cached per tool set and encoder); the request is embedded per call.
The top ``k`` tools by cosine similarity are shown, plus every tool the
request names outright (``search_flights`` or "search flights"). A small
model reads a shorter prompt, and the grammar only spells the shown tools.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from agentd.aio_client import AsyncClient
    from agentd.tools import ToolSpec

#: Tools shown per request.
TOP_K = 6
#: Embedding tables kept (tool sets x encoders).
CACHE_SIZE = 16


def tool_text(tool: "ToolSpec") -> str:
    return f"{tool.name.replace('_', ' ')}: {tool.description}"


@dataclass(frozen=True)
class Retrieved:
    """Tools chosen for one request, best first, and the request's embedding (for picking examples)."""

    tools: tuple["ToolSpec", ...]
    scores: dict[str, float]
    query: np.ndarray


class TextEmbeddings:
    """Embeddings of fixed texts through the daemon, computed once per (texts, encoder)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str | None, tuple[str, ...]], np.ndarray] = {}
        self._lock = asyncio.Lock()

    async def get(self, client: "AsyncClient", texts: Sequence[str], model: str | None) -> np.ndarray:
        key = (model, tuple(texts))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        async with self._lock:
            if key not in self._cache:
                vectors = await client.embed(list(texts), model=model) if texts else np.zeros((0, 1), np.float32)
                while len(self._cache) >= CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = _normalised(vectors)
            return self._cache[key]


class ToolRetriever:
    def __init__(self, k: int = TOP_K, embeddings: TextEmbeddings | None = None):
        self.k = k
        self.embeddings = embeddings or TextEmbeddings()

    async def retrieve(
        self, client: "AsyncClient", request: str, tools: Sequence["ToolSpec"], *, model: str | None = None
    ) -> Retrieved:
        table = await self.embeddings.get(client, [tool_text(t) for t in tools], model)
        query = _normalised(await client.embed([request], model=model))[0]
        return select(request, tools, table, query, self.k)


def select(request: str, tools: Sequence["ToolSpec"], table: np.ndarray, query: np.ndarray, k: int) -> Retrieved:
    """The top ``k`` of ``tools`` by cosine (``table`` rows against ``query``) plus those ``request`` names."""
    scores = table @ query if len(tools) else np.zeros(0)
    order = list(np.argsort(-scores, kind="stable"))
    chosen = order[:k]
    for index in order[k:]:
        if names_tool(request, tools[index].name):
            chosen.append(index)
    picked = tuple(tools[i] for i in chosen)
    return Retrieved(picked, {tools[i].name: float(scores[i]) for i in range(len(tools))}, query)


def names_tool(request: str, name: str) -> bool:
    """Whether ``request`` names the tool outright (``web_search`` or "web search"), any case."""
    pattern = r"\b" + r"[ _]".join(map(re.escape, name.split("_"))) + r"\b"
    return re.search(pattern, request, re.IGNORECASE) is not None


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
