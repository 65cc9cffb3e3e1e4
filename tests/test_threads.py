"""One ``threads`` setting sizes both runtimes: torch's pool and every onnxruntime session.

Checked in a fresh interpreter per case, as ``agentd serve`` does it (its
``agentd.threads.apply``), so the test process's own torch pool is left alone. The
references are the runtimes themselves: ``torch.get_num_threads()`` and the
options of a real ``onnxruntime.InferenceSession``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# Configure as serve does, then open an onnxruntime session through the onnxrt
# backend's own session code, and report what each runtime ended up with.
SCRIPT = """
import json, sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from agentd.threads import apply as set_threads
from agentd.directory_checkpoint import DirectoryCheckpoint
from agentd.plugins.onnxrt.session import open_session

directory = Path(sys.argv[2])
graph = helper.make_graph(
    [helper.make_node("Identity", ["x"], ["y"])], "identity",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "model.onnx")

set_threads(int(sys.argv[1]))
import torch

session = open_session(DirectoryCheckpoint(directory), {"graphs": {"model": {"file": "model.onnx"}}})
print(json.dumps({
    "torch": torch.get_num_threads(),
    "onnxruntime": session.get_session_options().intra_op_num_threads,
}))
"""


def _runtime_threads(setting: int, directory: Path) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(setting), str(directory)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting", [1, 3])
def test_both_runtimes_follow_an_explicit_setting(setting, tmp_path) -> None:
    assert _runtime_threads(setting, tmp_path) == {"torch": setting, "onnxruntime": setting}


def test_zero_means_one_less_than_the_cores_for_both(tmp_path) -> None:
    expected = max(1, (os.cpu_count() or 1) - 1)
    assert _runtime_threads(0, tmp_path) == {"torch": expected, "onnxruntime": expected}


def test_negative_setting_is_refused() -> None:
    from agentd import threads

    with pytest.raises(ValueError, match="non-negative"):
        threads.configure(-1)
