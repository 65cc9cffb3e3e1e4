"""`agentd train-planner` end to end, tiny: the command generates the corpus, trains, writes an adapter
the daemon's loaders open as a token classifier, and the loss goes down. (It does not retrain the
shipped model: that is `agentd train-planner --out plugins/frame_planner/model`, see docs/planner_trained.md.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

AGENTD = Path(sys.executable).parent / "agentd"


def test_a_tiny_training_run_writes_a_working_adapter(tmp_path: Path) -> None:
    from agentd.model import load_model
    from agentd.plugins.frame_planner.labels import TOKEN_LABELS

    out = tmp_path / "planner"
    result = subprocess.run(
        [str(AGENTD), "train-planner", "--out", str(out), "--examples", "200", "--epochs", "4", "--layers", "1",
         "--plot", str(tmp_path / "loss.png")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "adapter written to" in result.stdout and "Traceback" not in result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "training.json").read_text())
    losses = [loss for _, loss in record["losses"]]
    assert len(losses) >= 8
    # Training did something: the last batches' loss is well under the first ones'.
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    model = load_model(out)
    assert model.info.labels == TOKEN_LABELS
    (labelled,) = model.classify(["send Maria 45 dollars"])
    assert labelled.tokens and all(t.label in TOKEN_LABELS for t in labelled.tokens)


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    not_adapter = tmp_path / "occupied"
    not_adapter.mkdir()
    (not_adapter / "keep.txt").write_text("mine")
    result = subprocess.run([str(AGENTD), "train-planner", "--out", str(not_adapter), "--examples", "10", "--epochs", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "refusing to replace it" in result.stderr
    assert (not_adapter / "keep.txt").read_text() == "mine"
