"""GGUF metadata -> the Hugging Face ``config.json`` and ``generation_config.json`` it came from.

llama.cpp keeps hyperparameters as ``<architecture>.<key>`` metadata
(``llama.embedding_length``, ``mamba.ssm.state_size``, ...). This maps them back
to the field names the agentd backends read (``LlamaConfig.from_hf``,
``MambaConfig.from_dict``), and derives from the tensors what the metadata
leaves implicit: tied embeddings (no ``output.weight``), q/k/v biases, the
vocabulary size, Llama 3 RoPE scaling (``rope_freqs.weight``, see :mod:`.rope`).
"""

from __future__ import annotations

from typing import Any

from agentd.errors import ModelLoadError

from .reader import GgufFile
from .rope import rope_scaling_from_divisors

#: GGUF ``general.architecture`` -> (HF ``architectures[0]``, ``model_type``).
HF_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "mamba": ("MambaForCausalLM", "mamba"),
}

#: ``<arch>.<key>`` -> HF field, shared by the Llama-family decoders.
_DECODER_FIELDS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.key_length": "head_dim",
}
_MAMBA_FIELDS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "ssm.state_size": "state_size",
    "ssm.conv_kernel": "conv_kernel",
    "ssm.time_step_rank": "time_step_rank",
    "ssm.inner_size": "intermediate_size",
    "attention.layer_norm_rms_epsilon": "layer_norm_epsilon",
}

#: ``tokenizer.ggml.<key>`` -> special-token id field of the configs.
SPECIAL_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "pad_token_id": "padding_token_id"}
#: Further ids that end a turn (llama.cpp's end-of-generation set).
END_OF_TURN_KEYS = ("eot_token_id", "eom_token_id")


def architecture(gguf: GgufFile) -> str:
    """``general.architecture``, refused unless agentd can serve it."""
    arch = gguf.metadata.get("general.architecture")
    if arch not in HF_ARCHITECTURES:
        raise ModelLoadError(
            gguf.path,
            f"GGUF architecture {arch!r} (general.architecture) is not supported "
            f"(supported: {', '.join(HF_ARCHITECTURES)})",
        )
    return arch


def hf_config(gguf: GgufFile) -> dict[str, Any]:
    """The ``config.json`` a Hugging Face checkpoint of this model would have."""
    arch = architecture(gguf)
    meta = gguf.metadata
    infos = {info.name: info for info in gguf.tensor_infos}
    hf_arch, model_type = HF_ARCHITECTURES[arch]
    if "token_embd.weight" not in infos:
        raise ModelLoadError(gguf.path, "missing tensor 'token_embd.weight'")
    config: dict[str, Any] = {"architectures": [hf_arch], "model_type": model_type}
    fields = _MAMBA_FIELDS if arch == "mamba" else _DECODER_FIELDS
    for key, name in fields.items():
        if f"{arch}.{key}" in meta:
            config[name] = meta[f"{arch}.{key}"]
    # The embedding's rows are the vocabulary the model was trained with; metadata may omit it.
    config["vocab_size"] = infos["token_embd.weight"].shape[0]
    config["tie_word_embeddings"] = "output.weight" not in infos
    config["hidden_act"] = "silu"
    config["dtype"] = "float32"  # what tensors() yields
    for field, key in SPECIAL_IDS.items():
        if isinstance(meta.get(f"tokenizer.ggml.{key}"), int):
            config[field] = meta[f"tokenizer.ggml.{key}"]

    if arch == "mamba":
        hidden, inner = config.get("hidden_size"), config.get("intermediate_size")
        if isinstance(hidden, int) and isinstance(inner, int) and hidden and inner % hidden == 0:
            config["expand"] = inner // hidden
        elif inner is not None:
            raise ModelLoadError(gguf.path, f"mamba.ssm.inner_size {inner} is not a multiple of embedding_length {hidden}")
        config["use_bias"] = "blk.0.ssm_in.bias" in infos
        config["use_conv_bias"] = "blk.0.ssm_conv1d.bias" in infos
        config.setdefault("layer_norm_epsilon", 1e-5)
        return config

    if "head_dim" not in config and f"{arch}.rope.dimension_count" in meta:
        # Files from before llama.cpp wrote attention.key_length: the rotary width is the head width.
        config["head_dim"] = meta[f"{arch}.rope.dimension_count"]
    config.setdefault("num_key_value_heads", config.get("num_attention_heads"))
    config.setdefault("rope_theta", 10000.0)
    config.setdefault("rms_norm_eps", 1e-6)
    if arch == "qwen2":
        config["use_sliding_window"] = False
    else:
        config["attention_bias"] = "blk.0.attn_q.bias" in infos
        config["mlp_bias"] = "blk.0.ffn_up.bias" in infos
    rope_scaling = _rope_scaling(gguf, arch, config)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def _rope_scaling(gguf: GgufFile, arch: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """``rope_scaling`` from ``<arch>.rope.scaling.*`` metadata or a ``rope_freqs.weight`` tensor."""
    meta = gguf.metadata
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind not in (None, "none", "linear"):
        raise ModelLoadError(gguf.path, f"RoPE scaling {kind!r} ({arch}.rope.scaling.type) is not supported (none, linear, llama3)")
    if kind == "linear" and meta.get(f"{arch}.rope.scaling.factor", 1.0) != 1.0:
        return {"rope_type": "linear", "factor": float(meta[f"{arch}.rope.scaling.factor"])}
    if not gguf.has_tensor("rope_freqs.weight"):
        return None
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head_dim = config.get("head_dim") or meta.get(f"{arch}.rope.dimension_count")
    if not head_dim and isinstance(heads, int) and isinstance(hidden, int) and heads:
        head_dim = hidden // heads
    try:
        return rope_scaling_from_divisors(gguf.dequantize("rope_freqs.weight"), float(config["rope_theta"]), int(head_dim))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(gguf.path, f"tensor 'rope_freqs.weight' {exc}") from None


def generation_config(gguf: GgufFile) -> dict[str, Any]:
    """``generation_config.json``: the special ids, every end-of-turn id counted as EOS."""
    meta = gguf.metadata
    config: dict[str, Any] = {}
    for field, key in SPECIAL_IDS.items():
        if isinstance(meta.get(f"tokenizer.ggml.{key}"), int):
            config[field] = meta[f"tokenizer.ggml.{key}"]
    ends = [config["eos_token_id"]] if "eos_token_id" in config else []
    ends += [meta[f"tokenizer.ggml.{key}"] for key in END_OF_TURN_KEYS if isinstance(meta.get(f"tokenizer.ggml.{key}"), int)]
    ends = list(dict.fromkeys(ends))
    if ends:
        config["eos_token_id"] = ends[0] if len(ends) == 1 else ends
    return config
