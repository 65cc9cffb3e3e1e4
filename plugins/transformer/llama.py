"""Llama-family decoder (LlamaForCausalLM, Qwen2ForCausalLM) in plain torch, for inference.

Pre-norm blocks: RMSNorm -> grouped-query attention with rotary positions ->
residual; RMSNorm -> SwiGLU MLP -> residual; a final RMSNorm and the LM head
(tied to the embedding or not). Qwen2 is the same network with biases on the
q/k/v projections.

Built for decode on a few CPU cores, which is memory-bandwidth bound: q/k/v
are fused into one weight and gate/up into another when the checkpoint is
read, so a step runs three big matmuls per layer instead of seven; every
projection runs over all the rows of the batch at once, so a batch of B
sequences reads the weights once, not B times. Attention (see
:mod:`.attention`): a prompt chunk attends over its own sequence's cache; a
decode step of several sequences runs one masked call per layer over the
slot arena that holds their caches (:mod:`.kv_cache`), not one per sequence.

:meth:`LlamaModel.pack_weights` (the serving backend calls it) reorders the
projection weights for oneDNN's inner-product kernels when torch has it (the
kernel lives in :mod:`agentd.plugins.projection`, shared by every torch backend). One
decode step's projections at SmolLM2-135M's shape (30 layers + the LM head),
measured on the 2-core AMD EPYC development machine (torch 2.13, MKL 2024.2,
1 thread, quiet machine): ``F.linear`` on the checkpoint's row-major weights
34.9 / 66.9 / 86.7 ms at batch 1 / 8 / 16, on column-major weights
26.0 / 67.7 / 82.6 ms, oneDNN packed 18.9 / 29.2 / 36.8 ms; with 2 threads the
packed kernels' lead grows (19.5 vs 47.6 ms at batch 8). Prefill-sized row
counts ran ~2x faster packed as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from agentd.errors import ModelLoadError
from agentd.plugins.norm import rms_norm
from agentd.plugins.projection import embedding, linear, prepare_weight
from agentd.plugins.quantized import QuantizedWeight, quantize
from agentd.plugins.weights import WeightReader, layer_tensors, resident_bytes

from .attention import attention, batched_decode_attention, decode_attention
from .kv_cache import DecodePlan, KVCache

#: Rows of hidden state pushed through an MLP at once. Bounds the
#: ``(rows, 2 * intermediate)`` activation of a long prefill without slowing it.
MLP_ROWS = 1024

#: RoPE variants understood (``rope_type`` of ``rope_parameters`` / ``rope_scaling``)
#: and the parameters each needs.
ROPE_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclass
class LlamaConfig:
    """The fields of a Hugging Face ``config.json`` this model needs."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    #: ``default``, ``linear`` or ``llama3``.
    rope_type: str = "default"
    #: The other ``rope_parameters`` / ``rope_scaling`` entries (``factor``, ...).
    rope_params: dict[str, Any] = field(default_factory=dict)
    #: Per-head width; ``hidden_size // num_attention_heads`` when the config omits it.
    head_dim: int = 0
    tie_word_embeddings: bool = False
    #: Biases on q/k/v (Qwen2 always, Llama with ``attention_bias``).
    qkv_bias: bool = False
    #: Bias on o_proj (Llama with ``attention_bias``).
    o_bias: bool = False
    #: Biases on gate/up/down (Llama with ``mlp_bias``).
    mlp_bias: bool = False

    # Derived in __post_init__.
    q_size: int = field(init=False)
    kv_size: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.q_size = self.num_attention_heads * self.head_dim
        self.kv_size = self.num_key_value_heads * self.head_dim

    @classmethod
    def from_hf(cls, config: dict[str, Any], path: Path) -> "LlamaConfig":
        """Read ``config.json`` (transformers 4.x or 5.x layout); problems name the field."""

        def need(name: str) -> Any:
            value = config.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelLoadError(path, f"'{name}' must be a positive integer, got {value!r}")
            return value

        architecture = config["architectures"][0]
        qwen2 = architecture == "Qwen2ForCausalLM"
        heads = need("num_attention_heads")
        kv_heads = config.get("num_key_value_heads") or heads
        if not isinstance(kv_heads, int) or heads % kv_heads:
            raise ModelLoadError(path, f"'num_key_value_heads' ({kv_heads!r}) must divide num_attention_heads ({heads})")
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise ModelLoadError(path, f"'hidden_act' {act!r} is not supported (only silu)")
        if config.get("use_sliding_window"):
            raise ModelLoadError(path, "'use_sliding_window' is not supported")
        hidden = need("hidden_size")
        head_dim = config.get("head_dim") or 0
        if not head_dim and hidden % heads:
            raise ModelLoadError(path, f"'hidden_size' {hidden} is not a multiple of num_attention_heads {heads}")

        # transformers 5.x writes `rope_parameters` (theta inside); 4.x wrote
        # `rope_scaling` (`type` or `rope_type`) and a top-level `rope_theta`.
        rope: dict[str, Any] = {}
        for key in ("rope_scaling", "rope_parameters"):
            value = config.get(key)
            if isinstance(value, dict):
                rope.update(value)
            elif value is not None:
                raise ModelLoadError(path, f"'{key}' must be an object, got {value!r}")
        theta = float(rope.pop("rope_theta", config.get("rope_theta", 10000.0)))
        legacy_type = rope.pop("type", "default")
        rope_type = rope.pop("rope_type", legacy_type)
        if rope_type not in ROPE_TYPES:
            raise ModelLoadError(path, f"'rope_type' {rope_type!r} is not supported ({', '.join(ROPE_TYPES)})")
        for name in ROPE_TYPES[rope_type]:
            if not isinstance(rope.get(name), (int, float)):
                raise ModelLoadError(path, f"rope_type {rope_type!r} needs a number '{name}'")
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise ModelLoadError(path, "'partial_rotary_factor' other than 1.0 is not supported")

        attention_bias = bool(config.get("attention_bias", False))
        return cls(
            architecture=architecture,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=need("max_position_embeddings"),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_type=rope_type,
            rope_params=rope,
            head_dim=head_dim,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=qwen2 or attention_bias,
            o_bias=attention_bias and not qwen2,
            mlp_bias=bool(config.get("mlp_bias", False)) and not qwen2,
        )


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """``theta ** (-2i / head_dim)``, rescaled per ``rope_type`` (float32, ``(head_dim/2,)``)."""
    dim = config.head_dim
    # Same expression and dtypes as the reference so the tables agree bit for bit.
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    params = config.rope_params  # LlamaConfig.from_hf checked the entries each type needs
    if config.rope_type == "linear":
        return inv_freq / float(params["factor"])
    if config.rope_type == "llama3":
        factor = float(params["factor"])
        low_freq_factor = float(params["low_freq_factor"])
        high_freq_factor = float(params["high_freq_factor"])
        old_context = float(params["original_max_position_embeddings"])
        low_freq_wavelen = old_context / low_freq_factor
        high_freq_wavelen = old_context / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are stretched by `factor`, short ones kept, the band between interpolated.
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


