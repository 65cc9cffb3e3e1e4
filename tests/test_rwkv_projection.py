"""RWKV-4 / RWKV-7 projections in agentd.plugins.projection's layout, read back as the checkpoint has them.

The ONNX exporters read ``att_key``, ``ffn_value``, ``head``, ... as ``(out, in)``
matrices; these tests pin that contract against the checkpoint's own tensors
(safetensors as written by Hugging Face / by the ``.pth`` conversion). Whole-model
parity with the references is in tests/test_rwkv4.py and tests/test_rwkv7.py.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import agentd
from agentd.plugins.projection import in_matvec_layout

from _rwkv_fixtures import make_hf_rwkv4, make_rwkv7_pth

RWKV4_FIELDS = {
    "att_key": "attention.key",
    "att_value": "attention.value",
    "att_receptance": "attention.receptance",
    "att_out": "attention.output",
    "ffn_key": "feed_forward.key",
    "ffn_receptance": "feed_forward.receptance",
    "ffn_value": "feed_forward.value",
}
#: Weights Hugging Face (and agentd) divide by 2^(layer // rescale_every) at inference.
RESCALED = {"att_out", "ffn_value"}
RWKV7_FIELDS = ("receptance", "key", "value", "output")


@pytest.mark.parametrize("tied", [False, True])
def test_rwkv4_projections_use_the_layout(tmp_path, tied: bool) -> None:
    pytest.importorskip("transformers")
    make_hf_rwkv4(tmp_path, hidden=32, layers=3, rescale_every=2, tie_word_embeddings=tied)
    saved = load_file(tmp_path / "model.safetensors")
    backend = agentd.load_model(tmp_path).backend
    for index, layer in enumerate(backend.layers):
        scale = 2.0 ** (index // 2)
        for field, name in RWKV4_FIELDS.items():
            weight = getattr(layer, field)
            assert in_matvec_layout(weight), field
            expected = saved[f"rwkv.blocks.{index}.{name}.weight"]
            expected = expected / scale if field in RESCALED else expected
            torch.testing.assert_close(weight, expected, rtol=0, atol=0)
    assert in_matvec_layout(backend.head)
    head = saved["rwkv.embeddings.weight"] if tied and "head.weight" not in saved else saved["head.weight"]
    torch.testing.assert_close(backend.head, head, rtol=0, atol=0)
    # The gather table (pre-LayerNorm folded in) stays row-major: it is never a matmul operand.
    assert backend.embeddings.is_contiguous()


def test_rwkv4_bf16_projections_stay_row_major(tmp_path) -> None:
    pytest.importorskip("transformers")
    from transformers import RwkvForCausalLM

    make_hf_rwkv4(tmp_path / "fp32", hidden=32, layers=2)
    RwkvForCausalLM.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    backend = agentd.load_model(tmp_path / "bf16").backend
    assert backend.dtype == torch.bfloat16
    assert all(getattr(layer, field).is_contiguous() for layer in backend.layers for field in RWKV4_FIELDS)


def test_rwkv7_projections_use_the_layout(tmp_path) -> None:
    pytest.importorskip("rwkv")
    from agentd.plugins.linear.convert import convert_rwkv7_pth

    directory = convert_rwkv7_pth(make_rwkv7_pth(tmp_path / "tiny.pth", hidden=64, layers=2), tmp_path / "model")
    saved = load_file(directory / "model.safetensors")
    backend = agentd.load_model(directory).backend
    for index, layer in enumerate(backend.layers):
        fields = {name: f"blocks.{index}.att.{name}.weight" for name in RWKV7_FIELDS}
        fields |= {"ffn_key": f"blocks.{index}.ffn.key.weight", "ffn_value": f"blocks.{index}.ffn.value.weight"}
        for field, name in fields.items():
            weight = getattr(layer, field)
            assert in_matvec_layout(weight), field
            torch.testing.assert_close(weight, saved[name], rtol=0, atol=0)
        # The low-rank factors are used as x @ w1 and are already (in, out) contiguous.
        assert layer.w1.is_contiguous() and layer.w2.is_contiguous()
    assert in_matvec_layout(backend.head)
    torch.testing.assert_close(backend.head, saved["head.weight"], rtol=0, atol=0)
