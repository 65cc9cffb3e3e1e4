"""Small GGUF files written the way llama.cpp's converter writes them, from random transformers models.

Names, layouts and metadata are agentd's GGUF writer's
(:mod:`agentd.plugins.gguf.writer`, which follows ``convert_hf_to_gguf.py``);
the quantisation is ``gguf.quants.quantize``. gguf-py has no K-quant quantiser, so K-quant
tensors are random blocks with scales chosen for weights of roughly the
fixtures' spread: the file *is* the model, and transformers loading the same
file is the reference. Import this module from test files; it is not a conftest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from agentd.plugins.gguf import writer

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


def encoder(rng: np.random.Generator) -> Callable[[np.ndarray, str], tuple[np.ndarray, Any]]:
    """The writer's encoder, with random blocks for the K-quants gguf-py cannot quantise to."""
    import gguf

    def encode(array: np.ndarray, type_name: str) -> tuple[np.ndarray, Any]:
        if type_name in ("Q4_K", "Q5_K", "Q6_K"):
            qtype = gguf.GGMLQuantizationType[type_name]
            return random_k_blocks(qtype, array.shape, rng), qtype
        return writer.encode(array, type_name)

    return encode


def q4_k_m(gguf_name: str, array: np.ndarray) -> str:
    """Ollama's Q4_K_M mix: Q6_K for attn_v, ffn_down and the output head, Q4_K elsewhere, F32 vectors."""
    if array.ndim < 2 or not writer.block_fits("Q4_K", array):
        return "F32"
    if any(part in gguf_name for part in ("attn_v", "ffn_down", "output.weight")):
        return "Q6_K"
    return "Q4_K"


#: Every matrix in one type, vectors in F32 (the plugin writer's rule).
uniform = writer.uniform


# -- whole files -----------------------------------------------------------------------------


def write_gguf(
    path: Path,
    model: torch.nn.Module,
    types: Callable[[str, np.ndarray], str],
    *,
    spm: tuple[list[str], list[float], list[int]] | None = None,
    seed: int = 0,
) -> Path:
    """Write transformers ``model`` (LlamaForCausalLM, Qwen2ForCausalLM or MambaForCausalLM) as a GGUF file
    with agentd's GGUF writer (:mod:`agentd.plugins.gguf.writer`), optionally with a SentencePiece tokenizer."""
    config = {**model.config.to_dict(), "architectures": [type(model).__name__]}  # set by save_pretrained otherwise
    if config["model_type"] == "mamba":
        config.setdefault("max_position_embeddings", 2048)
    tensors = ((name, tensor.detach().float().numpy()) for name, tensor in model.state_dict().items())
    metadata = (lambda w: add_spm_tokenizer(w, *spm)) if spm is not None else None
    return writer.write_gguf(path, config, tensors, types=types, metadata=metadata, encoder=encoder(np.random.default_rng(seed)))
