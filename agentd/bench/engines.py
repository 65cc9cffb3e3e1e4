"""The engines ``agentd bench`` puts side by side: one interface, one class per implementation.

Every engine answers the same three calls, so the harness times them all alike:

* ``prepare(model_dir, work, threads)``: build what it runs from the Hugging
  Face checkpoint (an ONNX bundle, a GGUF file, nothing) into ``work`` and load
  it with ``threads`` intra-op threads; raise :class:`EngineUnavailable` when it
  cannot run here (a peer not installed, an architecture it has no support for);
* ``prefill(tokens)``: consume a prompt from an empty state and return the
  greedy next token (the prompt's forward);
* ``decode(token)``: one forward of one token, return the greedy next token.

Each runs in its own worker process (:mod:`.worker`), so a peer that crashes
(llama.cpp's weight repacking segfaulted on some AMX CPUs) or one that leaks
threads cannot take the benchmark or the other engines down with it.

Implementations: agentd's torch backends at fp32/int8/int4 (``load_model(path,
quant=...)``), agentd's ONNX bundles at fp32/int8/int4 (``agentd export
--quant``, run by the torch-free onnxrt backend), transformers eager and sdpa,
onnxruntime-genai over its own model builder's output, and llama.cpp through
llama-cpp-python over GGUF files written by :mod:`agentd.plugins.gguf.writer`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class EngineUnavailable(Exception):
    """The engine cannot run here; the message says why (reported as *skipped* or *not available*)."""


@dataclass(frozen=True)
class EngineSpec:
    """How the harness names an engine and how a worker process builds it."""

    #: Report name, e.g. ``llama.cpp q4_0``.
    name: str
    #: ``module:Class`` of the :class:`Engine` (tests point this at fakes).
    factory: str
    #: Keyword arguments of the class.
    options: dict[str, Any] = field(default_factory=dict)
    #: Bits per weight class the engine is compared within: ``fp32``, ``int8`` or ``int4``.
    precision: str = "fp32"
    #: Options to retry with once if the worker crashes (e.g. llama.cpp without weight repacking).
    fallback: dict[str, Any] | None = None


class Engine(ABC):
    """One implementation, prepared once, then timed through ``prefill`` and ``decode``."""

    def __init__(self) -> None:
        #: What the report says about this engine: versions, build commands and times, kernel picks.
        self.info: dict[str, Any] = {}

    @abstractmethod
    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        """Build and load what this engine runs for the checkpoint in ``model_dir``."""

    @abstractmethod
    def prefill(self, tokens: np.ndarray) -> int:
        """Consume ``tokens`` from an empty state; the greedy next token."""

    @abstractmethod
    def decode(self, token: int) -> int:
        """One step with ``token``; the greedy next token."""

    def bytes_per_token(self) -> float | None:
        """Weight bytes one decode step reads, when the engine knows better than the nominal figure."""
        return None


def architecture(model_dir: Path) -> str:
    return json.loads((model_dir / "config.json").read_text())["architectures"][0]


def run_build(command: list[str], log: Path) -> float:
    """Run one build command, output to ``log``; its wall seconds, or EngineUnavailable with the log's tail."""
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise EngineUnavailable(f"build failed (exit {done.returncode}): {tail[0][:200]}")
    return time.perf_counter() - started


def agentd_command() -> list[str]:
    """``agentd`` as the interpreter running this process sees it (no PATH lookup)."""
    return [sys.executable, "-c", "from agentd.cli import main; main()"]


# -- agentd ------------------------------------------------------------------------------------
class AgentdTorch(Engine):
    """agentd's torch backend through ``load_model(path, quant=...)``."""

    def __init__(self, quant: str = "fp32"):
        super().__init__()
        self.quant = quant

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        import torch

        import agentd
        from agentd.errors import InvalidArgument
        from agentd.plugins import kernel_choice

        torch.set_num_threads(threads)
        try:
            model = agentd.load_model(model_dir, quant=self.quant)
        except TypeError as exc:
            if "quant" not in str(exc):
                raise
            if self.quant != "fp32":
                raise EngineUnavailable(f"not available: agentd.load_model takes no quant= yet (no torch {self.quant})") from None
            model = agentd.load_model(model_dir)
        except InvalidArgument as exc:  # the backend has no such execution (yet)
            raise EngineUnavailable(f"not available: {exc}") from None
        self.backend = model.backend
        self.prefill(np.arange(8) % self.backend.info.vocab_size)  # first packs (kernel choice) happen here
        picks = {shape: verdict[0] for shape, verdict in kernel_choice.choices().items()}
        self.info.update(torch=torch.__version__, weights=model.info.weight_note or "", kernels=kernel_choice.summary(),
                         kernel_picks=picks)

    def prefill(self, tokens: np.ndarray) -> int:
        self.state = self.backend.new_state()
        return int(self.backend.prefill(tokens, self.state)[-1].argmax())

    def decode(self, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [self.state])[0].argmax())


