"""Mamba-2 state-space duality (SSD): a sequential reference, the chunked form, one step.

The recurrence, per head ``h`` (group ``g = h // (H / G)``), head channel
``p`` and state index ``n``::

    S_t[h, p, n] = exp(dt_t[h] * A[h]) * S_{t-1}[h, p, n] + dt_t[h] * x_t[h, p] * B_t[g, n]
    y_t[h, p]    = sum_n C_t[g, n] * S_t[h, p, n]

(the ``D`` skip, gate and norm are applied by the mixer). The decay is one
scalar per head and token, so inside a chunk the map from inputs to outputs is
a masked "attention" ``(C B^T) * exp(segsum(dt A))`` computed with matmuls;
between chunks only the ``(H, P, N)`` state is carried (Mamba-2 paper, section
"minimal SSD"). Every ``exp`` is of a non-positive number, so the form is
stable in fp32.
"""

from __future__ import annotations

import torch

#: Tokens per chunk: the intra-chunk work grows with ``L`` per token, the
#: number of sequential chunk steps with ``T / L``; 64 balances the two on CPU.
DEFAULT_CHUNK = 64


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``out[..., t, s] = a[..., s+1] + ... + a[..., t]`` for ``s <= t``, ``-inf`` above.

    Built by a masked cumulative sum rather than a difference of two cumsums,
    so it does not lose precision when the running sums are large.
    """
    length = a.shape[-1]
    expanded = a[..., None].expand(*a.shape, length)  # (..., L_t, L_s): column s repeats a
    strict = torch.ones(length, length, dtype=torch.bool, device=a.device).tril(-1)
    sums = expanded.masked_fill(~strict, 0).cumsum(dim=-2)
    causal = torch.ones(length, length, dtype=torch.bool, device=a.device).tril()
    return sums.masked_fill(~causal, float("-inf"))


def ssd_ref(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Readable per-token loop: the ground truth the chunked form is tested against.

    :param x: ``(T, H, P)`` input after the causal conv and activation.
    :param dt: ``(T, H)`` time steps after softplus and clamping.
    :param A: ``(H,)`` continuous decay rates (negative).
    :param B: ``(T, G, N)`` and ``C``: ``(T, G, N)`` per-group input/output matrices.
    :param h0: ``(H, P, N)`` state before the first token (not modified).
    :returns: ``y`` ``(T, H, P)`` and the final state ``(H, P, N)``.
    """
    heads_per_group = x.shape[1] // B.shape[1]
    B_heads = B.repeat_interleave(heads_per_group, dim=1)  # (T, H, N)
    C_heads = C.repeat_interleave(heads_per_group, dim=1)  # (T, H, N)
    state = h0.clone()
    ys = []
    for t in range(x.shape[0]):
        decay = torch.exp(dt[t] * A)  # (H,)
        state = decay[:, None, None] * state + (dt[t, :, None] * x[t])[:, :, None] * B_heads[t][:, None, :]
        ys.append(torch.einsum("hpn,hn->hp", state, C_heads[t]))
    y = torch.stack(ys) if ys else x.new_empty(0, *x.shape[1:])
    return y, state


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`ssd_ref`, in the chunked SSD form."""
    T, H, P = x.shape
    G = B.shape[1]
    R = H // G  # heads per group
    y = x.new_empty(T, H, P)
    state = h0.view(G, R, P, -1)  # (G, R, P, N)
    log_decay = dt * A  # (T, H), <= 0
    xdt = (x * dt[:, :, None]).view(T, G, R, P)
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        length = stop - start
        a = log_decay[start:stop]  # (L, H)
        a_cum = a.cumsum(0)  # (L, H)
        xs, Bs, Cs = xdt[start:stop], B[start:stop], C[start:stop]
        # Intra-chunk: causal "attention" of C against B, weighted by the decay from s to t.
        decay = torch.exp(segsum(a.T)).view(G, R, length, length)  # (G, R, L_t, L_s)
        scores = torch.einsum("tgn,sgn->gts", Cs, Bs)  # (G, L_t, L_s)
        y_diag = torch.einsum("grts,sgrp->tgrp", decay * scores[:, None], xs)  # (L, G, R, P)
        # Carried-in state, decayed to each position of the chunk.
        decay_in = torch.exp(a_cum).view(length, G, R, 1)
        y_off = torch.einsum("tgn,grpn->tgrp", Cs, state) * decay_in  # (L, G, R, P)
        y[start:stop] = (y_diag + y_off).view(length, H, P)
        # State at the chunk's end: old state decayed over the chunk + each input decayed to the end.
        decay_out = torch.exp(a_cum[-1] - a_cum).view(length, G, R, 1)  # (L, G, R, 1)
        chunk_total = torch.exp(a_cum[-1]).view(G, R, 1, 1)
        state = state * chunk_total + torch.einsum("sgn,sgrp->grpn", Bs, xs * decay_out)
    return y, state.reshape(H, P, -1).clone()


def ssd_step(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """One recurrent step for a batch, updating ``state`` ``(Bt, H, P, N)`` in place.

    :param x: ``(Bt, H, P)``; ``dt``: ``(Bt, H)``; ``B``, ``C``: ``(Bt, G, N)``.
    :returns: ``y`` ``(Bt, H, P)``.
    """
    batch, H, P = x.shape
    G, N = B.shape[1], B.shape[2]
    grouped = state.view(batch, G, H // G, P, N)  # (Bt, G, R, P, N)
    xdt = (x * dt[:, :, None]).view(batch, G, H // G, P, 1)
    # In place and without an (Bt, H, P, N) temporary: the state is the largest
    # thing a decode step touches besides the weights.
    grouped.mul_(torch.exp(dt * A).view(batch, G, -1, 1, 1)).addcmul_(xdt, B.view(batch, G, 1, 1, N))
    # vecdot over N: 4-5x faster than the broadcast matmul at batch 1 and 8 (G = 1 or 8).
    return torch.linalg.vecdot(grouped, C.view(batch, G, 1, 1, N)).view(batch, H, P)
