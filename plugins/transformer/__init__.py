"""Transformer backends: Llama-family decoders and BERT-family encoders (and token classifiers).

Registered through the ``agentd`` entry-point group like any third-party
plugin. Torch is imported only when a model is loaded.
"""

from __future__ import annotations

from agentd.backend import TORCH_QUANTS, Backend, BackendSpec
from agentd.checkpoint import Checkpoint
from agentd.hookspecs import hookimpl


def _load_decoder(checkpoint: Checkpoint, quant: str) -> Backend:
    from agentd.plugins.transformer.decoder import load

    return load(checkpoint, quant)


def _load_encoder(checkpoint: Checkpoint, quant: str) -> Backend:  # fp32 only (its spec says)
    from agentd.plugins.transformer.bert import load

    return load(checkpoint)


@hookimpl
def register_backends(register) -> None:
    register(
        BackendSpec(
            name="transformer",
            architectures=("LlamaForCausalLM", "Qwen2ForCausalLM"),
            load=_load_decoder,
            quantizations=TORCH_QUANTS,
            requires=("torch",),
            description="Llama-family decoder with FlashAttention-style tiled attention (KV cache grows per token)",
        )
    )
    register(
        BackendSpec(
            name="bert",
            architectures=("BertModel", "BertForTokenClassification"),
            load=_load_encoder,
            requires=("torch",),
            description="BERT-family encoder for sentence embeddings (mean pooling, L2 norm) and token classification",
        )
    )
