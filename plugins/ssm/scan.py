"""Mamba-1 selective scan: a sequential reference, a chunked parallel form, one step.

The recurrence, per channel ``d`` and state index ``n``::

    h_t[d, n] = exp(dt_t[d] * A[d, n]) * h_{t-1}[d, n] + dt_t[d] * x_t[d] * B_t[n]
    y_t[d]    = sum_n C_t[n] * h_t[d, n]

(the ``D`` skip and the ``silu(z)`` gate are applied by the mixer, not here).

Unlike Mamba-2, the decay depends on both ``d`` and ``n``, so the intra-chunk
"attention" form (segsum + matmul) would cost ``L`` times the work of the
scan itself (a ``(D, N, L, L)`` decay tensor per chunk), and the factored form
``exp(S_t) * cumsum(exp(-S_s) * u_s)`` overflows once a chunk's decay exceeds
e^88. The chunked form here is instead a log-depth (Hillis-Steele) scan inside
each chunk over ``(L, D, N)`` ping-pong buffers, with the state carried
between chunks. It only ever multiplies by decays in ``(0, 1]``, so it is
stable in fp32 whatever ``dt`` and ``A`` are. It does ``~log2(L)`` times the
elementwise work of the sequential loop but in ``T / L`` times fewer, larger
ops that torch can spread over cores (see ``docs/bench_ssm.md`` for figures).
"""

from __future__ import annotations

import torch

#: Tokens per chunk of the parallel scan. The log-depth scan does
#: ``log2(L)`` passes over ``(L, D, N)`` per chunk, so short chunks do less
#: work per token while longer ones amortise per-op overhead; at Mamba-130m's
#: shape (D=1536, N=16) 8 measured best (CPU time, one thread).
DEFAULT_CHUNK = 8


def selective_scan_ref(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Readable per-token loop: the ground truth the fast forms are tested against.

    :param x: ``(T, D)`` input after the causal conv and activation.
    :param dt: ``(T, D)`` time steps after softplus.
    :param A: ``(D, N)`` continuous decay rates (negative).
    :param B: ``(T, N)`` input matrix per token.
    :param C: ``(T, N)`` output matrix per token.
    :param h0: ``(D, N)`` state before the first token (not modified).
    :returns: ``y`` ``(T, D)`` and the final state ``(D, N)``.
    """
    h = h0.clone()
    ys = []
    for t in range(x.shape[0]):
        decay = torch.exp(dt[t, :, None] * A)  # (D, N)
        h = decay * h + (dt[t] * x[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t])  # (D,)
    y = torch.stack(ys) if ys else x.new_empty(0, x.shape[1])
    return y, h


def selective_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`selective_scan_ref`, in the chunked parallel form.

    Inside a chunk, each position holds the pair ``(a, b)`` of the affine map
    ``h -> a * h + b``; composing maps over doubling offsets (1, 2, 4, ...)
    leaves ``b_t = h_t`` after ``log2(L)`` rounds, because the carried-in
    state is folded into the first position's ``b``. Each round reads one
    buffer and writes the other (``out=``), so a round is one fused pass and
    nothing is allocated per round.
    """
    T, D = x.shape
    N = A.shape[1]
    y = x.new_empty(T, D)
    h = h0
    dtx = dt * x  # (T, D)
    buffers = [x.new_empty(min(chunk, T), D, N) for _ in range(4)]  # (L, D, N) each
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        length = stop - start
        decay, states, decay_next, states_next = (buffer[:length] for buffer in buffers)
        torch.mul(dt[start:stop, :, None], A, out=decay).exp_()
        torch.mul(dtx[start:stop, :, None], B[start:stop, None, :], out=states)
        states[0].addcmul_(decay[0], h)
        offset = 1
        while offset < length:
            torch.addcmul(states[offset:], decay[offset:], states[:-offset], out=states_next[offset:])
            states_next[:offset].copy_(states[:offset])
            states, states_next = states_next, states
            if offset * 2 < length:  # the last round's decays are never read
                torch.mul(decay[offset:], decay[:-offset], out=decay_next[offset:])
                decay_next[:offset].copy_(decay[:offset])
                decay, decay_next = decay_next, decay
            offset *= 2
        torch.linalg.vecdot(states, C[start:stop, None, :], out=y[start:stop])  # (L, D); beats bmm here
        h = states[-1].clone()  # the buffers are reused by the next chunk
    return y, h if T else h0.clone()


def selective_scan_step(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """One recurrent step for a batch, updating ``state`` ``(Bt, D, N)`` in place.

    :param x: ``(Bt, D)``; ``dt``: ``(Bt, D)``; ``B``, ``C``: ``(Bt, N)``.
    :returns: ``y`` ``(Bt, D)``.
    """
    state.mul_((dt[:, :, None] * A).exp_()).addcmul_((dt * x)[:, :, None], B[:, None, :])
    return torch.linalg.vecdot(state, C[:, None, :])  # (Bt, D)
