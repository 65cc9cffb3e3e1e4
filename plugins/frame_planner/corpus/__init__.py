"""The trained planner's synthetic corpus: requests with labelled spans and the plans they mean.

Generated from phrasing templates (:mod:`.templates`) filled with sandbox-world
vocabulary (:mod:`.vocabulary`) and spoken values (:mod:`.values`), every
example checked by running its expected plan in a fresh sandbox world
(:mod:`.generate`). The test split uses held-out templates *and* held-out
vocabulary only. Format: ``docs/design/frame_planner.md``.

    python -m agentd.plugins.frame_planner.corpus OUT_DIR [--train N] [--seed S]
"""

from .generate import generate, read_jsonl, write_jsonl

__all__ = ["generate", "read_jsonl", "write_jsonl"]
