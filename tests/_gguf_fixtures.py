"""Small GGUF files written the way llama.cpp's converter writes them, from random transformers models.

The tensor names come from gguf-py's own table (``gguf.get_tensor_name_map``),
the layout changes follow ``convert_hf_to_gguf.py`` (Llama's Q/K RoPE
permutation, Mamba's ``-exp(A_log)`` and squeezed conv), and the quantisation
is ``gguf.quants.quantize``. gguf-py has no K-quant quantiser, so K-quant
tensors are random blocks with scales chosen for weights of roughly the
fixtures' spread: the file *is* the model, and transformers loading the same
file is the reference. Import this module from test files; it is not a conftest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

#: Text used for tokeniser comparisons: unicode, digits, whitespace runs, newlines, tabs.
TOKENIZER_TEXT = "Hello  world!\n\n   123 4567 89012 naïve café — 東京 🤖\ttabs\t\tand   spaces  \n end"

SPM_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. 123 4567 89012.",
    "Hello world! This is a small SentencePiece style vocabulary for tests.",
    "naïve café résumé: unicode words, numbers 2024 and whitespace   runs.",
    "Once upon a time there was a tiny model that told stories about foxes and dogs.",
] * 20
SPM_SPECIALS = ["<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# -- tokenizers ------------------------------------------------------------------------------


def spm_vocabulary(vocab_size: int = 384) -> tuple[list[str], list[float], list[int]]:
    """A TinyLlama-style SentencePiece vocabulary: (tokens, scores, token types).

    ``<unk> <s> </s>``, the 256 byte-fallback tokens ``<0x00>``.., then BPE
    pieces learned by ``tokenizers`` with scores falling in merge order (what
    a SentencePiece ``.model`` stores; GGUF files of it carry no merges).
    """
    from tokenizers import SentencePieceBPETokenizer

    trainer = SentencePieceBPETokenizer(add_prefix_space=True)
    trainer.train_from_iterator(SPM_TRAINING_TEXT, vocab_size=vocab_size - 259, min_frequency=1, show_progress=False)
    learned = sorted(trainer.get_vocab().items(), key=lambda item: item[1])
    tokens = SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
    for rank, (piece, _) in enumerate(learned):
        if piece in tokens:
            continue
        tokens.append(piece)
        scores.append(-float(rank))
        types.append(1)  # NORMAL
    return tokens, scores, types


def add_spm_tokenizer(writer: Any, tokens: list[str], scores: list[float], types: list[int]) -> None:
    """TinyLlama's tokenizer keys: model "llama", scores, no merges, BOS added, a chat template."""
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)


# -- tensors ---------------------------------------------------------------------------------

