"""``python -m agentd.plugins.frame_planner.corpus OUT_DIR``: write train.jsonl and test.jsonl."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from .generate import DEFAULT_MEMORY_EXAMPLES, DEFAULT_TEST_SIZE, CorpusError, generate, write_jsonl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentd.plugins.frame_planner.corpus", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory for train.jsonl and test.jsonl")
    parser.add_argument("--train", type=int, default=6000, help="training examples (default 6000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the training draw (the test set is fixed)")
    parser.add_argument("--test", type=int, default=DEFAULT_TEST_SIZE, help="scored held-out examples")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_EXAMPLES, help="extra 'my usual' held-out examples")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        train, test = generate(args.train, args.seed, n_test=args.test, n_memory=args.memory)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_jsonl(args.out_dir / "train.jsonl", train)
    write_jsonl(args.out_dir / "test.jsonl", test)
    took = time.perf_counter() - started
    templates = Counter(e["template"] for e in train), Counter(e["template"] for e in test)
    print(f"{len(train)} train examples ({len(templates[0])} templates), {len(test)} test examples "
          f"({len(templates[1])} templates) in {took:.1f} s -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
