"""Llama 3 RoPE scaling, recovered from the ``rope_freqs.weight`` a GGUF stores instead.

A Hugging Face Llama 3.x config says ``rope_scaling = {rope_type: llama3,
factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}``.
llama.cpp's converter does not keep those numbers: it evaluates them into one
divisor per rotary frequency (``rope_freqs.weight``, 1 for high frequencies,
``factor`` for low ones, a smooth blend between) and writes that tensor.

The backends (and every Hugging Face tool) take the parameters, not the
divisors, so they are solved for here. Only the divisors matter to the model,
and the llama3 rule depends on the three band parameters only through the
line ``smooth(x) = alpha * x + beta`` (``x = 1 / wavelength``) clipped to
[0, 1]; any parameters giving the same line give the same model. So the line
is fitted to the blended divisors (or placed between the bands when there are
fewer than two), ``low_freq_factor = 1`` fixes the rest, and the result is
checked by recomputing every divisor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Relative agreement required between the file's divisors and the recovered rule.
_TOLERANCE = 1e-4


def llama3_divisors(inv_freq: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """The per-frequency divisors Hugging Face's llama3 rule applies (float64)."""
    factor = params["factor"]
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    original = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (original / wavelen - low) / (high - low)
    divisors = 1.0 / ((1 - smooth) / factor + smooth)
    divisors = np.where(wavelen < original / high, 1.0, divisors)
    return np.where(wavelen > original / low, factor, divisors)


def rope_scaling_from_divisors(divisors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any] | None:
    """``rope_scaling`` equivalent to ``divisors``; None when they are all 1.

    Raises ValueError when no linear or llama3 rule reproduces them.
    """
    r = np.asarray(divisors, dtype=np.float64).reshape(-1)
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if r.shape != inv_freq.shape:
        raise ValueError(f"has {r.size} entries, head_dim {head_dim} implies {inv_freq.size}")
    if np.allclose(r, 1.0, rtol=_TOLERANCE):
        return None
    factor = float(r.max())
    if np.allclose(r, factor, rtol=_TOLERANCE):
        return {"rope_type": "linear", "factor": factor}

    x = inv_freq / (2 * math.pi)
    high_band = np.isclose(r, 1.0, rtol=_TOLERANCE)
    low_band = np.isclose(r, factor, rtol=_TOLERANCE)
    blended = ~(high_band | low_band)
    # smooth value of each blended entry, from r = 1 / ((1 - s) / factor + s)
    s = (1.0 / r - 1.0 / factor) / (1.0 - 1.0 / factor)
    x_low = x[low_band].max() if low_band.any() else 0.0  # below: divisor = factor
    x_high = x[high_band].min() if high_band.any() else 2 * x.max()  # above: divisor = 1
    if blended.sum() >= 2:
        alpha, beta = np.polyfit(x[blended], s[blended], 1)
    else:
        if blended.any():  # one blended point: a line through it crossing 0 and 1 inside the gaps
            xs, vs = float(x[blended][0]), float(s[blended][0])
            span = 0.5 * min((xs - x_low) / max(vs, 1e-12), (x_high - xs) / max(1 - vs, 1e-12))
            start, end = xs - vs * span, xs + (1 - vs) * span
        else:  # none: the blend sits strictly between the two bands
            gap = x_high - x_low
            start, end = x_low + gap / 3, x_high - gap / 3
        alpha = 1.0 / (end - start)
        beta = -alpha * start
    if not (alpha > 0 and beta < 0):
        raise ValueError("does not follow Llama 3's frequency-band rule")
    high_freq_factor = 1.0 - 1.0 / beta
    params = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": _tidy(high_freq_factor),
        "original_max_position_embeddings": _tidy(-alpha / beta),
    }
    if not np.allclose(llama3_divisors(inv_freq, params), r, rtol=_TOLERANCE):
        raise ValueError("does not follow Llama 3's frequency-band rule")
    return params


def _tidy(value: float) -> float | int:
    """A fitted value that is an integer up to rounding (8192, 4.0) written as one."""
    nearest = round(value)
    return int(nearest) if nearest and abs(value - nearest) <= 1e-6 * abs(nearest) else float(value)
