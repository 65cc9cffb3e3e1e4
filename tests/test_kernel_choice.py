"""The projection kernel is chosen by measuring on this CPU, once per weight shape, and cached."""

from __future__ import annotations

import json

import pytest
import torch

from agentd.errors import AgentdError
from agentd.plugins import kernel_choice
from agentd.plugins.projection import linear, onednn_works, pack_weight

pytestmark = pytest.mark.skipif(not onednn_works(), reason="this torch has no working oneDNN linear")


@pytest.fixture
def measuring(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTD_PROJECTION", "measure")
    monkeypatch.setenv("AGENTD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "_chosen", {})
    return tmp_path / "kernels.json"


def test_a_measured_choice_is_cached_per_cpu_and_reused(measuring, monkeypatch) -> None:
    weight = torch.randn(96, 64)
    packed = pack_weight(weight)
    cached = json.loads(measuring.read_text())
    verdict = cached[kernel_choice.machine_key()]["96x64"]
    assert verdict["kernel"] in ("packed", "dense") and verdict["packed_ms"] > 0 and verdict["dense_ms"] > 0
    assert packed.is_mkldnn == (verdict["kernel"] == "packed")
    # A new process (an empty in-memory table) reads the file instead of measuring again.
    monkeypatch.setattr(kernel_choice, "_chosen", {})
    monkeypatch.setattr(kernel_choice, "measure", lambda *a: pytest.fail("measured again despite the cache"))
    assert pack_weight(torch.randn(96, 64)).is_mkldnn == packed.is_mkldnn
    assert kernel_choice.summary().endswith(f"(measured on {kernel_choice.cpu_model()})")


def test_the_faster_kernel_wins(measuring, monkeypatch) -> None:
    monkeypatch.setattr(kernel_choice, "measure", lambda weight, pack: (2.0, 1.0))  # dense twice as fast
    weight = torch.randn(32, 16)
    assert pack_weight(weight) is weight
    monkeypatch.setattr(kernel_choice, "measure", lambda weight, pack: (1.0, 2.0))
    assert pack_weight(torch.randn(48, 16)).is_mkldnn
    assert kernel_choice.choices()["32x16"][0] == "dense" and kernel_choice.choices()["48x16"][0] == "packed"


def test_either_kernel_computes_the_same_projection(monkeypatch) -> None:
    weight, bias, x = torch.randn(40, 24), torch.randn(40), torch.randn(3, 24)
    results = {}
    for forced in ("packed", "dense"):
        monkeypatch.setenv("AGENTD_PROJECTION", forced)
        monkeypatch.setattr(kernel_choice, "_chosen", {})
        with torch.inference_mode():
            results[forced] = linear(x, pack_weight(weight), bias)
    torch.testing.assert_close(results["packed"], results["dense"], rtol=1e-5, atol=1e-5)


def test_a_bad_setting_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("AGENTD_PROJECTION", "fastest")
    with pytest.raises(AgentdError, match="AGENTD_PROJECTION must be one of measure, packed, dense"):
        pack_weight(torch.randn(8, 8))


def test_an_unwritable_cache_is_only_a_warning(tmp_path, monkeypatch, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("AGENTD_PROJECTION", "measure")
    monkeypatch.setenv("AGENTD_CACHE_DIR", str(blocked))
    monkeypatch.setattr(kernel_choice, "_chosen", {})
    pack_weight(torch.randn(16, 8))
    assert "could not cache the projection kernel choice" in caplog.text
