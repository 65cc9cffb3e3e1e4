"""``agentd bench``: agentd's backends side by side with their peers, on the machine at hand.

One abstraction a file: :mod:`.models` (the random-weight checkpoints),
:mod:`.engines` (one interface, one class per implementation: agentd torch and
ONNX, transformers, onnxruntime-genai, llama.cpp), :mod:`.worker` (each engine
in its own process, so a crashing peer is a result, not the end of the run),
:mod:`.harness` (interleaved repeats, paired ratios), :mod:`.bandwidth` (the
machine's memory-bandwidth bound), :mod:`.machine` (CPU, versions, kernel picks),
:mod:`.suites` (the long-context and concurrency benchmarks of ``benchmarks/``)
and :mod:`.report` (``docs/BENCHMARKS.md`` and its plots). The command is
:mod:`agentd.cli.bench`.
"""
