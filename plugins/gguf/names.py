"""GGUF tensor names and layouts -> Hugging Face ones, per architecture.

llama.cpp's converter (``convert_hf_to_gguf.py``) renames every tensor to its
``blk.N.*`` scheme and changes a few layouts on the way; this undoes both, so
a backend receives exactly the state dict the Hugging Face checkpoint had:

* ``llama``: the Q and K projections were permuted from Hugging Face's
  "rotate halves" RoPE layout to GGML's interleaved pairs; the inverse
  permutation puts each head's rows back.
* ``mamba``: ``A_log`` was stored as ``ssm_a = -exp(A_log)`` and the depthwise
  conv weight ``(d_inner, 1, k)`` squeezed to ``(d_inner, k)``.

``rope_freqs.weight`` is not a weight but Llama 3's RoPE scaling in tensor
form; :mod:`.rope` turns it back into ``rope_scaling``, so it is skipped here.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

#: Per architecture: GGUF name inside ``blk.N.`` (without ``.weight``/``.bias``) -> HF module path.
_DECODER_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_MAMBA_BLOCK = {
    "attn_norm": "norm",
    "ssm_in": "mixer.in_proj",
    "ssm_conv1d": "mixer.conv1d",
    "ssm_x": "mixer.x_proj",
    "ssm_dt": "mixer.dt_proj",
    "ssm_out": "mixer.out_proj",
    "ssm_a": "mixer.A_log",
    "ssm_d": "mixer.D",
}

#: Per architecture: (block prefix, block table, top-level GGUF name -> HF name).
_LAYOUTS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "llama": (
        "model.layers",
        _DECODER_BLOCK,
        {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"},
    ),
    "mamba": (
        "backbone.layers",
        _MAMBA_BLOCK,
        {"token_embd": "backbone.embeddings", "output_norm": "backbone.norm_f", "output": "lm_head"},
    ),
}
_LAYOUTS["qwen2"] = _LAYOUTS["llama"]

#: Architectures whose tensors this module can rename.
ARCHITECTURES = tuple(_LAYOUTS)

#: GGUF tensors that carry no Hugging Face weight (metadata in tensor form).
NOT_WEIGHTS = frozenset({"rope_freqs.weight"})

#: ``blk.N.part.weight``; llama.cpp writes Mamba's ``ssm_a`` / ``ssm_d`` without a suffix.
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)(?:\.(weight|bias))?")
_TOP_NAME = re.compile(r"(\w+)\.(weight|bias)")


def hf_name(architecture: str, gguf_name: str) -> str | None:
    """The Hugging Face name of GGUF tensor ``gguf_name``, or None if it has none.

    Parameters without a ``.weight`` suffix (``A_log``, ``D``) take the
    module path alone, as in the Hugging Face state dict.
    """
    prefix, block, top = _LAYOUTS[architecture]
    if match := _BLOCK_NAME.fullmatch(gguf_name):
        layer, part, kind = match.groups()
        module = block.get(part)
        if module is None:
            return None
        name = f"{prefix}.{layer}.{module}"
        if module.endswith(("A_log", ".D")):
            return name if kind in (None, "weight") else None
        return f"{name}.{kind}" if kind else None
    if match := _TOP_NAME.fullmatch(gguf_name):
        module = top.get(match.group(1))
        return f"{module}.{match.group(2)}" if module else None
    return None


def gguf_name(architecture: str, hf: str) -> str | None:
    """The GGUF name of Hugging Face tensor ``hf`` (the inverse of :func:`hf_name`), or None if it has none."""
    prefix, block, top = _LAYOUTS[architecture]
    if hf.startswith(prefix + "."):
        layer, _, rest = hf[len(prefix) + 1 :].partition(".")
        for part, module in block.items():
            if rest == module and module.endswith(("A_log", ".D")):
                return f"blk.{layer}.{part}"  # llama.cpp writes these without a suffix
            if rest in (f"{module}.weight", f"{module}.bias"):
                return f"blk.{layer}.{part}.{rest.rpartition('.')[2]}"
        return None
    for part, module in top.items():
        if hf in (f"{module}.weight", f"{module}.bias"):
            return f"{part}.{hf.rpartition('.')[2]}"
    return None


def unpermute_rope_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K permutation: per head, interleaved pairs -> Hugging Face halves.

    llama.cpp views each head's rows as ``(2, head_dim/2)`` and transposes to
    ``(head_dim/2, 2)``; the inverse views them as ``(head_dim/2, 2)`` and
    transposes back. Works for weights ``(rows, in)`` and biases ``(rows,)``.
    """
    half = rows.shape[0] // heads // 2
    return rows.reshape(heads, half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def layout_fix(architecture: str, gguf_name: str, config: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The function that turns GGUF tensor ``gguf_name``'s array into the HF layout, if any."""
    match = _BLOCK_NAME.fullmatch(gguf_name)
    part = match.group(2) if match else ""
    if architecture == "llama" and part in ("attn_q", "attn_k"):
        heads = config["num_attention_heads"] if part == "attn_q" else config["num_key_value_heads"]
        return lambda array: unpermute_rope_rows(array, heads)
    if architecture == "mamba":
        if part == "ssm_a":
            return lambda array: np.log(-array)
        if part == "ssm_conv1d" and match and match.group(3) == "weight":
            return lambda array: array.reshape(array.shape[0], 1, -1)
        if part == "ssm_d":
            return lambda array: array.reshape(-1)
    return None
