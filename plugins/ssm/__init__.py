"""State-space backends: Mamba and Mamba-2.

Both keep a fixed-size state per sequence (the last ``conv_kernel - 1``
inputs of each causal conv plus the SSM state) instead of a KV cache, so
``state_bytes_per_token == 0``. Registered through the ``agentd`` entry-point
group like any third-party plugin; torch is imported only when a model is
loaded.
"""

from __future__ import annotations

from typing import Callable

from agentd.backend import TORCH_QUANTS, BackendSpec
from agentd.hookspecs import hookimpl
from agentd.plugins import packed_loader


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="mamba",
            architectures=("MambaForCausalLM",),
            load=packed_loader("agentd.plugins.ssm.mamba"),
            quantizations=TORCH_QUANTS,
            requires=("torch",),
            description="Mamba selective SSM (chunked parallel scan prefill, fixed-size conv+ssm state)",
        )
    )
    register(
        BackendSpec(
            name="mamba2",
            architectures=("Mamba2ForCausalLM",),
            load=packed_loader("agentd.plugins.ssm.mamba2"),
            quantizations=TORCH_QUANTS,
            requires=("torch",),
            description="Mamba-2 state-space duality (chunked SSD prefill, fixed-size conv+ssm state)",
        )
    )
