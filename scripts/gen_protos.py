"""Regenerate the Python gRPC code in ``agentd/v1/`` from ``protos/agentd/v1/*.proto``.

    python scripts/gen_protos.py            # rewrite agentd/v1/*_pb2*.py(i)
    python scripts/gen_protos.py --out DIR  # write into DIR/agentd/v1/ instead

The generated files are committed and never edited by hand;
``tests/test_proto.py`` regenerates into a temporary directory and fails if
the committed copies are stale. Needs ``grpcio-tools`` (a dev dependency).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_PACKAGE = Path("agentd") / "v1"


def proto_files() -> list[Path]:
    """The .proto sources, relative to ``protos/`` (so imports read ``agentd/v1/x.proto``)."""
    return sorted(path.relative_to(PROTO_ROOT) for path in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc into ``out_root``; return the generated files (relative to it)."""
    from grpc_tools import protoc

    # grpc_tools ships the well-known types (google/protobuf/*.proto) as package data.
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out_root / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(PROTO_ROOT / name) for name in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the message above)")
    return sorted(
        path.relative_to(out_root)
        for path in (out_root / PROTO_PACKAGE).iterdir()
        if path.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    options = parser.parse_args(argv)
    for path in generate(options.out.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
