"""Every way a checkpoint or bundle can be broken gives one clear error naming the file.

Each case is checked three ways: ``agentd import`` as a user runs it (one
``agentd: error: <file>: <problem>`` line, non-zero exit, no traceback, nothing
written), the Python API (``import_checkpoint`` and ``agentd.load_model`` raise
ModelLoadError with the same path and problem), and ``load_model`` in a fresh
interpreter that loads agentd's plugins from their entry points.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import agentd
from agentd.bundle import import_checkpoint
from agentd.errors import ModelLoadError, NotFound, UnsupportedArchitecture

from _bundle_fixtures import (  # noqa: F401 - fixtures
    copy_model,
    decoder_backend_available,
    edit_json,
    run_agentd,
    tiny_llama,
    tiny_llama_sharded,
)


@dataclass(frozen=True)
class Case:
    """A broken model directory and the error it must produce."""

    model: Path
    #: The file the message must name.
    culprit: Path
    #: Regex the problem (the message after ``<culprit>: ``) must match.
    problem: str
    #: False when ``load_model`` only meets the problem inside the backend (it reads the weights).
    before_backend: bool = True


def _checkpoint(tmp: Path, source: Path) -> Path:
    return copy_model(source, tmp / "model")


def _bundle(tmp: Path, source: Path) -> Path:
    return import_checkpoint(source, tmp / "bundle")


def _edit_manifest(bundle: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def unknown_architecture(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    edit_json(model / "config.json", architectures=["FooForCausalLM"])
    return Case(model, model / "config.json", r"unknown architecture 'FooForCausalLM' \(registered backends serve: .*LlamaForCausalLM")


def missing_config(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    (model / "config.json").unlink()
    return Case(model, model / "config.json", "required file is missing$")


def invalid_json(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    return Case(model, model / "config.json", r"invalid JSON \(")


def missing_weights(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    (model / "model.safetensors").unlink()
    return Case(model, model / "model.safetensors", "required file is missing", before_backend=False)


def missing_shard(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, sharded)
    shard = sorted(model.glob("model-*.safetensors"))[2]
    shard.unlink()
    return Case(model, shard, "required file is missing$", before_backend=False)


def truncated_weights(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return Case(model, weights, r"truncated safetensors file \(header needs \d+ bytes; file has \d+\)", before_backend=False)


def corrupt_header(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = os.urandom(16) + b"\xff" * 16  # length prefix intact, JSON garbled
    weights.write_bytes(bytes(data))
    return Case(model, weights, r"corrupt safetensors header \(not valid JSON\)", before_backend=False)


def garbage_weights(tmp: Path, hf: Path, sharded: Path) -> Case:
    model = _checkpoint(tmp, hf)
    weights = model / "model.safetensors"
    weights.write_bytes(b"\xde\xad\xbe\xef" * 1000)
    return Case(model, weights, r"corrupt safetensors header \(declares \d+ header bytes; file has 4000\)", before_backend=False)


def bundle_hash_mismatch(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: same size, different content
    weights.write_bytes(bytes(data))
    return Case(bundle, weights, r"sha256 does not match manifest.json \(corrupted or modified after import\)")


def bundle_truncated_file(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    tokenizer = bundle / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:100])
    return Case(bundle, tokenizer, r"size is 100 bytes, manifest.json says \d+ \(truncated or modified\)")


def manifest_parent_path(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    (tmp / "x").write_text("outside")
    _edit_manifest(bundle, lambda m: m["files"].update({"../x": {"sha256": "0" * 64, "size": 7}}))
    return Case(bundle, bundle / "../x", "listed in manifest.json but outside the bundle$")


def manifest_absolute_path(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    outside = tmp / "secret.txt"
    outside.write_text("secret")
    _edit_manifest(bundle, lambda m: m["files"].update({str(outside): {"sha256": "0" * 64, "size": 6}}))
    return Case(bundle, outside, "listed in manifest.json but outside the bundle$")


def symlink_escaping(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    # Same bytes outside the bundle, so only the escape itself can be the error.
    (tmp / "outside").mkdir()
    outside = tmp / "outside" / "tokenizer.json"
    shutil.move(bundle / "tokenizer.json", outside)
    (bundle / "tokenizer.json").symlink_to(outside)
    return Case(bundle, bundle / "tokenizer.json", "symlink points outside the bundle$")


def manifest_newer_version(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    _edit_manifest(bundle, lambda m: m.update(format_version=2))
    return Case(bundle, bundle / "manifest.json", r"bundle format_version 2 is newer than this agentd supports \(1\); upgrade agentd")


def manifest_unknown_format(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    _edit_manifest(bundle, lambda m: m.update(format="other.bundle"))
    return Case(bundle, bundle / "manifest.json", r"unknown bundle format 'other.bundle' \(expected 'agentd.bundle'\)")


def manifest_invalid_json(tmp: Path, hf: Path, sharded: Path) -> Case:
    bundle = _bundle(tmp, hf)
    (bundle / "manifest.json").write_text("{")
    return Case(bundle, bundle / "manifest.json", r"invalid JSON \(")


CASES: dict[str, Callable[[Path, Path, Path], Case]] = {
    builder.__name__: builder
    for builder in (
        unknown_architecture, missing_config, invalid_json, missing_weights, missing_shard,
        truncated_weights, corrupt_header, garbage_weights, bundle_hash_mismatch, bundle_truncated_file,
        manifest_parent_path, manifest_absolute_path, symlink_escaping, manifest_newer_version,
        manifest_unknown_format, manifest_invalid_json,
    )
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path, tiny_llama: Path, tiny_llama_sharded: Path) -> Case:
    return CASES[request.param](tmp_path.resolve(), tiny_llama, tiny_llama_sharded)


def _assert_names(message: str, case: Case) -> None:
    prefix = f"{case.culprit}: "
    assert message.startswith(prefix), f"{message!r} should start with {prefix!r}"
    assert re.search(case.problem, message[len(prefix):]), f"{message!r} should match {case.problem!r}"


def test_cli_import_prints_one_line(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_agentd("import", str(case.model), str(out))
    assert result.returncode == ModelLoadError.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentd: error: "), result.stderr
    _assert_names(lines[0].removeprefix("agentd: error: "), case)
    assert result.stdout == ""
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_import_api_raises_model_load_error(case: Case, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        import_checkpoint(case.model, tmp_path / "out")
    _assert_names(str(info.value), case)
    assert info.value.path == str(case.culprit)
    assert not (tmp_path / "out").exists()


def test_load_model_raises_model_load_error(case: Case) -> None:
    if not case.before_backend and not decoder_backend_available():
        pytest.skip("this failure surfaces when the Llama backend reads the weights; not written yet")
    with pytest.raises(ModelLoadError) as info:
        agentd.load_model(case.model)
    _assert_names(str(info.value), case)


def test_unknown_architecture_is_its_own_class(tmp_path: Path, tiny_llama: Path) -> None:
    model = unknown_architecture(tmp_path, tiny_llama, tiny_llama).model
    with pytest.raises(UnsupportedArchitecture):
        agentd.load_model(model)


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such model file or directory"):
        agentd.load_model(tmp_path / "nope")
    result = run_agentd("import", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert result.returncode == NotFound.exit_code
    assert result.stderr == f"agentd: error: {tmp_path / 'nope'}: no such model file or directory\n"


def test_load_model_in_fresh_interpreter(tmp_path: Path, tiny_llama: Path, tiny_llama_sharded: Path) -> None:
    """Plugins come from entry points in a new process; every case is still an AgentdError."""
    cases: dict[str, Case] = {}
    for name, build in CASES.items():
        (tmp_path / name).mkdir()
        cases[name] = build(tmp_path.resolve() / name, tiny_llama, tiny_llama_sharded)
    code = (
        "import json, sys\n"
        "import agentd\n"
        "from agentd.errors import AgentdError\n"
        "results = {}\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        agentd.load_model(path)\n"
        "        results[name] = 'loaded'\n"
        "    except AgentdError as exc:\n"
        "        results[name] = str(exc)\n"
        "print(json.dumps(results))\n"
    )
    selected = {name: str(c.model) for name, c in cases.items() if c.before_backend or decoder_backend_available()}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(selected)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    messages = json.loads(result.stdout)
    assert messages.keys() == selected.keys()
    for name, message in messages.items():
        _assert_names(message, cases[name])
