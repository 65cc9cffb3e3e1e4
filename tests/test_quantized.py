"""Quantised execution in the torch backends (``agentd.plugins.quantized``): kernels, GGUF grids, every family.

References nobody here wrote: torch's own float matmul on the dequantised weight
(the kernels), gguf-py's dequantisation of llama.cpp blocks (a GGUF grid is
kept exactly), transformers' logits on the same random models (the quantised
backends stay close), and llama.cpp's own quantiser (its Q4_0/Q8_0 files run
at their own bits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agentd
from agentd.errors import InvalidArgument
from agentd.plugins.projection import embedding, linear, prepare_weight
from agentd.plugins.quantized import GROUP, QuantizedWeight, quantize


def _weight(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_a_quantised_linear_is_the_float_matmul_of_its_dequantised_weight(bits, rows) -> None:
    weight, bias = _weight(96, 128), torch.randn(96)
    q = quantize(weight, bits)
    assert isinstance(q, QuantizedWeight) and q.bits == bits and q.shape == (96, 128)
    x = torch.randn(rows, 128)
    got = linear(x, q, bias)
    want = torch.nn.functional.linear(x.to(torch.bfloat16).float(), q.dequantize(), bias)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=2e-2 * want.abs().max().item())


@pytest.mark.parametrize("bits, step_fraction", [(8, 1 / 254), (4, 1 / 30)])
def test_the_quantisation_error_is_half_a_step(bits, step_fraction) -> None:
    weight = _weight(64, 256)
    error = (quantize(weight, bits).dequantize() - weight).abs()
    if bits == 8:
        step = weight.abs().amax(1, keepdim=True) / 127
    else:
        groups = weight.view(64, -1, GROUP)
        step = ((groups.amax(-1) - groups.amin(-1)) / 15).repeat_interleave(GROUP, 1)
    # Half a step, plus the bfloat16 rounding of scales and of the values read back.
    assert (error <= 0.5 * step + 0.01 * step + weight.abs() / 128).all()
    assert error.mean() > 0  # it did quantise


def test_shapes_the_kernels_do_not_take_fall_back_to_a_wider_encoding() -> None:
    assert quantize(_weight(40, 64), 4).bits == 8  # int4 wants out % 16 == 0
    assert quantize(_weight(64, 48), 4).bits == 8  # ... and in % 32 == 0
    dense = _weight(64, 40)
    assert quantize(dense, 8) is dense  # int8 wants in % 16 == 0: stays float
    assert not isinstance(prepare_weight(dense, "int4"), QuantizedWeight)
    with pytest.raises(ValueError, match="quant must be one of"):
        prepare_weight(dense, "int3")


def test_an_int8_table_gathers_the_rows_its_head_multiplies_with() -> None:
    table = quantize(_weight(64, 32), 8)
    ids = torch.tensor([3, 0, 63, 3])
    np.testing.assert_array_equal(embedding(ids, table).numpy(), table.dequantize()[ids].numpy())


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_a_gguf_4_bit_grid_is_kept_exactly(qtype) -> None:
    """llama.cpp's blocks (quantised by gguf-py, dequantised by it) come back on the same grid."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize as gguf_quantize

    kind = GGMLQuantizationType[qtype]
    source = _weight(64, 256, seed=3).numpy()
    stored = torch.from_numpy(dequantize(gguf_quantize(source, kind), kind).reshape(64, 256))
    ours = quantize(stored, 4).dequantize()
    step = (stored.view(64, -1, GROUP).amax(-1) - stored.view(64, -1, GROUP).amin(-1)).repeat_interleave(GROUP, 1) / 15
    # Only the bfloat16 rounding of scale, zero point and read-back remains: far under a step.
    assert ((ours - stored).abs() <= 0.04 * step + stored.abs() / 128).all()
    requantised_float = quantize(torch.from_numpy(source), 4).dequantize()
    assert (ours - stored).abs().mean() < 0.25 * (requantised_float - torch.from_numpy(source)).abs().mean()


def test_load_model_takes_an_encoding_and_refuses_one_the_backend_lacks(tmp_path) -> None:
    from tests._llama_fixtures import save_variant

    directory = tmp_path / "llama"
    save_variant("llama", directory)
    for quant, dtype in (("fp32", "float32"), ("int8", "int8"), ("int4", "int4")):
        assert agentd.load_model(directory, quant=quant).info.dtype == dtype
    assert agentd.load_model(directory).info.dtype == "float32"  # a float checkpoint's own encoding
    with pytest.raises(InvalidArgument, match="computes with fp32, int8, int4"):
        agentd.load_model(directory, quant="fp16")
