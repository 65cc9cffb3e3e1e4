"""RWKV-4 / RWKV-7 projections: oneDNN-packed when served, dense ``(out, in)`` for the exporter.

Serving (``agentd.load_model``) packs every projection and the head with
agentd.plugins.projection; the ONNX exporters call ``rwkv4.load`` /
``rwkv7.load`` and read ``att_key``, ``ffn_value``, ``head``, ... as dense
``(out, in)`` matrices. Both are pinned against the checkpoint's own tensors
(safetensors as written by Hugging Face / by the ``.pth`` conversion). Whole-model
parity with the references is in tests/test_rwkv4.py and tests/test_rwkv7.py.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import agentd
from agentd.formats import open_checkpoint
from agentd.plugins.projection import linear, onednn_works

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

needs_onednn = pytest.mark.skipif(not onednn_works(), reason="torch without usable oneDNN linear ops")


def unpack(weight: torch.Tensor) -> torch.Tensor:
    """The dense ``(out, in)`` matrix behind a packed weight: its products with the identity (exact)."""
    return linear(torch.eye(weight.shape[1]), weight, None).t()


def assert_packed_as(weight: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert weight.is_mkldnn, name
    torch.testing.assert_close(unpack(weight), expected, rtol=0, atol=0)


def assert_dense_as(weight: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert not weight.is_mkldnn and weight.is_contiguous(), name
    torch.testing.assert_close(weight, expected, rtol=0, atol=0)


@needs_onednn
@pytest.mark.parametrize("tied", [False, True])
def test_rwkv4_serving_packs_projections_and_exporter_path_stays_dense(tmp_path, tied: bool) -> None:
    pytest.importorskip("transformers")
    from agentd.plugins.linear.rwkv4 import load

    make_hf_rwkv4(tmp_path, hidden=32, layers=3, rescale_every=2, tie_word_embeddings=tied)
    saved = load_file(tmp_path / "model.safetensors")
    served = agentd.load_model(tmp_path).backend
    dense = load(open_checkpoint(tmp_path))  # what exporters/onnx/rwkv4.py reads
    for index, (layer, plain) in enumerate(zip(served.layers, dense.layers)):
        scale = 2.0 ** (index // 2)
        for field, name in RWKV4_FIELDS.items():
            expected = saved[f"rwkv.blocks.{index}.{name}.weight"]
            expected = expected / scale if field in RESCALED else expected
            assert_packed_as(getattr(layer, field), expected, field)
            assert_dense_as(getattr(plain, field), expected, field)
    head = saved["rwkv.embeddings.weight"] if tied and "head.weight" not in saved else saved["head.weight"]
    assert_packed_as(served.head, head, "head")
    assert_dense_as(dense.head, head, "head")
    # The gather table (pre-LayerNorm folded in) stays dense: it is never a matmul operand.
    assert not served.embeddings.is_mkldnn and served.embeddings.is_contiguous()


def test_rwkv4_bf16_projections_stay_dense(tmp_path) -> None:
    pytest.importorskip("transformers")
    from transformers import RwkvForCausalLM

    make_hf_rwkv4(tmp_path / "fp32", hidden=32, layers=2)
    RwkvForCausalLM.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    backend = agentd.load_model(tmp_path / "bf16").backend
    assert backend.dtype == torch.bfloat16
    weights = [getattr(layer, field) for layer in backend.layers for field in RWKV4_FIELDS] + [backend.head]
    assert all(not w.is_mkldnn and w.is_contiguous() and w.dtype == torch.bfloat16 for w in weights)


@needs_onednn
def test_rwkv7_serving_packs_projections_and_exporter_path_stays_dense(tmp_path) -> None:
    pytest.importorskip("rwkv")
    from agentd.plugins.linear.convert import convert_rwkv7_pth
    from agentd.plugins.linear.rwkv7 import load

    directory = convert_rwkv7_pth(make_rwkv7_pth(tmp_path / "tiny.pth", hidden=64, layers=2), tmp_path / "model")
    saved = load_file(directory / "model.safetensors")
    served = agentd.load_model(directory).backend
    dense = load(open_checkpoint(directory))  # what exporters/onnx/rwkv7.py reads
    for index, (layer, plain) in enumerate(zip(served.layers, dense.layers)):
        fields = {name: f"blocks.{index}.att.{name}.weight" for name in RWKV7_FIELDS}
        fields |= {"ffn_key": f"blocks.{index}.ffn.key.weight", "ffn_value": f"blocks.{index}.ffn.value.weight"}
        for field, name in fields.items():
            assert_packed_as(getattr(layer, field), saved[name], field)
            assert_dense_as(getattr(plain, field), saved[name], field)
        # The low-rank factors are used as x @ w1, stored (in, out) contiguous, not packed.
        assert layer.w1.is_contiguous() and layer.w2.is_contiguous()
    assert_packed_as(served.head, saved["head.weight"], "head")
    assert_dense_as(dense.head, saved["head.weight"], "head")