class RotaryEmbedding:
    """cos/sin tables of rotary positions, grown by doubling up to the context length."""

    def __init__(self, inv_freq: torch.Tensor, max_positions: int):
        self.inv_freq = inv_freq
        self.max_positions = max_positions
        self.cos = torch.empty(0, inv_freq.numel())
        self.sin = torch.empty(0, inv_freq.numel())

    def _grow(self, end: int) -> None:
        if end > self.cos.shape[0]:
            size = min(max(end, 2 * self.cos.shape[0], 256), max(self.max_positions, end))
            angles = torch.outer(torch.arange(size, dtype=torch.float32), self.inv_freq)  # (P, D/2)
            self.cos, self.sin = angles.cos(), angles.sin()

    def span(self, start: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``(1, T, 1, head_dim/2)`` of positions ``start .. start+T-1`` (views, no gather)."""
        self._grow(start + steps)
        return self.cos[start : start + steps, None].unsqueeze(0), self.sin[start : start + steps, None].unsqueeze(0)

    def lookup(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``(B, T, 1, head_dim/2)`` for arbitrary ``positions`` ``(B, T)``."""
        self._grow(int(positions.max()) + 1)
        return self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)


@dataclass
class DecoderLayer:
    """One block's weights, with q/k/v and gate/up fused along the output dimension."""

    attn_norm: torch.Tensor  # (C,)
    qkv_weight: torch.Tensor  # (q_size + 2 kv_size, C)
    qkv_bias: torch.Tensor | None
    o_weight: torch.Tensor  # (C, q_size)
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor  # (C,)
    gate_up_weight: torch.Tensor  # (2 I, C): gate rows then up rows
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor  # (C, I)
    down_bias: torch.Tensor | None


