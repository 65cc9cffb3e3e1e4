"""Write an RWKV-7 ``.pth`` out as a Hugging Face-style model directory.

Serving no longer needs this: the ``rwkv-pth`` format
(:mod:`agentd.plugins.linear.pth_format`) opens a ``.pth`` directly, and
``agentd import MODEL.pth BUNDLE`` writes a verified bundle. This stays for
code that wants a plain ``config.json`` + ``model.safetensors`` directory
(the tests build their RWKV-7 models this way); the layout decisions
(config inference, tensor names and shapes) live in the format alone.
"""

from __future__ import annotations

from pathlib import Path

from agentd.plugins.linear.pth_format import DEFAULT_CONTEXT_LENGTH, RwkvPthCheckpoint


def convert_rwkv7_pth(pth: str | Path, out_dir: str | Path, *, context_length: int = DEFAULT_CONTEXT_LENGTH) -> Path:
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors`` from ``pth``; return ``out_dir``.

    ``context_length`` is what the model reports as its limit. Raises
    ModelLoadError naming ``pth`` when it is not an RWKV-7 x070 state dict.
    """
    from safetensors.torch import save_file

    checkpoint = RwkvPthCheckpoint(pth, context_length=context_length)
    tensors = {name: tensor.contiguous() for name, tensor in checkpoint.tensors("pt")}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt", "source": checkpoint.path.name})
    (out_dir / "config.json").write_text(checkpoint.read_text("config.json") or "", encoding="utf-8")
    return out_dir
