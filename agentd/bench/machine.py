"""What the benchmark ran on: the CPU and its vector extensions, memory, library versions, kernel picks."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: CPU flags that decide which kernels run fast (``lscpu`` names).
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
#: Distributions whose versions the report names.
PACKAGES = ("agentd", "torch", "transformers", "onnxruntime", "onnxruntime-genai", "llama-cpp-python", "numpy")


def cpu_name() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo`` where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from agentd.plugins.kernel_choice import cpu_model

    return cpu_model()


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in INTERESTING_FLAGS if flag in present]
    return []


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe(threads: int) -> dict[str, Any]:
    """The machine and software, for the report's header."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    except (ValueError, OSError):
        memory_gib = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu_name(),
        "flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions(),
        "load_average_at_start": load,
    }


def forget_kernel_choices() -> int:
    """Drop this CPU's cached projection-kernel verdicts, so the next load measures them again; how many went.

    The cache (:mod:`agentd.plugins.kernel_choice`) keys verdicts by CPU model, torch version
    and thread count; every entry of this CPU model goes, whatever the rest of its key.
    """
    from agentd.plugins.kernel_choice import cache_path, cpu_model

    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict):
        return 0
    mine = [key for key in data if key.split(" | ")[0] == cpu_model()]
    if not mine:
        return 0
    kept = {key: value for key, value in data.items() if key not in mine}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".kernels.", suffix=".tmp", delete=False) as tmp:
        json.dump(kept, tmp, indent=1, sort_keys=True)
    os.replace(tmp.name, path)
    return sum(len(data[key]) for key in mine if isinstance(data[key], dict))
