"""A broken or unsupported GGUF is one ModelLoadError naming the file (and the tensor), never a traceback.

Checked through the Python API and through ``agentd import`` as a user runs
it: one ``agentd: error: ...`` line, a non-zero exit, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import agentd
from agentd.errors import ModelLoadError

from _bundle_fixtures import run_agentd
from _gguf_fixtures import spm_vocabulary, uniform, write_gguf
from _llama_fixtures import make_hf_model


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spm = spm_vocabulary()
    model = make_hf_model("llama", vocab_size=len(spm[0]))
    return write_gguf(tmp_path_factory.mktemp("gguf") / "good.gguf", model, uniform("Q8_0"), spm=spm)


def _unsupported_type(tmp: Path) -> Path:
    """A llama file whose ``blk.0.attn_q.weight`` is IQ2_XXS (no dequantiser in agentd)."""
    import gguf

    path = tmp / "iq2.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 256), dtype=np.float32))
    qtype = gguf.GGMLQuantizationType.IQ2_XXS
    raw = np.zeros(gguf.quants.quant_shape_to_byte_shape((256, 256), qtype), dtype=np.uint8)
    writer.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _unsupported_architecture(tmp: Path) -> Path:
    import gguf

    path = tmp / "falcon.gguf"
    writer = gguf.GGUFWriter(str(path), "falcon")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _truncated(tmp: Path, good: Path) -> Path:
    path = tmp / "truncated.gguf"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    return path


def _wrapping_dimensions(tmp: Path, good: Path) -> Path:
    """``blk.0.attn_q.weight`` declared 2**32 x 2**32: its element count wraps to 0 in int64
    (issue 12), which passed the size check and failed later with a reshape error."""
    import struct

    data = bytearray(good.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    assert struct.unpack_from("<I", data, at)[0] == 2  # n_dims; the dimensions follow
    struct.pack_into("<QQ", data, at + 4, 2**32, 2**32)
    path = tmp / "wrapping.gguf"
    path.write_bytes(data)
    return path


def _merges_out_of_vocabulary(tmp: Path) -> Path:
    """A merge naming tokens the vocabulary lacks: tokenizers raised a bare Exception (a traceback)."""
    from _gguf_fixtures import add_spm_tokenizer, encoder
    from agentd.plugins.gguf import writer

    spm = spm_vocabulary()
    model = make_hf_model("llama", vocab_size=len(spm[0]))
    config = {**model.config.to_dict(), "architectures": [type(model).__name__]}
    tensors = ((name, tensor.detach().float().numpy()) for name, tensor in model.state_dict().items())

    def metadata(gguf_writer) -> None:
        add_spm_tokenizer(gguf_writer, *spm)
        gguf_writer.add_token_merges(["no-such-token neither"])

    return writer.write_gguf(tmp / "merges.gguf", config, tensors, types=uniform("Q8_0"), metadata=metadata, encoder=encoder(np.random.default_rng(0)))


def _last_tensor(path: Path) -> str:
    import gguf

    return gguf.GGUFReader(str(path)).tensors[-1].name


@pytest.fixture
def broken(request, tmp_path: Path, good_gguf: Path) -> tuple[Path, str]:
    """(file, regex the message after '<file>: ' must match)."""
    kind = request.param
    if kind == "type":
        return _unsupported_type(tmp_path), r".*tensor 'blk\.0\.attn_q\.weight' has type IQ2_XXS.*"
    if kind == "architecture":
        return _unsupported_architecture(tmp_path), r".*architecture 'falcon'.*not supported.*"
    if kind == "truncated":
        return _truncated(tmp_path, good_gguf), rf".*tensor '{_last_tensor(good_gguf)}'.*truncated.*"
    if kind == "wrapping":
        return _wrapping_dimensions(tmp_path, good_gguf), r".*tensor 'blk\.0\.attn_q\.weight' data ends at byte \d+ but the file has \d+ bytes \(truncated file\)"
    if kind == "merges":
        return _merges_out_of_vocabulary(tmp_path), r"tokenizer metadata cannot be built into a tokenizer \(.*Token `no-such-token` out of vocabulary.*\)"
    path = tmp_path / "header.gguf"  # cut inside the metadata
    path.write_bytes(good_gguf.read_bytes()[:300])
    return path, r".*corrupt or truncated GGUF header.*"


KINDS = ["type", "architecture", "truncated", "header", "wrapping", "merges"]


@pytest.mark.parametrize("broken", KINDS, indirect=True)
def test_load_model_raises_one_error_naming_file_and_tensor(broken: tuple[Path, str]) -> None:
    path, problem = broken
    with pytest.raises(ModelLoadError) as info:
        agentd.load_model(path)
    assert info.value.path == str(path.resolve())
    message = str(info.value)
    assert message.startswith(f"{path.resolve()}: ")
    assert "\n" not in message
    assert __import__("re").fullmatch(problem, message.removeprefix(f"{path.resolve()}: ")), message


@pytest.mark.parametrize("broken", KINDS, indirect=True)
def test_cli_import_prints_one_line_and_writes_nothing(broken: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = broken
    out = tmp_path / "out" / "bundle"
    result = run_agentd("import", str(path), str(out))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentd: error: ") and str(path.resolve()) in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_a_file_that_is_not_gguf_is_not_claimed(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGML" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="format plugins: .*gguf"):
        agentd.load_model(path)
