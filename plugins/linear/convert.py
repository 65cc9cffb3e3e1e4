"""Turn an RWKV-7 ``.pth`` (as BlinkDL ships x070 checkpoints) into an agentd model directory.

The directory is a plain Hugging Face-style checkpoint: ``config.json`` with
``architectures: ["Rwkv7ForCausalLM"]`` and every dimension inferred from the
tensor shapes, plus ``model.safetensors`` holding the same tensors under the
same names (those of the ``rwkv`` package), with the ``(1, 1, C)`` vectors
squeezed to ``(C,)`` and block 0's unused ``v0``/``v1``/``v2`` dropped.
Loading never unpickles: only this one-off conversion reads the ``.pth``
(with ``weights_only=True``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from agentd.errors import ModelLoadError

ARCHITECTURE = "Rwkv7ForCausalLM"
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def convert_rwkv7_pth(pth: str | Path, out_dir: str | Path, *, context_length: int = 4096) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors`` from ``pth``; return ``out_dir``.

    ``context_length`` is what the model reports as its limit (RWKV itself has
    none; 4096 is the usual training length). Raises ModelLoadError naming
    ``pth`` when it is not an RWKV-7 x070 state dict.
    """
    from safetensors.torch import save_file

    pth, out_dir = Path(pth), Path(out_dir)
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a bad pickle
        raise ModelLoadError(pth, f"cannot read .pth state dict ({exc})") from None
    if not isinstance(state, dict) or "emb.weight" not in state:
        raise ModelLoadError(pth, "not an RWKV state dict (no 'emb.weight')")
    if "blocks.0.att.r_k" not in state:
        raise ModelLoadError(pth, "not an RWKV-7 x070 checkpoint (no 'blocks.0.att.r_k')")
    if any(".s_emb" in name for name in state):
        raise ModelLoadError(pth, "RWKV-7 DeepEmbed checkpoints are not supported")

    vocab, hidden = state["emb.weight"].shape
    heads, head_size = state["blocks.0.att.r_k"].shape
    layers = 1 + max(int(m.group(1)) for name in state if (m := _BLOCK.match(name)))

    def lora_rank(name: str) -> int:
        for i in range(layers):
            tensor = state.get(f"blocks.{i}.att.{name}")
            if tensor is not None and not (i == 0 and name.startswith("v")):
                return int(tensor.shape[1])
        return 0

    config = {
        "architectures": [ARCHITECTURE],
        "model_type": "rwkv7",
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": layers,
        "head_size": int(head_size),
        "num_heads": int(heads),
        "intermediate_size": int(state["blocks.0.ffn.key.weight"].shape[0]),
        "decay_low_rank": lora_rank("w1"),
        "a_low_rank": lora_rank("a1"),
        "v_low_rank": lora_rank("v1"),
        "gate_low_rank": lora_rank("g1"),
        "context_length": int(context_length),
        "torch_dtype": str(state["emb.weight"].dtype).removeprefix("torch."),
    }
    tensors = {}
    for name, tensor in state.items():
        if name in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
            continue  # block 0 takes its values as they are (v_first)
        if tensor.dim() == 3 and tensor.shape[:2] == (1, 1):
            tensor = tensor.reshape(-1)  # (1, 1, C) -> (C,)
        tensors[name] = tensor.contiguous()

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt", "source": pth.name})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir
