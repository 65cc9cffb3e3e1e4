"""Weight-only quantised projections for the torch backends: int8 rows and int4 groups, kept quantised in memory.

A decode step reads every weight once, so at batch 1 it runs at the speed the
weights stream from memory: fewer bytes per weight is more tokens per second.
Two encodings, each with the matmul kernel torch ships for it on CPU (measured
on SmolLM2-135M's shapes, one row, weights read from memory, 2-core AMD EPYC:
``benchmarks/bench_int4_kernel.py``, ``docs/bench_int4_kernel.md``):

* ``int8`` — one signed byte per weight and a scale per output row
  (``torch._weight_int8pack_mm``). Also the embedding table: a row of it is a
  vocabulary entry, so a tied LM head and the embedding gather share one table.
* ``int4`` — 4-bit codes in groups of :data:`GROUP` input weights, each group
  with its own scale and zero point (``w = (q - 8) * scale + zero``, the
  layout of ``torch._weight_int4pack_mm_for_cpu``). An asymmetric group holds
  llama.cpp's Q4_0, Q4_1 and Q4_K blocks exactly (their grids are all
  ``step * q + offset`` over 32 weights), so :func:`quantize` recovers a GGUF
  file's own grid instead of rounding its weights a second time.

Both kernels take bfloat16 activations (their float32 paths are 20-50x slower)
and bfloat16 scales; results come back as float32. A shape a kernel does not
take (int4 needs ``out % 16 == 0`` and ``in % 32 == 0``, int8 ``in % 16 ==
0``) falls back to the next wider encoding, down to float32, and each new
(encoding, shape) is checked once against the dequantised weight before it is
trusted (:func:`_kernel_agrees`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from agentd.backend import TORCH_QUANTS as QUANTS  # noqa: F401 - what prepare_weight accepts

#: What ``ModelInfo.dtype`` says for each encoding.
QUANT_DTYPES = {"fp32": "float32", "int8": "int8", "int4": "int4"}
#: Input weights per int4 group (one scale and one zero point each).
GROUP = 32
#: Tiles of 16 along K in torch's int4 packing (what its CPU kernel is written for).
INNER_K_TILES = 8
#: Codes of a group's range the grid search tries (see :func:`_int4_groups`).
GRID_STEPS = range(15, 7, -1)
#: A group is on a coarser grid when that grid's RMS error is below this fraction of min/max's.
ON_GRID = 0.05
#: Relative error against the dequantised weight above which a kernel is not trusted.
KERNEL_TOLERANCE = 2e-2


@dataclass(eq=False)
class QuantizedWeight:
    """An ``(out, in)`` weight held as int8 rows or int4 groups; only :meth:`linear` and :meth:`rows` read it."""

    #: 8 or 4.
    bits: int
    #: int8 ``(out, in)`` codes, or torch's packed int4 layout (opaque).
    codes: torch.Tensor
    #: int8: ``(out,)`` bfloat16 scales; int4: ``(in / GROUP, out, 2)`` bfloat16 scale and zero point.
    scales: torch.Tensor
    out_features: int
    in_features: int

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    def numel(self) -> int:
        """Parameters the weight stands for (what a parameter count counts)."""
        return self.out_features * self.in_features

    @property
    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * self.scales.element_size()

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ W^T + bias`` for ``x`` ``(rows, in)``, float32 out."""
        x16 = x.to(torch.bfloat16)
        if self.bits == 8:
            out = torch._weight_int8pack_mm(x16, self.codes, self.scales)
        else:
            out = torch._weight_int4pack_mm_for_cpu(x16, self.codes, GROUP, self.scales)
        out = out.float()
        return out if bias is None else out.add_(bias)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the weight as float32 (the embedding gather of an int8 table)."""
        if self.bits != 8:
            raise ValueError("only int8 weights are gathered by row")
        return self.codes[ids].float().mul_(self.scales[ids].float().unsqueeze(-1))

    def dequantize(self) -> torch.Tensor:
        """The float32 ``(out, in)`` weight the kernel computes with (tests, checks)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        if self.bits == 8:
            return self.codes.float() * self.scales.float().unsqueeze(1)
        # The packed layout is opaque: read it back through the kernel, one column at a time.
        return torch._weight_int4pack_mm_for_cpu(eye, self.codes, GROUP, self.scales).float().T.contiguous()


