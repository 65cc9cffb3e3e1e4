"""Writing GGUF files: a Hugging Face model (config + state dict) in llama.cpp's names and layouts.

The inverse of :mod:`.names` and :mod:`.metadata`: hyperparameters go to
``<arch>.*`` metadata keys, tensors to llama.cpp's ``blk.N.*`` names with the
layout changes its converter (``convert_hf_to_gguf.py``) makes:

* ``llama``: each head's Q and K rows permuted from Hugging Face's "rotate
  halves" RoPE layout to GGML's interleaved pairs (``qwen2`` is left alone:
  llama.cpp runs it with the NeoX RoPE, which is Hugging Face's layout);
* ``mamba``: ``A_log`` stored as ``ssm_a = -exp(A_log)``, the depthwise conv
  weight ``(d_inner, 1, k)`` squeezed to ``(d_inner, k)``;
* a tied LM head is written once, as ``token_embd``.

Matrices are written in the ggml type ``types(gguf_name, array)`` names
(``F32``, ``F16``, ``Q8_0``, ``Q4_0``, ... through ``gguf.quants.quantize``);
vectors and rows that are not a whole number of blocks stay F32, as
llama.cpp keeps them. :func:`quantize` instead runs llama.cpp's own quantiser
(``llama-cpp-python``) over an F32 file, which also picks llama.cpp's mix
(e.g. a Q6_K output head in a Q4_0 file).

No tokenizer is converted: unless ``metadata`` adds one, the file says
``tokenizer.ggml.model = "none"`` (llama.cpp then takes token ids only), which
is what random-weight benchmark and test models need. Files are written to a
temporary name and renamed, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from agentd.errors import InvalidArgument, UnsupportedArchitecture

from .metadata import HF_ARCHITECTURES
from .names import gguf_name

if TYPE_CHECKING:
    from agentd.checkpoint import Checkpoint

#: ``types(gguf_name, float32 array) -> ggml type name`` (``"F32"``, ``"Q8_0"``, ...).
TensorTypes = Callable[[str, np.ndarray], str]
#: Adds further metadata (a tokenizer, a chat template) to the ``gguf.GGUFWriter`` before it is written.
MetadataHook = Callable[[Any], None]
#: ``encoder(float32 array, type name) -> (data, raw dtype)`` for ``GGUFWriter.add_tensor``.
Encoder = Callable[[np.ndarray, str], tuple[np.ndarray, Any]]

#: ``llama_model_quantize`` targets by the names ``agentd bench`` and llama.cpp's tools use.
QUANTIZE_FTYPES = {"f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
                   "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}

_ARCH_OF_HF = {hf: arch for arch, (hf, _) in HF_ARCHITECTURES.items()}


def block_fits(type_name: str, array: np.ndarray) -> bool:
    """Whether ``array`` can be stored in ``type_name``: a matrix whose rows are whole blocks."""
    import gguf

    if type_name in ("F32", "F16", "BF16"):
        return True
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]
    return array.ndim >= 2 and array.shape[-1] % block == 0


def uniform(type_name: str) -> TensorTypes:
    """Every matrix in ``type_name``; vectors (norms, biases) and odd-sized rows in F32, as llama.cpp keeps them."""
    return lambda name, array: type_name if array.ndim >= 2 and block_fits(type_name, array) else "F32"


def permute_rope_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K permutation: per head, Hugging Face "halves" rows -> GGML interleaved pairs.

    The inverse of :func:`.names.unpermute_rope_rows`; works for weights ``(rows, in)`` and biases ``(rows,)``.
    """
    half = rows.shape[0] // heads // 2
    return rows.reshape(heads, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def architecture_of(config: Mapping[str, Any]) -> str:
    """The GGUF architecture of a Hugging Face ``config.json``, or UnsupportedArchitecture."""
    hf_arch = (config.get("architectures") or [""])[0]
    if hf_arch not in _ARCH_OF_HF:
        raise UnsupportedArchitecture(hf_arch or "config.json", f"cannot write {hf_arch!r} as GGUF (supported: {', '.join(_ARCH_OF_HF)})")
    return _ARCH_OF_HF[hf_arch]


def write_gguf(
    path: str | Path,
    config: Mapping[str, Any],
    tensors: Iterable[tuple[str, np.ndarray]],
    *,
    types: TensorTypes = uniform("F32"),
    metadata: MetadataHook | None = None,
    encoder: Encoder | None = None,
) -> Path:
    """Write the model ``config`` + ``tensors`` (Hugging Face names, float arrays) as the GGUF file ``path``.

    ``encoder(array, type_name)`` replaces :func:`encode` (tests use it for K-quant blocks gguf-py cannot make).
    """
    import gguf

    path = Path(path)
    arch = architecture_of(config)
    staging = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(str(staging), arch)
    try:
        _add_hyperparameters(writer, arch, config)
        if metadata is not None:
            metadata(writer)
        else:
            writer.add_tokenizer_model("none")  # token ids only (llama.cpp refuses a file without the key)
        tied = bool(config.get("tie_word_embeddings", False))
        for hf, tensor in tensors:
            if tied and hf == "lm_head.weight":
                continue  # llama.cpp keeps a tied head once, as token_embd
            name = gguf_name(arch, hf)
            if name is None:
                raise InvalidArgument("tensors", f"{hf!r} has no GGUF name in a {arch} model")
            array = _to_gguf_layout(arch, name, np.asarray(tensor, dtype=np.float32), config)
            data, raw_type = (encoder or encode)(array, types(name, array))
            writer.add_tensor(name, data, raw_dtype=raw_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def write_checkpoint(checkpoint: "Checkpoint", path: str | Path, *, types: TensorTypes = uniform("F32")) -> Path:
    """Write an agentd :class:`~agentd.checkpoint.Checkpoint` (a Hugging Face directory, a bundle) as GGUF."""
    return write_gguf(path, checkpoint.config, checkpoint.tensors("np"), types=types)


def quantize(source: str | Path, target: str | Path, kind: str, threads: int = 0, *, requantize: bool = False) -> Path:
    """Quantise the GGUF ``source`` to ``target`` with llama.cpp's own quantiser (``q8_0``, ``q4_0``, ...).

    ``requantize`` lets llama.cpp start from a ``source`` that is already quantised (its
    ``--allow-requantize``), e.g. a Q4_1 file into Q8_0 / Q4_0 for a like-for-like comparison.

    Needs ``llama-cpp-python`` (the ``bench`` extra). Written to a temporary name, then renamed.
    """
    try:
        import llama_cpp
    except ImportError:
        raise InvalidArgument("kind", "llama.cpp's quantiser needs llama-cpp-python (pip install 'agentd[bench]')") from None
    if kind not in QUANTIZE_FTYPES:
        raise InvalidArgument("kind", f"{kind!r} is not one of {', '.join(QUANTIZE_FTYPES)}")
    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZE_FTYPES[kind])
    params.nthread = threads
    params.allow_requantize = requantize
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(staging).encode(), ctypes.byref(params))
        if status != 0:
            raise InvalidArgument("source", f"llama.cpp could not quantise {source} to {kind} (status {status})")
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


