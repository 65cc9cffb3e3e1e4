"""``agentd bench --quick``: the report gets written, every engine in it measured or marked why not.

Real engines (agentd torch, transformers, llama.cpp when installed) run on the
tiny quick models next to fake ones (``tests/_bench_fakes.py``) that segfault
in their worker process or are "not installed": the run must survive them and
say so. No timing is asserted: only that the figures are there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentd.bench import engines as bench_engines
from agentd.bench.engines import EngineSpec
from agentd.cli import _register_commands, app

FAKES = "_bench_fakes:FakeEngine"
HERE = Path(__file__).resolve().parent


@pytest.fixture
def line_up(monkeypatch: pytest.MonkeyPatch) -> list[EngineSpec]:
    """Three real engines and four fakes; the workers find the fakes through PYTHONPATH."""
    real = [spec for spec in bench_engines.catalogue()
            if spec.name in ("agentd torch fp32", "transformers eager fp32", "llama.cpp q4_0")]
    fakes = [
        EngineSpec("fake crashes in decode", FAKES, {"crash_in": "decode"}),
        EngineSpec("fake crashes while loading", FAKES, {"crash_in": "prepare"}),
        EngineSpec("fake crashes, then its fallback runs", FAKES, {"crash_in": "decode"}, fallback={"crash_in": None}),
        EngineSpec("fake not installed", FAKES, {"missing": True}),
    ]
    specs = real + fakes
    monkeypatch.setattr(bench_engines, "catalogue", lambda: specs)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    return specs


@pytest.mark.slow
def test_quick_bench_writes_the_report_with_every_engine_accounted_for(line_up: list[EngineSpec], tmp_path: Path) -> None:
    _register_commands()
    out = tmp_path / "docs" / "BENCHMARKS.md"
    result = CliRunner().invoke(
        app, ["bench", "--quick", "--suite", "engines", "--model", "smollm2", "--repeats", "2", "--threads", "1",
              "--out", str(out), "--work", str(tmp_path / "work")],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {row["name"]: row for row in data["models"]["smollm2"]["results"]}
    assert set(rows) == {spec.name for spec in line_up}  # nobody dropped

    for name in ("agentd torch fp32", "transformers eager fp32", "fake crashes, then its fallback runs"):
        assert rows[name]["status"] == "measured", rows[name]
        assert all(v and v > 0 for v in rows[name]["decode_tok_s"]) and len(rows[name]["decode_tok_s"]) == 2
        assert all(v and v > 0 for v in rows[name]["prefill_s"])
    llama = rows["llama.cpp q4_0"]
    assert llama["status"] in ("measured", "skipped", "crashed"), llama
    if llama["status"] == "measured":
        assert llama["bytes_per_token"] > 0  # read from the GGUF file llama.cpp's quantiser wrote
    # Greedy tokens are compared with transformers: agentd fp32 on the same weights agrees.
    assert rows["agentd torch fp32"]["info"]["same_tokens_as_reference"] == "9/9"

    assert rows["fake crashes in decode"]["status"] == "crashed"
    assert "SIGSEGV" in rows["fake crashes in decode"]["reason"] and "repeat 1" in rows["fake crashes in decode"]["reason"]
    assert rows["fake crashes while loading"]["status"] == "crashed"
    assert "while loading" in rows["fake crashes while loading"]["reason"]
    assert "SIGSEGV" in rows["fake crashes, then its fallback runs"]["incidents"][0]
    assert rows["fake not installed"] == {**rows["fake not installed"], "status": "skipped", "reason": "fake peer is not installed"}

    for name in rows:
        assert f"| {name} |" in text
    assert "**crashed**: crashed (SIGSEGV)" in text
    assert "**skipped**: fake peer is not installed" in text
    assert "AMD" in text or "Intel" in text or "CPU" in text
    assert data["bandwidth"]["gb_per_s"] > 0
    assert "agentd bench --quick --repeats 2 --threads 1" in text  # the exact command
    assert "| agentd torch fp32 | transformers eager fp32 |" in text  # a paired ratio
    png = out.parent / "bench_engines.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*.tmp"))


def test_unknown_model_and_engine_filter_are_one_line_errors(tmp_path: Path) -> None:
    from agentd.cli import main

    for args in (["--model", "gpt5"], ["--engines", "no-such-engine"]):
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-c", "from agentd.cli import main; main()", "bench", "--quick", *args,
                               "--out", str(tmp_path / "B.md")], capture_output=True, text=True)
        assert done.returncode != 0
        assert done.stderr.strip().startswith("agentd: error:"), done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "B.md").exists()
    assert main  # imported: the CLI entry point exists
