"""A bundle whose manifest lies about its graph is refused at load, naming the field (issue 12).

``manifest.json`` records every other file's sha256, but nothing covers the
manifest itself: a corrupted ``onnx`` section loaded and failed at the first
request inside onnxruntime (or, for ``context_length``, silently cut every
prompt). The graph and ``config.json`` are hashed, so the load compares the
section against them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_fixtures import export, onnx_backend  # noqa: E402
from _llama_fixtures import save_variant  # noqa: E402

from agentd.errors import ModelLoadError  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx-manifest")
    save_variant("llama", root / "src")
    return export(root / "src", root / "bundle")


CORRUPTIONS = {
    "num_hidden_layers": (7, r"'onnx\.num_hidden_layers' is 7 but the graph has 2 layers"),
    "vocab_size": (9, r"'onnx\.vocab_size' is 9 but the graph's logits has 256"),
    "num_key_value_heads": (1, r"'onnx\.num_key_value_heads' is 1 but layer 0's key cache has 2"),
    "context_length": (5, r"'onnx\.context_length' is 5 but config\.json's max_position_embeddings is 512"),
}


def test_the_untouched_bundle_loads(bundle: Path) -> None:
    assert onnx_backend(bundle) is not None


@pytest.mark.parametrize("key", CORRUPTIONS)
def test_a_manifest_section_that_contradicts_the_graph_is_refused(bundle: Path, tmp_path: Path, key: str) -> None:
    value, problem = CORRUPTIONS[key]
    corrupted = shutil.copytree(bundle, tmp_path / "bundle")
    manifest = json.loads((corrupted / "manifest.json").read_text())
    manifest["onnx"][key] = value
    (corrupted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=problem) as caught:
        onnx_backend(corrupted)
    assert str(caught.value).startswith(f"{corrupted / 'manifest.json'}: ") and "corrupted?" in str(caught.value)
