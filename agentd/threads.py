"""One intra-op thread count for every runtime in the process (torch and onnxruntime).

The ``threads`` setting (``--threads``, ``AGENTD_THREADS``, config key
``threads``) is recorded here once, by ``agentd serve``, and every runtime
sizes its pool from :func:`intra_op_threads`: serve applies it to torch's
process-wide pool, the ``onnxrt`` backend to each session it opens. Two
runtimes deciding separately could together oversubscribe the cores, which
on a 2-core device is what makes decode slow (docs/bench_onnx.md).

Torch-free: it only records a number.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_configured: int | None = None


def default_threads() -> int:
    """What ``threads = 0`` means: one less than the cores, at least 1.

    On small machines the gRPC loop and the OS need a core; on the measured
    2-core box this is one thread, which beat two for torch's batched decode
    and gRPC overhead and for onnxruntime decode (no pool to wake per kernel).
    """
    return max(1, (os.cpu_count() or 1) - 1)


def configure(threads: int) -> int:
    """Record the process's thread count (``0``: :func:`default_threads`); returns the count in force."""
    global _configured
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
    with _lock:
        _configured = threads or default_threads()
        return _configured


def apply(threads: int) -> int:
    """Record ``threads`` (:func:`configure`) and size torch's process-wide pool with it, if torch
    is installed; onnxruntime sessions read the recorded count when a bundle loads. Returns the count."""
    import importlib.util

    count = configure(threads)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(count)
    return count


def intra_op_threads() -> int:
    """Threads one runtime call may use: the configured count, else :func:`default_threads`."""
    with _lock:
        return _configured if _configured is not None else default_threads()


def reset() -> None:
    """Forget the configured count (tests use this)."""
    global _configured
    with _lock:
        _configured = None