def quantize(weight: torch.Tensor, bits: int) -> QuantizedWeight | torch.Tensor:
    """``weight`` ``(out, in)`` float as a :class:`QuantizedWeight` of ``bits`` (8 or 4), or as
    the next wider encoding its shape allows (``weight`` itself when neither kernel takes it)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if weight.dim() != 2 or not weight.is_floating_point():
        return weight
    out_features, in_features = weight.shape
    weight = weight.float()
    if bits == 4 and out_features % 16 == 0 and in_features % GROUP == 0 and _kernel_agrees(4, in_features):
        codes, scales = _int4_groups(weight)
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
        return QuantizedWeight(4, packed, scales, out_features, in_features)
    if in_features % 16 == 0 and _kernel_agrees(8, in_features):
        codes, scales = _int8_rows(weight)
        return QuantizedWeight(8, codes, scales, out_features, in_features)
    return weight


def _int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes per output row: ``w ~= q * scale``, ``|q| <= 127``."""
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.bfloat16)
    codes = torch.round(weight / scales.float().unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
    return codes, scales


def _int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``0..15`` ``(out, in)`` int32 and ``(in / GROUP, out, 2)`` bfloat16 scale/zero per group.

    Each group's grid starts at its minimum; its step is ``(max - min) / k``
    for ``k = 15`` (plain min/max quantisation, what float weights get) unless
    the group lies exactly on a coarser grid ``k`` of :data:`GRID_STEPS`: a
    GGUF block that used only codes ``a..b`` of its grid is on ``k = b - a``,
    so its weights come back unchanged (up to the bfloat16 scales).
    """
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, in_features // GROUP, GROUP)  # (O, G, 32)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    span = (high - low).clamp(min=1e-12)
    best_step = span / 15
    plain_error = _grid_error(groups, low, best_step)
    for k in GRID_STEPS[1:]:
        step = span / k
        # Only a group that lies on the coarser grid takes it: for float weights k = 15 is best.
        on_grid = _grid_error(groups, low, step) < ON_GRID * plain_error
        best_step = torch.where(on_grid, step, best_step)
    scale = best_step.to(torch.bfloat16).float()
    # Zero point in the kernel's terms: w = (q - 8) * scale + zero, with q = 0 at the group minimum.
    zero = (low + 8 * scale).to(torch.bfloat16).float()
    codes = torch.round((groups - zero) / scale + 8).clamp_(0, 15).to(torch.int32)
    scales = torch.stack((scale[..., 0], zero[..., 0]), dim=-1).transpose(0, 1).contiguous()  # (G, O, 2)
    return codes.reshape(out_features, in_features), scales.to(torch.bfloat16)


def _grid_error(groups: torch.Tensor, low: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """RMS distance of each group's weights from the grid ``low + step * n`` ``(O, G, 1)``."""
    position = (groups - low) / step
    return (position - torch.round(position)).square_().mean(-1, keepdim=True).sqrt_() * step


@functools.cache
def _kernel_agrees(bits: int, in_features: int) -> bool:
    """Whether torch's ``bits`` kernel matches the dequantised weight for this input width (checked once)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, in_features, generator=generator) * 0.05
    x = torch.randn(3, in_features, generator=generator)
    try:
        if bits == 4:
            codes, scales = _int4_groups(weight)
            packed = torch._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
            q = QuantizedWeight(4, packed, scales, 32, in_features)
            reference = (codes.float().view(32, -1, GROUP) - 8) * scales.transpose(0, 1)[..., :1].float() + scales.transpose(0, 1)[..., 1:].float()
            reference = reference.view(32, in_features)
        else:
            codes, scales = _int8_rows(weight)
            q = QuantizedWeight(8, codes, scales, 32, in_features)
            reference = codes.float() * scales.float().unsqueeze(1)
        with torch.inference_mode():
            got = q.linear(x, None)
    except (AttributeError, RuntimeError, NotImplementedError):  # an older torch, or a CPU it has no kernel for
        return False
    expected = x.to(torch.bfloat16).float() @ reference.T
    return bool((got - expected).abs().max() <= KERNEL_TOLERANCE * expected.abs().max())