class AgentdOnnx(Engine):
    """agentd's ONNX bundle (``agentd export --quant``) on the torch-free onnxrt backend."""

    def __init__(self, quant: str = "fp32"):
        super().__init__()
        self.quant = quant

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        import onnxruntime

        from agentd.formats import open_checkpoint
        from agentd.plugins.onnxrt.session import load
        from agentd.threads import configure

        bundle = work / f"{model_dir.name}-agentd-onnx-{self.quant}"
        command = [*agentd_command(), "export", str(model_dir), "-o", str(bundle), "--quant", self.quant, "-q", "--force"]
        self.info["build"] = f"agentd export {model_dir.name} -o {bundle.name} --quant {self.quant}"
        if not (bundle / "manifest.json").is_file():
            self.info["build_s"] = round(run_build(command, work / f"{bundle.name}.log"), 1)
        configure(threads)
        self.backend = load(open_checkpoint(bundle))
        self.info.update(onnxruntime=onnxruntime.__version__)

    def prefill(self, tokens: np.ndarray) -> int:
        self.state = self.backend.new_state()
        return int(self.backend.prefill(tokens.astype(np.int64), self.state)[-1].argmax())

    def decode(self, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [self.state])[0].argmax())


# -- transformers ------------------------------------------------------------------------------
class Transformers(Engine):
    """Hugging Face transformers in float32 with its own cache, ``attention`` = eager or sdpa."""

    def __init__(self, attention: str = "eager"):
        super().__init__()
        self.attention = attention

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        try:
            import torch
            import transformers
        except ImportError:
            raise EngineUnavailable("transformers is not installed (pip install 'agentd[bench]')") from None
        self.recurrent = architecture(model_dir) == "MambaForCausalLM"
        if self.recurrent and self.attention != "eager":
            raise EngineUnavailable("Mamba has no attention to choose an implementation for")
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation=None if self.recurrent else self.attention
        ).eval()
        self.info.update(transformers=transformers.__version__, torch=torch.__version__)

    def _forward(self, ids: list[int] | np.ndarray, **kwargs: Any) -> Any:
        with self.torch.inference_mode():
            return self.model(self.torch.as_tensor(np.asarray(ids, dtype=np.int64))[None], use_cache=True, **kwargs)

    def prefill(self, tokens: np.ndarray) -> int:
        if self.recurrent:  # transformers 5 keeps Mamba's conv and SSM states in a cache object too
            out = self._forward(tokens, logits_to_keep=1)
            self.cache = out.cache
        else:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=self.model.config)
            out = self._forward(tokens, past_key_values=self.cache, logits_to_keep=1)
        return int(out.logits[0, -1].argmax())

    def decode(self, token: int) -> int:
        if self.recurrent:
            out = self._forward([token], cache=self.cache)
            self.cache = out.cache
        else:
            out = self._forward([token], past_key_values=self.cache)
        return int(out.logits[0, -1].argmax())


# -- onnxruntime-genai -------------------------------------------------------------------------
class OrtGenai(Engine):
    """onnxruntime-genai over its own model builder's output (``-p fp32|int8|int4 -e cpu``), greedy."""

    def __init__(self, precision: str = "fp32"):
        super().__init__()
        self.precision = precision

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise EngineUnavailable("onnxruntime-genai is not installed (pip install onnxruntime-genai)") from None
        if architecture(model_dir) != "LlamaForCausalLM":
            raise EngineUnavailable(f"its model builder does not build {architecture(model_dir)}")
        out = work / f"{model_dir.name}-ort-genai-{self.precision}"
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out),
                   "-p", self.precision, "-e", "cpu", "-c", str(work / "ort-genai-cache")]
        self.info["build"] = f"python -m onnxruntime_genai.models.builder -i {model_dir.name} -o {out.name} -p {self.precision} -e cpu"
        if not (out / "genai_config.json").is_file():
            self.info["build_s"] = round(run_build(command, work / f"{out.name}.log"), 1)
        config = og.Config(str(out))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.og, self.model = og, og.Model(config)
        self.info.update(onnxruntime_genai=og.__version__)

    def prefill(self, tokens: np.ndarray) -> int:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(tokens) + 512)  # room for the decode steps
        self.generator = self.og.Generator(self.model, params)
        self.generator.append_tokens(tokens.astype(np.int32)[None])  # the prompt's forward
        self.generator.generate_next_token()  # greedy pick from the prompt's logits
        return int(self.generator.get_next_tokens()[0])

    def decode(self, token: int) -> int:
        # The generator feeds back the token it picked itself (greedy: the same one); this runs its forward.
        self.generator.generate_next_token()
        return int(self.generator.get_next_tokens()[0])