class LlamaModel:
    """Weights plus the forward pass over per-sequence KV caches."""

    #: Decode batches at least this large attend in one masked call per layer
    #: (:meth:`_decode_attend_batched`); smaller ones loop over their sequences
    #: (:meth:`_decode_attend`, fewer op calls for one row). Benchmarks raise it
    #: to measure the loop against the batched call side by side.
    batched_decode_from: int = 2

    def __init__(self, config: LlamaConfig, path: Path):
        """Allocate float32 weights of the right shapes; :meth:`load` fills them.

        ``path`` (the checkpoint directory) is named by loading errors.
        """
        self.config = config
        c = config
        hidden, inter = c.hidden_size, c.intermediate_size
        qkv_rows = c.q_size + 2 * c.kv_size

        def bias(enabled: bool, size: int) -> torch.Tensor | None:
            return torch.empty(size) if enabled else None

        self.embed = torch.empty(c.vocab_size, hidden)
        self.layers = [
            DecoderLayer(
                attn_norm=torch.empty(hidden),
                qkv_weight=torch.empty(qkv_rows, hidden),
                qkv_bias=bias(c.qkv_bias, qkv_rows),
                o_weight=torch.empty(hidden, c.q_size),
                o_bias=bias(c.o_bias, hidden),
                mlp_norm=torch.empty(hidden),
                gate_up_weight=torch.empty(2 * inter, hidden),
                gate_up_bias=bias(c.mlp_bias, 2 * inter),
                down_weight=torch.empty(hidden, inter),
                down_bias=bias(c.mlp_bias, hidden),
            )
            for _ in range(c.num_hidden_layers)
        ]
        self.norm = torch.empty(hidden)
        self.lm_head = self.embed if c.tie_word_embeddings else torch.empty(c.vocab_size, hidden)
        self.rotary = RotaryEmbedding(rope_inverse_frequencies(c), c.max_position_embeddings)
        self.path = path

    # -- weights ---------------------------------------------------------------
    def _destinations(self) -> dict[str, torch.Tensor]:
        """Hugging Face tensor name -> the (slice of a fused) tensor it fills."""
        c = self.config
        q, kv, inter = c.q_size, c.kv_size, c.intermediate_size
        out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": self.embed, "model.norm.weight": self.norm}
        if not c.tie_word_embeddings:
            out["lm_head.weight"] = self.lm_head
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            out[p + "input_layernorm.weight"] = layer.attn_norm
            out[p + "post_attention_layernorm.weight"] = layer.mlp_norm
            for part, tensor in (("weight", layer.qkv_weight), ("bias", layer.qkv_bias)):
                if tensor is not None:
                    out[p + f"self_attn.q_proj.{part}"] = tensor[:q]
                    out[p + f"self_attn.k_proj.{part}"] = tensor[q : q + kv]
                    out[p + f"self_attn.v_proj.{part}"] = tensor[q + kv :]
            out[p + "self_attn.o_proj.weight"] = layer.o_weight
            if layer.o_bias is not None:
                out[p + "self_attn.o_proj.bias"] = layer.o_bias
            for part, tensor in (("weight", layer.gate_up_weight), ("bias", layer.gate_up_bias)):
                if tensor is not None:
                    out[p + f"mlp.gate_proj.{part}"] = tensor[:inter]
                    out[p + f"mlp.up_proj.{part}"] = tensor[inter:]
            out[p + "mlp.down_proj.weight"] = layer.down_weight
            if layer.down_bias is not None:
                out[p + "mlp.down_proj.bias"] = layer.down_bias
        return out

    def load(self, tensors: "WeightReader | Iterable[tuple[str, torch.Tensor]]") -> None:
        """Copy Hugging Face tensors into place, converting to float32 as they stream in.

        ``tensors`` is a :class:`~agentd.plugins.weights.WeightReader` (the
        serving loader's) or the pairs of ``checkpoint.tensors("pt")`` (the ONNX
        exporter's), read through one. Each tensor is copied straight into its
        slice of the fused weights, so loading never holds more than the model
        plus one checkpoint tensor. Unknown, missing, duplicate or misshapen
        tensors raise ModelLoadError naming them.
        """
        reader = tensors if isinstance(tensors, WeightReader) else WeightReader.from_stream(tensors, self.path)
        tied = self.config.tie_word_embeddings
        reader.fill(
            self._destinations(),
            architecture=self.config.architecture,
            # A buffer older transformers saved (recomputed from config.json); a tied head is the embedding.
            skip=lambda name: name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"),
        )

    def pack_weights(self, quant: str = "fp32") -> None:
        """Prepare every projection and the LM head for serving in ``quant``; see :func:`prepare_weight`.

        Call once after :meth:`load`, before serving. The dense weights are
        dropped (the ONNX exporter, which reads them, never calls this).

        * ``fp32``: weights packed for oneDNN. A tied head gets its own packed
          copy, since the embedding lookup needs the dense table: ``vocab x
          hidden`` floats more, for a head ~3-5x faster at batch 8.
        * ``int8`` / ``int4``: the projections in that encoding; the LM head
          in int8 either way (what llama.cpp's files keep at 6-8 bits too: it
          is where 4 bits cost the most quality), and the embedding an int8
          table — the head itself when tied, so the vocabulary is held once.
        """
        for layer in self.layers:
            layer.qkv_weight = prepare_weight(layer.qkv_weight, quant)
            layer.o_weight = prepare_weight(layer.o_weight, quant)
            layer.gate_up_weight = prepare_weight(layer.gate_up_weight, quant)
            layer.down_weight = prepare_weight(layer.down_weight, quant)
        head_quant = "fp32" if quant == "fp32" else "int8"
        tied = self.lm_head is self.embed
        self.lm_head = prepare_weight(self.lm_head, head_quant)
        if quant != "fp32":
            # quantize() hands back the dense table for a shape the int8 kernel does not take.
            self.embed = self.lm_head if tied and isinstance(self.lm_head, QuantizedWeight) else quantize(self.embed, 8)

    def resident_bytes(self) -> int:
        """Bytes of every weight held now: packed copies counted, a dense tied head once."""
        return resident_bytes(layer_tensors(self.embed, self.norm, self.lm_head, *self.layers))

    def parameter_count(self) -> int:
        """Parameters as the checkpoint stores them (a tied head counted once)."""
        tensors = [self.embed, self.norm]
        if not self.config.tie_word_embeddings:
            tensors.append(self.lm_head)
        for layer in self.layers:
            tensors += [t for t in vars(layer).values() if t is not None]
        return sum(t.numel() for t in tensors)

    # -- forward ---------------------------------------------------------------
    def forward(self, token_ids: torch.Tensor, caches: Sequence[KVCache], all_logits: bool) -> torch.Tensor:
        """Run ``token_ids`` ``(B, T)`` after what each of the ``B`` caches holds.

        Writes the new keys/values into the caches and commits them only when
        the whole pass succeeded. Returns logits ``(B*T, V)`` if ``all_logits``
        else ``(B, V)`` for each sequence's last token.
        """
        c = self.config
        batch, steps = token_ids.shape
        heads, kv_heads, dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        for cache in caches:
            cache.reserve(cache.length + steps)
        plan: DecodePlan | None = None
        if steps == 1 and batch >= self.batched_decode_from:
            # Rows in slot order, each arena's on adjacent slots: one attention call per arena.
            plan = caches[0].pool.decode_plan(list(caches))
            token_ids, caches = token_ids[plan.order], [caches[i] for i in plan.order]
        starts = [cache.length for cache in caches]
        if batch == 1:
            cos, sin = self.rotary.span(starts[0], steps)  # (1, T, 1, D/2)
        else:
            positions = torch.tensor(starts).unsqueeze(1) + torch.arange(steps)  # (B, T)
            cos, sin = self.rotary.lookup(positions)  # (B, T, 1, D/2)

        x = embedding(token_ids.reshape(-1), self.embed)  # (B*T, C), the residual stream
        for index, layer in enumerate(self.layers):
            h = rms_norm(x, layer.attn_norm, c.rms_norm_eps)
            qkv = linear(h, layer.qkv_weight, layer.qkv_bias).view(batch, steps, -1)  # (B, T, Q+2KV)
            # Rotate q and k heads in one go: they are adjacent columns of qkv.
            qk = _rotate(qkv[..., : c.q_size + c.kv_size].view(batch, steps, heads + kv_heads, dim), cos, sin)
            values = qkv[..., c.q_size + c.kv_size :].view(batch, steps, kv_heads, dim)  # (B, T, KVH, D)
            if plan is not None:
                attn = self._decode_attend_batched(index, plan, qk, values)  # (B, 1, H, D)
            elif steps == 1:
                attn = self._decode_attend(index, caches, qk, values)  # (B, 1, H, D)
            elif batch == 1:
                attn = self._attend(index, caches[0], starts[0], qk[0], values[0])  # (T, H, D)
            else:
                attn = x.new_empty(batch, steps, heads, dim)
                for b, cache in enumerate(caches):
                    attn[b] = self._attend(index, cache, starts[b], qk[b], values[b])
            x.add_(linear(attn.reshape(batch * steps, c.q_size), layer.o_weight, layer.o_bias))
            self._mlp(layer, x)

        if not all_logits:
            x = x.view(batch, steps, -1)[:, -1]  # (B, C)
        logits = linear(rms_norm(x, self.norm, c.rms_norm_eps), self.lm_head, None)
        for cache in caches:  # only now: a pass that raised anywhere above commits nothing
            cache.advance(steps)
        if plan is not None and plan.order != list(range(batch)):
            unsorted = torch.empty_like(logits)
            unsorted[plan.order] = logits  # back to the caller's row order
            return unsorted
        return logits

    def _attend(
        self, layer: int, cache: KVCache, start: int, qk: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Attention of one sequence's ``T`` new tokens over its cache; returns ``(T, H, D)``."""
        heads = self.config.num_attention_heads
        cache.write(layer, qk[:, heads:], values)
        keys, vals = cache.view(layer, start + qk.shape[0])  # (1, KVH, start+T, D)
        queries = qk[:, :heads].transpose(0, 1).unsqueeze(0)  # (1, H, T, D)
        return attention(queries, keys, vals, start)[0].transpose(0, 1)  # (T, H, D)

    def _decode_attend(
        self, layer: int, caches: Sequence[KVCache], qk: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """One new token per sequence, each over its own cache; returns ``(B, 1, H, D)``.

        Small per-sequence matmuls (:func:`decode_attention`) rather than SDPA,
        whose flash kernel opens a threaded region per call (on the loaded
        2-core machine ~0.7 ms each, a third of a batch-8 step). Whatever can be
        done for the whole batch at once (scaling, grouping, splitting into
        rows) is, so each sequence costs eight op calls per layer.
        """
        c = self.config
        batch, heads, dim = len(caches), c.num_attention_heads, c.head_dim
        groups = heads // c.num_key_value_heads
        queries = qk[:, 0, :heads].mul(1.0 / math.sqrt(dim)).view(batch, -1, groups, dim)  # (B, KVH, G, D)
        out = qk.new_empty(batch, heads // groups, groups, dim)  # (B, KVH, G, D)
        rows = zip(caches, queries.unbind(0), qk[:, 0, heads:].unbind(0), values[:, 0].unbind(0), out.unbind(0))
        for cache, query, key, value, result in rows:
            keys, vals = cache.append_one(layer, key, value)  # (KVH, D, len+1), (KVH, len+1, D)
            decode_attention(query, keys, vals, scale=1.0, out=result)
        return out.view(batch, 1, heads, dim)

    def _decode_attend_batched(
        self, layer: int, plan: DecodePlan, qk: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """One new token per sequence, one masked attention call per arena; returns ``(B, 1, H, D)``.

        Rows are in ``plan`` order: group ``g``'s rows ``g.rows`` live on the
        adjacent slots ``g.slots`` of its arena, so its keys are a strided view
        of the arena (no gather) and the batch usually is one group.
        """
        c = self.config
        batch, heads, dim = qk.shape[0], c.num_attention_heads, c.head_dim
        queries = qk[:, 0, :heads].mul(1.0 / math.sqrt(dim)).view(batch, c.num_key_value_heads, -1, dim)  # (B, KVH, G, D)
        new_keys, new_values = qk[:, 0, heads:], values[:, 0]  # (B, KVH, D)
        out = torch.empty_like(queries)
        for g in plan.groups:
            keys, vals = g.arena.layer(layer)  # (S, KVH, D, cap), (S, KVH, cap, D)
            keys[g.slot_ids, :, :, g.positions] = new_keys[g.rows]  # each row's new token at its own length
            vals[g.slot_ids, :, g.positions] = new_values[g.rows]
            keys, vals = keys[g.slots, ..., : g.width], vals[g.slots, :, : g.width]
            batched_decode_attention(queries[g.rows], keys, vals, g.hidden, scale=1.0, out=out[g.rows])
        return out.view(batch, 1, heads, dim)

    def _mlp(self, layer: DecoderLayer, x: torch.Tensor) -> None:
        """``x += down(silu(gate(norm x)) * up(norm x))``, a block of rows at a time."""
        c = self.config
        for start in range(0, x.shape[0], MLP_ROWS):
            rows = x[start : start + MLP_ROWS]
            h = rms_norm(rows, layer.mlp_norm, c.rms_norm_eps)
            gate_up = linear(h, layer.gate_up_weight, layer.gate_up_bias)  # (rows, 2I)
            gate, up = gate_up.split(c.intermediate_size, dim=-1)
            rows.add_(linear(F.silu(gate).mul_(up), layer.down_weight, layer.down_bias))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split layout: ``(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)``.

    ``x`` ``(B, T, heads, D)``; ``cos``/``sin`` ``(B, T, 1, D/2)``. Returns a new contiguous tensor.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
