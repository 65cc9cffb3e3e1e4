"""The shared projection kernel (agentd.plugins.projection) and its use in the SSM backends.

References: torch's own ``F.linear`` on the checkpoint's row-major weights, and
the Hugging Face model's parameters. Serving (``agentd.load_model``) packs the
projections for oneDNN; the exporter's path (``mamba.load``) keeps them dense
``(out, in)``, exactly the checkpoint's values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import agentd
from agentd.formats import open_checkpoint
from agentd.plugins.projection import ROW_BUCKETS, linear, onednn_works, pack_weight

from _ssm_fixtures import make_hf_mamba, make_hf_mamba2

pytest.importorskip("transformers")
needs_onednn = pytest.mark.skipif(not onednn_works(), reason="torch without usable oneDNN linear ops")

# Same products summed in another order by another kernel: fp32 rounding only.
RTOL, ATOL = 1e-5, 1e-5


def _weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) / cols**0.5


def unpack(weight: torch.Tensor) -> torch.Tensor:
    """The dense ``(out, in)`` matrix behind a packed weight: its products with the identity (exact)."""
    return linear(torch.eye(weight.shape[1]), weight, None).t()


# -- the kernel ---------------------------------------------------------------------


@needs_onednn
@pytest.mark.parametrize("rows", [1, 3, 8, 16, 100, 256, 300, 600])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_linear_equals_linear_on_the_checkpoint_weight(rows: int, with_bias: bool) -> None:
    weight = _weight(48, 40)
    bias = torch.randn(48) if with_bias else None
    x = torch.randn(rows, 40)
    packed = pack_weight(weight)
    assert packed.is_mkldnn and packed.shape == weight.shape
    torch.testing.assert_close(linear(x, packed, bias), F.linear(x, weight, bias), rtol=RTOL, atol=ATOL)
    # A non-contiguous input (a column slice, as split() hands out) gives the same result.
    wide = torch.randn(rows, 50)
    sliced = wide[:, 5:45]
    torch.testing.assert_close(linear(sliced, packed, bias), F.linear(sliced, weight, bias), rtol=RTOL, atol=ATOL)


@needs_onednn
def test_packed_kernel_sees_only_bucketed_row_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # oneDNN caches one kernel per row count: arbitrary prompt lengths must not reach it.
    seen: list[int] = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(x: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(x.shape[0])
        return real(x, *args)

    packed = pack_weight(_weight(24, 16))
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", spy)
    for rows in (1, 3, 5, 7, 17, 33, 97, 255, 257, 513):
        assert linear(torch.randn(rows, 16), packed, None).shape == (rows, 24)
    assert seen and set(seen) <= set(ROW_BUCKETS)


def test_dense_weights_go_through_f_linear() -> None:
    weight, x = _weight(12, 8), torch.randn(3, 8)
    torch.testing.assert_close(linear(x, weight, None), F.linear(x, weight), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_stay_dense(dtype: torch.dtype) -> None:
    weight = _weight(16, 8).to(dtype)
    assert pack_weight(weight) is weight


@needs_onednn
def test_packing_is_idempotent_and_rejects_a_non_matrix() -> None:
    packed = pack_weight(_weight(16, 8))
    assert pack_weight(packed) is packed
    with pytest.raises(ValueError, match="2-D"):
        pack_weight(torch.zeros(2, 3, 4))


# -- the SSM backends ---------------------------------------------------------------


def _held_numel(backend) -> int:
    """Elements the backend's weights hold, counting tensors that share storage once."""
    tensors = [backend.embeddings, backend.norm_f, backend.lm_head]
    for layer in backend.layers:
        tensors += [value for value in vars(layer).values() if isinstance(value, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t for t in tensors if not t.is_mkldnn}
    dense = sum(t.untyped_storage().nbytes() // t.element_size() for t in storages.values())
    return dense + sum(t.numel() for t in tensors if t.is_mkldnn)


def _logits(backend, ids: list[int]) -> torch.Tensor:
    """Prefill logits of ``ids[:-1]`` followed by one decode step's logits for ``ids[-1]``."""
    state = backend.new_state()
    prompt = backend.prefill(np.array(ids[:-1]), state, all_logits=True)
    step = backend.decode(np.array([ids[-1]]), [state])
    return torch.from_numpy(np.concatenate([prompt.reshape(-1, prompt.shape[-1]), step.reshape(-1, step.shape[-1])]))


@needs_onednn
@pytest.mark.parametrize("tied", [True, False])
def test_mamba_serving_packs_projections_and_exporter_path_stays_dense(tmp_path, tied: bool) -> None:
    from agentd.plugins.ssm.mamba import load

    reference = make_hf_mamba(tmp_path, tie_word_embeddings=tied, use_bias=True)
    served = agentd.load_model(tmp_path).backend
    dense = load(open_checkpoint(tmp_path))  # what exporters/onnx/mamba.py reads
    for index, (layer, plain) in enumerate(zip(served.layers, dense.layers)):
        mixer = reference.backbone.layers[index].mixer
        for name in ("in_proj", "x_proj", "dt_proj", "out_proj"):
            expected = getattr(mixer, name).weight.detach()
            assert getattr(layer, name).is_mkldnn, name
            torch.testing.assert_close(unpack(getattr(layer, name)), expected, rtol=0, atol=0)
            assert not getattr(plain, name).is_mkldnn and getattr(plain, name).is_contiguous(), name
            torch.testing.assert_close(getattr(plain, name), expected, rtol=0, atol=0)
    assert served.lm_head.is_mkldnn and not served.embeddings.is_mkldnn
    torch.testing.assert_close(unpack(served.lm_head), reference.lm_head.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(dense.lm_head, reference.lm_head.weight.detach(), rtol=0, atol=0)
    # Memory: the exporter's load holds every parameter once (a tied table once); serving
    # holds the same, plus a packed copy of a tied head (the gather keeps the dense table).
    vocab, hidden = reference.lm_head.weight.shape
    assert _held_numel(dense) == dense.info.parameters
    assert _held_numel(served) == served.info.parameters + (vocab * hidden if tied else 0)
    ids = [1, 5, 7, 2, 9]
    torch.testing.assert_close(_logits(served, ids), _logits(dense, ids), rtol=1e-4, atol=1e-4)


@needs_onednn
def test_mamba2_serving_packs_projections(tmp_path) -> None:
    reference = make_hf_mamba2(tmp_path)
    backend = agentd.load_model(tmp_path).backend
    for index, layer in enumerate(backend.layers):
        mixer = reference.backbone.layers[index].mixer
        for name in ("in_proj", "out_proj"):
            assert getattr(layer, name).is_mkldnn, name
            expected = getattr(mixer, name).weight.detach()
            torch.testing.assert_close(unpack(getattr(layer, name)), expected, rtol=0, atol=0)
    assert backend.lm_head.is_mkldnn
    assert _held_numel(backend) == backend.info.parameters
