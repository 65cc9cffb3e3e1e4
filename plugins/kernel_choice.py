"""Which projection kernel each weight shape runs with on *this* CPU: measured once, cached per CPU model.

The oneDNN-packed inner product (:mod:`.projection`) was chosen on an AMD EPYC,
where it beat ``F.linear`` at every batch size; on an Intel Xeon with AMX it
lost (0.20 ms against 0.095 ms for a 1536x576 weight at one row) while still
winning on the LM head. So nothing is decided on a development machine: the
first time a backend packs a weight shape, both kernels run it for one row (a
decode step, the latency that matters), interleaved, and the faster one wins
(each kernel's fastest sweep: load on the machine only adds time). A decode
step reads every weight from memory once, so the kernels are timed the same
way: each sweep runs over enough copies of the weight (:data:`STREAM_BYTES`)
that none is still in the CPU's caches when it comes round again. (Timing one
weight over and over measured the cache, not memory, and picked ``F.linear``
for a 576x576 weight that then ran 4x slower than packed in the model.) The verdict is cached in
``$AGENTD_CACHE_DIR/kernels.json`` (default ``~/.cache/agentd``) under the CPU
model, torch version and thread count, so later loads cost nothing.

``AGENTD_PROJECTION=packed`` or ``dense`` forces one kernel (tests, comparisons);
the default is ``measure``. :func:`choices` says what was picked, for the
benchmarks' reports.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from agentd.errors import AgentdError

log = logging.getLogger(__name__)

ENV = "AGENTD_PROJECTION"
MODES = ("measure", "packed", "dense")
#: Timed sweeps per kernel (after warm-up), interleaved so both see the same machine.
REPEATS = 8
WARMUP = 1
#: Bytes of weight copies one sweep reads: more than a CPU's last-level cache.
STREAM_BYTES = 160 * 2**20
#: Most copies of one weight a sweep uses (small weights: enough calls to average over).
MAX_COPIES = 256
#: Version of the measuring method, part of the cache key (verdicts of older methods are not reused).
METHOD = "streamed-v2"
#: How much faster (fraction) the dense kernel must be at one row to be chosen.
MARGIN = 0.05

_lock = threading.Lock()
#: This process's verdicts: ``"OUTxIN"`` -> (kernel, packed ms, dense ms).
_chosen: dict[str, tuple[str, float | None, float | None]] = {}


def mode() -> str:
    value = os.environ.get(ENV, "measure").strip().lower() or "measure"
    if value not in MODES:
        raise AgentdError(f"{ENV} must be one of {', '.join(MODES)} (got {value!r})")
    return value


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cache_path() -> Path:
    root = os.environ.get("AGENTD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "agentd")
    return Path(root) / "kernels.json"


def machine_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {METHOD}"


def choose(weight: torch.Tensor, pack: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """``"packed"`` or ``"dense"`` for ``weight``'s shape on this machine (``pack`` makes the packed copy)."""
    forced = mode()
    shape = "x".join(str(d) for d in weight.shape)
    if forced != "measure":
        _chosen.setdefault(shape, (forced, None, None))
        return forced
    with _lock:
        if shape in _chosen:
            return _chosen[shape][0]
        cached = _read_cache().get(machine_key(), {}).get(shape)
        if cached is not None and cached.get("kernel") in ("packed", "dense"):
            _chosen[shape] = (cached["kernel"], cached.get("packed_ms"), cached.get("dense_ms"))
            return cached["kernel"]
        packed_ms, dense_ms = measure(weight, pack)
        # Dense must win clearly: packing also serves prefill chunks, where it has not lost yet.
        kernel = "dense" if dense_ms < packed_ms * (1 - MARGIN) else "packed"
        _chosen[shape] = (kernel, packed_ms, dense_ms)
        _write_cache(shape, {"kernel": kernel, "packed_ms": round(packed_ms, 5), "dense_ms": round(dense_ms, 5)})
        log.info("projection %s on this CPU: %s (packed %.4f ms, dense %.4f ms at one row from memory, fastest of %d sweeps)", shape, kernel, packed_ms, dense_ms, REPEATS)
        return kernel


def measure(weight: torch.Tensor, pack: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """Milliseconds of one row through ``weight`` read from memory, packed and dense.

    Each kernel sweeps over copies of the weight (random values of its shape and
    dtype: the values do not change the time) totalling :data:`STREAM_BYTES`;
    the per-call time is the fastest sweep divided by the copies, which is what
    the kernel costs when nothing else runs (a busy machine adds noise, never speed).
    """
    from .projection import linear

    copies = max(2, min(MAX_COPIES, -(-STREAM_BYTES // (weight.numel() * weight.element_size()))))
    dense = [weight] + [torch.randn_like(weight) for _ in range(copies - 1)]
    packed = [pack(copy) for copy in dense]
    x = torch.randn(1, weight.shape[1], dtype=weight.dtype)

    def sweep(kernel: Callable[[torch.Tensor], object], weights: list[torch.Tensor]) -> None:
        for w in weights:
            kernel(w)

    sweeps = {
        "packed": lambda: sweep(lambda w: linear(x, w, None), packed),
        "dense": lambda: sweep(lambda w: F.linear(x, w, None), dense),
    }
    times: dict[str, list[float]] = {name: [] for name in sweeps}
    with torch.inference_mode():
        for _ in range(WARMUP):
            for run in sweeps.values():
                run()
        for _ in range(REPEATS):
            for name, run in sweeps.items():
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000 / copies)
    return min(times["packed"]), min(times["dense"])


def reset() -> None:
    """Forget this process's verdicts (the cache file stays): the next pack decides again."""
    with _lock:
        _chosen.clear()


def choices() -> dict[str, tuple[str, float | None, float | None]]:
    """Every weight shape this process chose a kernel for: (kernel, packed ms, dense ms)."""
    return dict(_chosen)


def summary() -> str:
    """One line for reports: ``packed for 576x576, 49152x576; dense for 1536x576 (measured on <CPU>)``."""
    by_kernel: dict[str, list[str]] = {}
    for shape, (kernel, _, _) in sorted(_chosen.items()):
        by_kernel.setdefault(kernel, []).append(shape)
    picked = "; ".join(f"{kernel} for {', '.join(shapes)}" for kernel, shapes in sorted(by_kernel.items()))
    how = "forced by " + ENV if mode() != "measure" else f"measured on {cpu_model()}"
    return f"{picked or 'no projections packed'} ({how})"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(shape: str, verdict: dict) -> None:
    """Add one verdict (write to a temporary file, then rename); a cache that cannot be written is only a warning."""
    path = cache_path()
    data = _read_cache()
    data.setdefault(machine_key(), {})[shape] = verdict
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".kernels.", suffix=".tmp", delete=False) as tmp:
            json.dump(data, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError as exc:
        log.warning("could not cache the projection kernel choice in %s: %s", path, exc)
