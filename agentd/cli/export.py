"""``agentd export``: turn a checkpoint or bundle into a bundle for another runtime (ONNX)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentd.cli import app


class Quant(str, enum.Enum):
    """Weight formats ``agentd export --quant`` writes."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    int4 = "int4"


class StderrProgress:
    """A one-line progress bar on stderr, redrawn in place on a terminal."""

    def __init__(self, width: int = 30):
        self.width = width
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {stage}"
        if self.tty:
            sys.stderr.write(f"\r\x1b[2K{line}" + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model to export: Hugging Face directory, agentd bundle, GGUF file, RWKV .pth.")],
    out_dir: Annotated[Path, typer.Option("-o", "--output", metavar="OUT_DIR", help="Where to write the bundle (must not exist unless --force).")],
    quant: Annotated[Quant, typer.Option("--quant", help="Weight format: fp32, fp16, int8 (dynamic) or int4 (weight-only blocks).")] = Quant.fp32,
    block_size: Annotated[int, typer.Option("--block-size", help="Weights per int4 quantisation block.")] = 32,
    target: Annotated[str, typer.Option("--target", help="Export format.")] = "onnx",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT_DIR if it already exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Export MODEL as a self-verifying bundle with graphs for a torch-free runtime (atomic)."""
    from agentd.exporter_registry import ExportOptions, check_options, exporter_for
    from agentd.formats import open_checkpoint
    from agentd.manifest import verify_manifest

    checkpoint = open_checkpoint(model)
    spec = exporter_for(target, checkpoint.architecture, checkpoint.where("config.json"))
    options = ExportOptions(quant=quant.value, block_size=block_size, force=force)
    check_options(spec, options)
    progress = (lambda stage, done, total: None) if quiet else StderrProgress()
    bundle = spec.export(checkpoint, out_dir, options, progress)
    manifest = verify_manifest(bundle)
    size = sum(entry["size"] for entry in manifest["files"].values())
    typer.echo(str(bundle))
    typer.echo(f"{manifest['architecture']} -> {target} {quant.value}, {size / 1e6:.1f} MB in {len(manifest['files'])} files")
