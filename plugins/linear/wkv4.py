"""The RWKV-4 WKV operator: recurrent step, its sequential reference, chunked form.

Per channel, with ``w < 0`` the per-step log decay (``-exp(time_decay)``) and
``u`` the bonus of the current token (``time_first``)::

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})

The running sums are kept as ``(num, den, max)``: the true sums are
``num * e^max`` and ``den * e^max``, so nothing overflows however large ``k``
grows (the ``(aa, bb, pp)`` of the original RWKV code, and Hugging Face's
``(num_state, den_state, max_state)``). All maths here is fp32.
"""

from __future__ import annotations

import torch

#: Log-scale of an empty state: e^(EMPTY + anything reasonable) == 0.
EMPTY_MAX = -1e38
#: Elements per intra-chunk temporary (1M floats = 4 MB).
_TEMP_ELEMENTS = 1 << 20


def wkv4_step(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    max_: torch.Tensor,
) -> torch.Tensor:
    """One token for a batch: ``k``, ``v``, state ``(B, C)``; ``w``, ``u`` ``(C,)``.

    Updates ``num``, ``den``, ``max_`` in place and returns ``wkv`` ``(B, C)``.
    """
    bonus = u + k
    peak = torch.maximum(max_, bonus)
    e_state = torch.exp(max_ - peak)
    e_token = torch.exp(bonus - peak)
    out = (e_state * num + e_token * v) / (e_state * den + e_token)

    decayed = max_ + w
    peak = torch.maximum(decayed, k)
    e_state = torch.exp(decayed - peak)
    e_token = torch.exp(k - peak)
    num.mul_(e_state).addcmul_(e_token, v)
    den.mul_(e_state).add_(e_token)
    max_.copy_(peak)
    return out


def wkv4_recurrent(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    max_: torch.Tensor,
) -> torch.Tensor:
    """Reference twin of :func:`wkv4_chunked`: ``T`` recurrent steps, ``(T, C)`` in and out."""
    out = torch.empty_like(k)
    for t in range(k.shape[0]):
        out[t] = wkv4_step(k[t : t + 1], v[t : t + 1], w, u, num[None], den[None], max_[None])[0]
    return out


def wkv4_chunked(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    max_: torch.Tensor,
    chunk: int = 16,
) -> torch.Tensor:
    """The same as :func:`wkv4_recurrent` for ``k``, ``v`` ``(T, C)``, in parallel form.

    Within each chunk of ``chunk`` tokens every (output, input) pair's log
    weight is formed explicitly and normalised by its row maximum, all chunks
    at once; only the carry of ``(num, den, max)`` from chunk to chunk is
    sequential (``T / chunk`` cheap steps). State ``(C,)`` is updated in place.
    """
    T = k.shape[0]
    full = T - T % chunk
    outs = []
    if full:
        C = k.shape[1]
        outs.append(_chunks(k[:full].view(-1, chunk, C), v[:full].view(-1, chunk, C), w, u, num, den, max_))
    if full < T:
        outs.append(_chunks(k[full:].unsqueeze(0), v[full:].unsqueeze(0), w, u, num, den, max_))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _chunks(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    num: torch.Tensor,
    den: torch.Tensor,
    max_: torch.Tensor,
) -> torch.Tensor:
    """``n`` consecutive chunks of equal length ``L``: ``k``, ``v`` ``(n, L, C)`` -> ``(n*L, C)``."""
    n, L, C = k.shape
    pos = torch.arange(L, dtype=k.dtype)

    # Intra-chunk weights: output t sees input i<t decayed (t-1-i) steps, and
    # itself with the bonus u; inputs after t are masked out. One (L, L, C)
    # table holds all of that, so the (n, L, L, C) logits take a single add.
    lag = (pos[:, None] - 1 - pos[None, :]).clamp_(min=0)  # (L, L)
    table = lag[:, :, None] * w  # (L_t, L_i, C)
    diagonal = torch.arange(L)
    table[diagonal, diagonal] = u
    table.masked_fill_(torch.ones(L, L, dtype=torch.bool).triu_(1)[:, :, None], float("-inf"))
    # A few chunks at a time: the (chunks, L, L, C) temporaries stay ~4 MB, in
    # cache and in malloc's free lists (whole-prompt ones were tens of MB and
    # page-faulted afresh on every call, which made prefill 3-5x slower).
    intra_max = torch.empty(n, L, C, dtype=k.dtype)
    intra_num = torch.empty(n, L, C, dtype=k.dtype)
    intra_den = torch.empty(n, L, C, dtype=k.dtype)
    group = max(1, _TEMP_ELEMENTS // (L * L * C))
    for g in range(0, n, group):
        part = slice(g, g + group)
        logits = table + k[part, None, :, :]  # (g, L_t, L_i, C)
        torch.amax(logits, dim=2, out=intra_max[part])
        weights = logits.sub_(intra_max[part, :, None]).exp_()
        torch.sum(weights, dim=2, out=intra_den[part])
        torch.sum(weights.mul_(v[part, None]), dim=2, out=intra_num[part])

    # What each chunk adds to the carried state: input i decayed to the chunk end.
    end_logits = (L - 1 - pos)[:, None] * w + k  # (n, L, C)
    end_max = end_logits.amax(dim=1)  # (n, C)
    end_weights = torch.exp(end_logits - end_max[:, None])
    end_num = (end_weights * v).sum(dim=1)  # (n, C)
    end_den = end_weights.sum(dim=1)

    # Sequential carry: the state entering every chunk.
    carried = torch.empty(3, n, C, dtype=k.dtype)  # (num, den, max) per chunk start
    for j in range(n):
        carried[0, j], carried[1, j], carried[2, j] = num, den, max_
        decayed = max_ + L * w
        peak = torch.maximum(decayed, end_max[j])
        e_state = torch.exp(decayed - peak)
        e_chunk = torch.exp(end_max[j] - peak)
        num.mul_(e_state).addcmul_(e_chunk, end_num[j])
        den.mul_(e_state).addcmul_(e_chunk, end_den[j])
        max_.copy_(peak)

    # Output t also sees the entering state, decayed t steps.
    state_log = carried[2][:, None] + pos[None, :, None] * w  # (n, L, C)
    peak = torch.maximum(intra_max, state_log)
    e_intra = torch.exp(intra_max - peak)
    e_state = torch.exp(state_log - peak)
    out = (e_intra * intra_num + e_state * carried[0][:, None]) / (e_intra * intra_den + e_state * carried[1][:, None])
    return out.reshape(n * L, C)
