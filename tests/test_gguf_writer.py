"""agentd's GGUF writer: the files it writes are the source model, read by three independent readers.

A random transformers model (Llama, Qwen2, Mamba) is saved as a Hugging Face
directory and written as GGUF by :func:`agentd.plugins.gguf.writer.write_checkpoint`.
The source model's logits are the reference; the same logits must come from
transformers' own GGUF loader, from llama.cpp (llama-cpp-python) running the
file, and from agentd's GGUF checkpoint (``load_model``). llama.cpp's
quantiser (:func:`~agentd.plugins.gguf.writer.quantize`) then makes a Q8_0
file from it, which must still load everywhere and stay close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agentd.errors import UnsupportedArchitecture
from agentd.formats import open_checkpoint
from agentd.model import load_model
from agentd.plugins.gguf import writer

IDS = [3, 17, 99, 5, 42, 250, 7, 1, 64, 128]


def _source(kind: str, directory: Path) -> torch.nn.Module:
    """A random-weight model of ``kind``, saved to ``directory`` (float32 safetensors)."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "mamba":
        config = tf.MambaConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2, state_size=8, conv_kernel=4,
                                expand=2, tie_word_embeddings=True)
        model = tf.MambaForCausalLM(config)
    else:
        common = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=kind == "llama")
        model = (tf.LlamaForCausalLM(tf.LlamaConfig(**common)) if kind == "llama"
                 else tf.Qwen2ForCausalLM(tf.Qwen2Config(**common)))
    with torch.no_grad():  # norms away from 1 and non-zero biases, so a misplaced tensor shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.eval().save_pretrained(directory, safe_serialization=True)
    return model


def _logits(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float().numpy()


def _llama_cpp_logits(path: Path) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    llm.eval(IDS)
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mamba"])
def test_written_f32_file_gives_the_source_logits(kind: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    source = _source(kind, tmp_path / "hf")
    reference = _logits(source)
    path = writer.write_checkpoint(open_checkpoint(tmp_path / "hf"), tmp_path / f"{kind}.gguf")
    assert not list(tmp_path.glob(".*.partial"))

    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    np.testing.assert_allclose(_logits(loaded), reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(load_model(path).logits(IDS), reference, rtol=1e-4, atol=1e-4)
    # llama.cpp computes in its own kernels (f32 here): close, not bit-equal.
    np.testing.assert_allclose(_llama_cpp_logits(path), reference, rtol=1e-3, atol=2e-3)


def test_llama_cpp_quantiser_output_loads_and_stays_close(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM

    source = _source("llama", tmp_path / "hf")
    reference = _logits(source)
    f32 = writer.write_checkpoint(open_checkpoint(tmp_path / "hf"), tmp_path / "model.f32.gguf")
    q8 = writer.quantize(f32, tmp_path / "model.q8_0.gguf", "q8_0")
    checkpoint = open_checkpoint(q8)
    assert checkpoint.quantization == "Q8_0"
    assert q8.stat().st_size < f32.stat().st_size / 3

    ours = load_model(q8, quant="fp32").logits(IDS)  # transformers dequantises to float32
    theirs = _logits(AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=q8.name, dtype=torch.float32).eval())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)  # the same dequantised weights
    assert not np.allclose(ours, reference, atol=1e-6)  # it really was quantised ...
    assert np.abs(ours - reference).max() < 0.05 * np.abs(reference).max()  # ... at 8 bits
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.8


def test_quantised_types_are_written_and_vectors_stay_f32(tmp_path: Path) -> None:
    _source("llama", tmp_path / "hf")
    path = writer.write_checkpoint(open_checkpoint(tmp_path / "hf"), tmp_path / "q4.gguf", types=writer.uniform("Q4_0"))
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # the tied head is written once, as token_embd


def test_unsupported_architecture_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitecture, match="BertModel"):
        writer.write_gguf(tmp_path / "x.gguf", {"architectures": ["BertModel"]}, [])
    assert not list(tmp_path.iterdir())
