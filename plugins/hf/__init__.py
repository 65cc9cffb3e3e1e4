"""Model directories in the Hugging Face layout: plain checkpoints and agentd bundles.

A directory with ``manifest.json`` is an agentd bundle: its manifest is
verified (every file's size and sha256) before anything else reads it. An
exported bundle (one whose manifest has an ``onnx`` section) is left to the
ONNX runtime plugin. Any other directory with a ``config.json`` is a
Hugging Face checkpoint. Registered through the ``agentd`` entry-point group
like any third-party format.
"""

from __future__ import annotations

from pathlib import Path

from agentd.checkpoint import Checkpoint
from agentd.directory_checkpoint import DirectoryCheckpoint
from agentd.hookspecs import hookimpl
from agentd.manifest import MANIFEST_FILE, read_manifest, verify_manifest


@hookimpl(trylast=True)
def open_checkpoint(path: Path) -> Checkpoint | None:
    if not path.is_dir():
        return None
    if (path / MANIFEST_FILE).exists():
        if "onnx" in read_manifest(path):
            return None  # an exported bundle: the onnxrt plugin serves it
        return DirectoryCheckpoint(path, format="bundle", manifest=verify_manifest(path))
    # A directory without config.json is still claimed: the error then names the missing file.
    return DirectoryCheckpoint(path, format="hf")
