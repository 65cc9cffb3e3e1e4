"""The matrix-vector weight layout (agentd.plugins.projection) and its use in the SSM backends.

References: torch's own ``F.linear`` / ``F.embedding`` on the checkpoint's
row-major weights, and the Hugging Face model's parameters (which the ONNX
exporter's contract also relies on: projections read back ``(out, in)``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import agentd
from agentd.plugins.projection import in_matvec_layout, matvec_layout, tied_embedding_head

from _ssm_fixtures import make_hf_mamba, make_hf_mamba2

pytest.importorskip("transformers")

# Same products summed in another order by another kernel: fp32 rounding only.
RTOL, ATOL = 1e-5, 1e-5


def _weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) / cols**0.5


# -- the layout ---------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(1,), (8,), (3, 5), (128,)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_on_the_layout_equals_linear_on_the_checkpoint_weight(lead: tuple[int, ...], with_bias: bool) -> None:
    weight = _weight(48, 40)
    bias = torch.randn(48) if with_bias else None
    x = torch.randn(*lead, 40)
    fast = matvec_layout(weight)
    torch.testing.assert_close(F.linear(x, fast, bias), F.linear(x, weight, bias), rtol=RTOL, atol=ATOL)


def test_layout_keeps_shape_values_and_stores_the_transpose() -> None:
    weight = _weight(48, 40)
    fast = matvec_layout(weight)
    assert fast.shape == weight.shape  # still (out, in) for readers such as the exporter
    assert torch.equal(fast, weight)
    assert not fast.is_contiguous() and fast.t().is_contiguous()
    assert in_matvec_layout(fast) and not in_matvec_layout(weight)
    assert fast.numpy().tolist() == weight.numpy().tolist()  # NumPy sees the same (out, in) matrix


def test_layout_is_idempotent_without_a_copy() -> None:
    fast = matvec_layout(_weight(16, 8))
    assert matvec_layout(fast).data_ptr() == fast.data_ptr()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_stay_row_major(dtype: torch.dtype) -> None:
    # Measured slower transposed in half precision (docs/bench_projection.md).
    weight = _weight(16, 8).to(dtype)
    assert matvec_layout(weight) is weight


def test_layout_rejects_a_non_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        matvec_layout(torch.zeros(2, 3, 4))


def test_tied_table_serves_gather_and_head_from_one_storage() -> None:
    table = _weight(100, 24)
    shared = tied_embedding_head(table)
    ids = torch.tensor([0, 5, 99, 5])
    torch.testing.assert_close(F.embedding(ids, shared), F.embedding(ids, table), rtol=0, atol=0)
    x = torch.randn(2, 24)
    torch.testing.assert_close(F.linear(x, shared), F.linear(x, table), rtol=RTOL, atol=ATOL)
    assert shared.untyped_storage().nbytes() == table.numel() * 4  # one copy, not two


# -- the SSM backends ---------------------------------------------------------------


def _unique_numel(tensors: list[torch.Tensor]) -> int:
    """Elements held, counting tensors that share storage once."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes() // tensor.element_size()
    return sum(seen.values())


def _backend_tensors(backend) -> list[torch.Tensor]:
    tensors = [backend.embeddings, backend.norm_f, backend.lm_head]
    for layer in backend.layers:
        tensors += [value for value in vars(layer).values() if isinstance(value, torch.Tensor)]
    return tensors


@pytest.mark.parametrize("tied", [True, False])
def test_mamba_projections_use_the_layout_and_read_back_as_checkpoint(tmp_path, tied: bool) -> None:
    reference = make_hf_mamba(tmp_path, tie_word_embeddings=tied, use_bias=True)
    backend = agentd.load_model(tmp_path).backend
    for index, layer in enumerate(backend.layers):
        mixer = reference.backbone.layers[index].mixer
        for name in ("in_proj", "x_proj", "dt_proj", "out_proj"):
            weight = getattr(layer, name)
            assert in_matvec_layout(weight), name
            torch.testing.assert_close(weight, getattr(mixer, name).weight.detach(), rtol=0, atol=0)
    assert in_matvec_layout(backend.lm_head)
    torch.testing.assert_close(backend.lm_head, reference.lm_head.weight.detach(), rtol=0, atol=0)
    if tied:
        assert backend.embeddings is backend.lm_head
    # Every parameter is held exactly once: no row-major copy survives the re-layout.
    assert _unique_numel(_backend_tensors(backend)) == backend.info.parameters


def test_mamba2_projections_use_the_layout(tmp_path) -> None:
    reference = make_hf_mamba2(tmp_path)
    backend = agentd.load_model(tmp_path).backend
    for index, layer in enumerate(backend.layers):
        mixer = reference.backbone.layers[index].mixer
        for name in ("in_proj", "out_proj"):
            weight = getattr(layer, name)
            assert in_matvec_layout(weight), name
            torch.testing.assert_close(weight, getattr(mixer, name).weight.detach(), rtol=0, atol=0)
    assert in_matvec_layout(backend.lm_head)
    assert _unique_numel(_backend_tensors(backend)) == backend.info.parameters
