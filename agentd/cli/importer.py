"""``agentd import``: turn any model a format plugin opens (HF directory, GGUF, RWKV-7 .pth) into an agentd bundle."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from agentd.cli import app


class DType(str, enum.Enum):
    """Weight dtypes ``agentd import --dtype`` converts floating-point tensors to."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


@app.command("import")
def import_command(
    hf_dir: Annotated[Path, typer.Argument(metavar="MODEL", help="Model to import: Hugging Face directory, GGUF file, RWKV-7 .pth (any format `agentd models formats` lists).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="Where to write the bundle (must not exist unless --force).")],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT_DIR if it already exists.")] = False,
    dtype: Annotated[
        Optional[DType], typer.Option("--dtype", help="Convert floating-point weights (default: keep them).")
    ] = None,
) -> None:
    """Validate a checkpoint and write it as a verified agentd bundle (atomic)."""
    from agentd.bundle import import_checkpoint
    from agentd.manifest import read_manifest

    bundle = import_checkpoint(hf_dir, out_dir, force=force, dtype=dtype.value if dtype else None)
    manifest = read_manifest(bundle)  # import_checkpoint just wrote and hashed it
    size = sum(entry["size"] for entry in manifest["files"].values())
    typer.echo(str(bundle))
    typer.echo(
        f"{manifest['architecture']}, {_human(manifest['parameters'], '')} parameters, "
        f"{manifest['dtype']}, {_human(size, 'B')} in {len(manifest['files'])} files"
    )


def _human(value: float, unit: str) -> str:
    """``1234567, ""`` -> ``1.2M``; ``1234567, "B"`` -> ``1.2 MB`` (decimal prefixes)."""
    prefixes = ("", "k", "M", "G", "T")
    index = 0
    while value >= 1000 and index < len(prefixes) - 1:
        value /= 1000
        index += 1
    number = f"{value:.0f}" if index == 0 else f"{value:.1f}"
    return f"{number} {prefixes[index]}{unit}" if unit else f"{number}{prefixes[index]}"
