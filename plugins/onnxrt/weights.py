"""How many bytes of weights an exported graph holds once onnxruntime has loaded it."""

from __future__ import annotations

from typing import Any

from agentd.checkpoint import Checkpoint


def graph_weight_bytes(checkpoint: Checkpoint, section: dict[str, Any]) -> int:
    """Bytes of the graph's initialisers as stored: the graph file plus its external data files.

    The exporter keeps every large initialiser in external data and small ones
    inline in the graph, so this is what the session reads in, at the size the
    bundle's quantisation gave it (int4 blocks and their scales, not
    parameters x 4). A quantised bundle's tied int4 embedding is counted once,
    as it is stored once.
    """
    graph = section["graphs"]["model"]
    names = [graph["file"], *(graph.get("external_data") or [])]
    return sum(checkpoint.file(name).stat().st_size for name in names)  # type: ignore[union-attr]