def permute_rope_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: per head, HF "halves" rows -> GGML interleaved pairs."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def random_k_blocks(qtype: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random Q4_K / Q5_K / Q6_K data of weight ``shape`` with weights of spread ~0.1."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    if qtype == gguf.GGMLQuantizationType.Q6_K:  # ... scales int8 (192:208), d fp16 at 208
        data[..., 208:210] = np.full((rows, cols // block, 1), 5e-5, dtype=np.float16).view(np.uint8)
    else:  # Q4_K / Q5_K: d, dmin fp16 at 0 and 2
        data[..., 0:2] = np.full((rows, cols // block, 1), 2e-4, dtype=np.float16).view(np.uint8)
        data[..., 2:4] = np.full((rows, cols // block, 1), 1.5e-3, dtype=np.float16).view(np.uint8)
    return data.reshape(rows, cols // block * size)


def encode(array: np.ndarray, type_name: str, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """``array`` (float32) in ggml type ``type_name``: (data, raw_dtype) for ``GGUFWriter.add_tensor``."""
    import gguf
    from gguf.quants import quantize

    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name == "F32":
        return array.astype(np.float32), None
    if type_name == "F16":
        return array.astype(np.float16), None
    if type_name in ("Q4_K", "Q5_K", "Q6_K"):
        return random_k_blocks(qtype, array.shape, rng), qtype
    return quantize(array.astype(np.float32), qtype), qtype


def _fits(type_name: str, array: np.ndarray) -> bool:
    """llama.cpp keeps vectors, and rows not a whole number of blocks, in F32 (e.g. Mamba's conv)."""
    import gguf

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]
    return array.ndim >= 2 and array.shape[-1] % block == 0


def q4_k_m(gguf_name: str, array: np.ndarray) -> str:
    """Ollama's Q4_K_M mix: Q6_K for attn_v, ffn_down and the output head, Q4_K elsewhere, F32 vectors."""
    if not _fits("Q4_K", array):
        return "F32"
    if any(part in gguf_name for part in ("attn_v", "ffn_down", "output.weight")):
        return "Q6_K"
    return "Q4_K"


def uniform(type_name: str) -> Callable[[str, np.ndarray], str]:
    """Every matrix in ``type_name``, vectors (norms, biases) in F32 as llama.cpp keeps them."""
    return lambda name, array: type_name if _fits(type_name, array) else "F32"


# -- whole files -----------------------------------------------------------------------------


def llama3_divisors(head_dim: int, theta: float, scaling: dict[str, float]) -> np.ndarray:
    """``rope_freqs.weight`` as llama.cpp's converter computes it from a llama3 ``rope_scaling``."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = original / low, original / high
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / theta ** (i / head_dim))
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def write_gguf(
    path: Path,
    model: torch.nn.Module,
    types: Callable[[str, np.ndarray], str],
    *,
    spm: tuple[list[str], list[float], list[int]] | None = None,
    seed: int = 0,
) -> Path:
    """Write transformers ``model`` (LlamaForCausalLM, Qwen2ForCausalLM or MambaForCausalLM) as a GGUF file."""
    import gguf

    config = model.config
    arch_name = {"llama": "llama", "qwen2": "qwen2", "mamba": "mamba"}[config.model_type]
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "mamba": gguf.MODEL_ARCH.MAMBA}[arch_name]
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_embedding_length(config.hidden_size)
    writer.add_context_length(config.max_position_embeddings if arch_name != "mamba" else 2048)
    writer.add_vocab_size(config.vocab_size)
    if arch_name == "mamba":
        writer.add_ssm_conv_kernel(config.conv_kernel)
        writer.add_ssm_inner_size(config.intermediate_size)
        writer.add_ssm_state_size(config.state_size)
        writer.add_ssm_time_step_rank(config.time_step_rank)
        writer.add_layer_norm_rms_eps(config.layer_norm_epsilon)
    else:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        rope = getattr(config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", 10000.0)
        writer.add_rope_freq_base(theta)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // config.num_attention_heads:
            writer.add_key_length(head_dim)  # as llama.cpp does for an explicit head_dim
            writer.add_value_length(head_dim)
        if rope.get("rope_type") == "llama3":
            writer.add_tensor("rope_freqs.weight", llama3_divisors(head_dim, theta, rope))
    if spm is not None:
        add_spm_tokenizer(writer, *spm)

    rng = np.random.default_rng(seed)
    for hf_name, tensor in model.state_dict().items():
        if config.tie_word_embeddings and hf_name == "lm_head.weight":
            continue  # llama.cpp writes a tied head once, as token_embd
        array = tensor.detach().float().numpy().copy()
        base, _, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):
            base, suffix = hf_name, ""
        gguf_base = names.get_name(base)
        assert gguf_base is not None, hf_name
        gguf_name = gguf_base + (f".{suffix}" if suffix else "")
        if arch_name == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
            heads = config.num_attention_heads if ".attn_q." in gguf_name else config.num_key_value_heads
            array = permute_rope_rows(array, heads)
        if gguf_name.endswith("ssm_a"):
            array = -np.exp(array)
        if gguf_name.endswith("ssm_conv1d.weight"):
            array = array.reshape(array.shape[0], array.shape[-1])
        data, raw_dtype = encode(array, types(gguf_name, array), rng)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
