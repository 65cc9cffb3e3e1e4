"""Linear-attention backends: RWKV-4 and RWKV-7.

Both keep a fixed-size recurrent state per sequence instead of a KV cache
(``state_bytes_per_token == 0``). Registered through the ``agentd``
entry-point group like any third-party plugin; torch is imported only when a
model is loaded. RWKV-7 checkpoints ship as ``.pth`` state dicts: convert one
with :func:`agentd.plugins.linear.convert.convert_rwkv7_pth` first.
"""

from __future__ import annotations

from typing import Callable

from agentd.backend import BackendSpec
from agentd.hookspecs import hookimpl
from agentd.plugins import packed_loader


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="rwkv4",
            architectures=("RwkvForCausalLM",),
            load=packed_loader("agentd.plugins.linear.rwkv4"),
            requires=("torch",),
            description="RWKV-4 linear attention (chunked-parallel prefill, fixed-size recurrent state)",
        )
    )
    register(
        BackendSpec(
            name="rwkv7",
            architectures=("Rwkv7ForCausalLM",),
            load=packed_loader("agentd.plugins.linear.rwkv7"),
            requires=("torch",),
            description="RWKV-7 'Goose' generalised delta rule (chunked prefill, fixed-size recurrent state)",
        )
    )