# -- llama.cpp ---------------------------------------------------------------------------------
class LlamaCpp(Engine):
    """llama.cpp through llama-cpp-python, over a GGUF of the same weights (f32, or its own q8_0 / q4_0)."""

    def __init__(self, kind: str = "f32", repack: bool = True):
        super().__init__()
        self.kind, self.repack = kind, repack

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise EngineUnavailable("llama-cpp-python is not installed (pip install 'agentd[bench]')") from None
        from agentd.formats import open_checkpoint
        from agentd.plugins.gguf import writer

        f32 = work / f"{model_dir.name}.f32.gguf"
        if not f32.is_file():
            started = time.perf_counter()
            writer.write_checkpoint(open_checkpoint(model_dir), f32)
            self.info["write_s"] = round(time.perf_counter() - started, 1)
        self.path = f32
        if self.kind != "f32":
            self.path = work / f"{model_dir.name}.{self.kind}.gguf"
            if not self.path.is_file():
                writer.quantize(f32, self.path, self.kind, threads)
        self.info["build"] = f"agentd.plugins.gguf.writer.write_checkpoint -> {f32.name}" + (
            f"; llama_model_quantize {self.kind} -> {self.path.name}" if self.kind != "f32" else "")
        if not self.repack:
            _without_extra_buffers(llama_cpp)
        self.llm = llama_cpp.Llama(str(self.path), n_ctx=4096, n_batch=512, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.info.update(llama_cpp_python=llama_cpp.__version__, repack=self.repack)

    def _next(self) -> int:
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))  # the last position's row
        return int(logits.argmax())

    def prefill(self, tokens: np.ndarray) -> int:
        self.llm.reset()
        self.llm.eval([int(t) for t in tokens])
        return self._next()

    def decode(self, token: int) -> int:
        self.llm.eval([token])
        return self._next()

    def bytes_per_token(self) -> float | None:
        """The GGUF's tensor bytes: llama.cpp's quantiser picks its own mix (e.g. a Q6_K output head in q4_0)."""
        import gguf

        return float(sum(int(t.n_bytes) for t in gguf.GGUFReader(str(self.path)).tensors))


def _without_extra_buffers(llama_cpp: Any) -> None:
    """Load models with ``use_extra_bufts = False``: no repacked weight layouts (they crashed on some AMX CPUs)."""
    import llama_cpp.llama as high_level

    default = llama_cpp.llama_model_default_params

    def params() -> Any:
        value = default()
        value.use_extra_bufts = False
        return value

    high_level.llama_cpp.llama_model_default_params = params


# -- the default line-up -----------------------------------------------------------------------
def catalogue() -> list[EngineSpec]:
    """Every engine ``agentd bench`` knows, in report order."""
    here = __name__
    specs = [EngineSpec(f"agentd torch {q}", f"{here}:AgentdTorch", {"quant": q}, q) for q in ("fp32", "int8", "int4")]
    specs += [EngineSpec(f"agentd onnx {q}", f"{here}:AgentdOnnx", {"quant": q}, q) for q in ("fp32", "int8", "int4")]
    specs += [EngineSpec(f"transformers {a} fp32", f"{here}:Transformers", {"attention": a}) for a in ("eager", "sdpa")]
    specs += [EngineSpec(f"onnxruntime-genai {p}", f"{here}:OrtGenai", {"precision": p}, p) for p in ("fp32", "int8", "int4")]
    specs += [
        EngineSpec(f"llama.cpp {kind}", f"{here}:LlamaCpp", {"kind": kind}, precision, fallback={"kind": kind, "repack": False})
        for kind, precision in (("f32", "fp32"), ("q8_0", "int8"), ("q4_0", "int4"))
    ]
    return specs