# -- internals ---------------------------------------------------------------------------------
def _add_hyperparameters(writer: Any, arch: str, config: Mapping[str, Any]) -> None:
    """The ``<arch>.*`` keys :mod:`.metadata` reads back (and llama.cpp needs)."""
    layers = int(config["num_hidden_layers"])
    writer.add_block_count(layers)
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_vocab_size(int(config["vocab_size"]))
    if arch == "mamba":
        hidden = int(config["hidden_size"])
        inner = int(config.get("intermediate_size") or config.get("expand", 2) * hidden)
        rank = config.get("time_step_rank", "auto")
        writer.add_context_length(int(config.get("max_position_embeddings") or 1 << 20))  # no limit; llama.cpp writes 2**20
        writer.add_ssm_conv_kernel(int(config.get("conv_kernel", 4)))
        writer.add_ssm_inner_size(inner)
        writer.add_ssm_state_size(int(config.get("state_size", 16)))
        writer.add_ssm_time_step_rank(int(-(-hidden // 16)) if rank == "auto" else int(rank))
        writer.add_layer_norm_rms_eps(float(config.get("layer_norm_epsilon", 1e-5)))
        return
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    if rope.get("rope_type", "default") not in ("default", "llama3", None):
        raise InvalidArgument("config", f"RoPE scaling {rope.get('rope_type')!r} is not written to GGUF yet")
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != int(config["hidden_size"]) // heads:
        writer.add_key_length(head_dim)  # as llama.cpp does for an explicit head_dim
        writer.add_value_length(head_dim)
    if rope.get("rope_type") == "llama3":  # llama.cpp carries Llama 3's scaling as a tensor of divisors
        writer.add_tensor("rope_freqs.weight", llama3_divisors(head_dim, theta, rope))


def llama3_divisors(head_dim: int, theta: float, scaling: Mapping[str, float]) -> np.ndarray:
    """``rope_freqs.weight`` as llama.cpp's converter computes it from a ``llama3`` ``rope_scaling``."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = original / low, original / high
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _to_gguf_layout(arch: str, name: str, array: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
        heads = config["num_attention_heads"] if ".attn_q." in name else config.get("num_key_value_heads") or config["num_attention_heads"]
        return permute_rope_rows(array, int(heads))
    if name.endswith(".ssm_a"):
        return -np.exp(array)
    if name.endswith(".ssm_conv1d.weight"):
        return array.reshape(array.shape[0], array.shape[-1])
    return array


def encode(array: np.ndarray, type_name: str) -> tuple[np.ndarray, Any]:
    """``array`` in ggml type ``type_name``: (data, raw dtype) for ``GGUFWriter.add_tensor``."""
    import gguf
    from gguf.quants import quantize as quantize_blocks

    if type_name == "F32":
        return np.ascontiguousarray(array, dtype=np.float32), None
    if type_name == "F16":
        return array.astype(np.float16), None
    try:
        qtype = gguf.GGMLQuantizationType[type_name]
    except KeyError:
        raise InvalidArgument("types", f"unknown ggml type {type_name!r}") from None
    if not block_fits(type_name, array):
        raise InvalidArgument("types", f"a {array.shape} tensor cannot be stored as {type_name} (rows are not whole blocks)")
    return quantize_blocks(array, qtype), qtype
