"""Models at run time: background loading with per-model health, a memory budget with LRU eviction,
reload on demand, unloading, and failed loads.

Three copies of a tiny random Llama (different seeds) are served by the
in-process harness; their outputs are checked against in-process generation
so an evicted-then-reloaded model is shown to be the same model.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

import agentd.model
from _serving_fixtures import ServingHarness, collect, ids_request
from _random_llama import RandomLlamaSpec, build_random_llama
from agentd.server.served import ModelSource, ModelTable, ServingSettings, estimate_weight_bytes
from agentd.v1 import models_pb2 as mpb
from tests._daemon_fixtures import socket_dir

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
PROMPT = [3, 14, 15, 92, 65]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("models")
    return {
        name: build_random_llama(
            root / name,
            RandomLlamaSpec(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=64, max_position_embeddings=64, seed=seed),
        )
        for seed, name in enumerate(("a", "b", "c"))
    }


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _info(harness: ServingHarness, name: str) -> mpb.ModelInfo:
    return harness.models.GetModelInfo(mpb.GetModelInfoRequest(name=name), timeout=30)


def _generate(harness: ServingHarness, name: str) -> list[int]:
    return collect(harness.inference.Generate(ids_request(name, PROMPT, 6), timeout=60))[0]


def test_load_in_background_reports_health_then_serves(checkpoints, monkeypatch) -> None:
    table = ModelTable.load([ModelSource("a", checkpoints["a"])])
    gate = threading.Event()
    real_load = agentd.model.load_model

    def gated_load(path, quant=None):
        gate.wait(timeout=60)  # hold the load so the test sees it in progress
        return real_load(path, quant)

    monkeypatch.setattr(agentd.model, "load_model", gated_load)
    with socket_dir() as directory, ServingHarness(table, directory / "r.sock") as harness:
        assert harness.health("agentd.model.a") == SERVING
        loading = harness.models.LoadModel(mpb.LoadModelRequest(name="b", path=str(checkpoints["b"])), timeout=30)
        assert loading.status == mpb.MODEL_STATUS_LOADING and loading.health_service == "agentd.model.b"
        assert harness.health("agentd.model.b") == NOT_SERVING
        assert _info(harness, "b").status == mpb.MODEL_STATUS_LOADING
        gate.set()
        _wait_until(lambda: harness.health("agentd.model.b") == SERVING)
        info = _info(harness, "b")
        assert info.status == mpb.MODEL_STATUS_READY and info.architecture == "LlamaForCausalLM"
        # What the backend holds resident (its packed copy of the tied head included), not an estimate.
        assert info.weight_bytes == table.get("b").model.info.weight_bytes >= info.parameters * 4
        assert _generate(harness, "b") == table.get("b").model.generate(PROMPT, 6)

        # Unloading: the name is gone, and so is its health service.
        harness.models.UnloadModel(mpb.UnloadModelRequest(name="b"), timeout=30)
        assert harness.health("agentd.model.b") == UNKNOWN
        with pytest.raises(grpc.RpcError) as caught:
            _generate(harness, "b")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_memory_budget_evicts_the_least_recently_used_idle_model_and_reloads_it(checkpoints) -> None:
    size = agentd.model.load_model(checkpoints["a"]).info.weight_bytes  # resident: more than the files (packed tied head)
    assert size > estimate_weight_bytes(checkpoints["a"])
    table = ModelTable.load([ModelSource("a", checkpoints["a"])], ServingSettings(memory_budget=int(2.5 * size)))
    expected = {}
    with socket_dir() as directory, ServingHarness(table, directory / "r.sock") as harness:
        load = harness.models.LoadModel
        assert load(mpb.LoadModelRequest(name="b", path=str(checkpoints["b"]), wait=True), timeout=60).status == mpb.MODEL_STATUS_READY
        expected["b"] = _generate(harness, "b")
        expected["a"] = _generate(harness, "a")  # "a" is now the more recently used
        assert load(mpb.LoadModelRequest(name="c", path=str(checkpoints["c"]), wait=True), timeout=60).status == mpb.MODEL_STATUS_READY
        statuses = {m.name: m.status for m in harness.models.ListModels(mpb.ListModelsRequest()).models}
        assert statuses == {"a": mpb.MODEL_STATUS_READY, "b": mpb.MODEL_STATUS_EVICTED, "c": mpb.MODEL_STATUS_READY}
        assert harness.health("agentd.model.b") == NOT_SERVING
        assert table.loaded_bytes() <= 2.5 * size

        # A request for the evicted model reloads it (evicting "a", now the least recently used)...
        assert _generate(harness, "b") == expected["b"]
        statuses = {m.name: m.status for m in harness.models.ListModels(mpb.ListModelsRequest()).models}
        assert statuses == {"a": mpb.MODEL_STATUS_EVICTED, "b": mpb.MODEL_STATUS_READY, "c": mpb.MODEL_STATUS_READY}
        assert harness.health("agentd.model.b") == SERVING
        # ...and an evicted model still describes itself.
        assert _info(harness, "a").architecture == "LlamaForCausalLM"
        assert _generate(harness, "a") == expected["a"]


def test_a_model_in_use_is_not_evicted(checkpoints) -> None:
    size = estimate_weight_bytes(checkpoints["a"])
    table = ModelTable.load([ModelSource("a", checkpoints["a"])], ServingSettings(memory_budget=int(1.5 * size)))
    gate = threading.Event()
    backend = table.get("a").engine.backend
    original = backend.decode
    backend.decode = lambda ids, states: (gate.wait(timeout=60), original(ids, states))[1]
    with socket_dir() as directory, ServingHarness(table, directory / "r.sock") as harness:
        stream = harness.inference.Generate(ids_request("a", PROMPT, 4), timeout=60)
        next(stream)  # "a" is busy decoding
        with pytest.raises(grpc.RpcError) as caught:
            harness.models.LoadModel(mpb.LoadModelRequest(name="b", path=str(checkpoints["b"])), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "memory budget" in caught.value.details()
        gate.set()
        list(stream)


def test_load_errors(checkpoints, tmp_path) -> None:
    table = ModelTable.load([ModelSource("a", checkpoints["a"])])
    (tmp_path / "empty").mkdir()
    with socket_dir() as directory, ServingHarness(table, directory / "r.sock") as harness:
        load = harness.models.LoadModel
        cases = [
            (mpb.LoadModelRequest(name="a", path=str(checkpoints["b"])), grpc.StatusCode.INVALID_ARGUMENT, "name:"),
            (mpb.LoadModelRequest(name="../x", path=str(checkpoints["b"])), grpc.StatusCode.INVALID_ARGUMENT, "name:"),
            (mpb.LoadModelRequest(name="x"), grpc.StatusCode.INVALID_ARGUMENT, "path:"),
            (mpb.LoadModelRequest(name="x", path=str(tmp_path / "nope")), grpc.StatusCode.NOT_FOUND, "path:"),
        ]
        for request, code, prefix in cases:
            with pytest.raises(grpc.RpcError) as caught:
                load(request, timeout=30)
            assert (caught.value.code(), caught.value.details()[: len(prefix)]) == (code, prefix)

        # A directory that is not a checkpoint loads in the background and fails, naming the file.
        failed = load(mpb.LoadModelRequest(name="bad", path=str(tmp_path / "empty"), wait=True), timeout=60)
        assert failed.status == mpb.MODEL_STATUS_FAILED and "config.json" in failed.error
        assert harness.health("agentd.model.bad") == NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _generate(harness, "bad")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "config.json" in caught.value.details()
        harness.models.UnloadModel(mpb.UnloadModelRequest(name="bad"), timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            harness.models.UnloadModel(mpb.UnloadModelRequest(name="bad"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_budget_counts_what_a_loaded_model_holds_not_its_files(checkpoints) -> None:
    files = estimate_weight_bytes(checkpoints["a"])
    resident = agentd.model.load_model(checkpoints["a"]).info.weight_bytes
    assert resident > files  # the packed copy of the tied head
    # Room for "a" loaded plus "b" judged by its files, not for both as loaded.
    budget = resident + files + (resident - files) // 2
    table = ModelTable.load([ModelSource("a", checkpoints["a"])], ServingSettings(memory_budget=budget))
    with socket_dir() as directory, ServingHarness(table, directory / "r.sock") as harness:
        loaded = harness.models.LoadModel(mpb.LoadModelRequest(name="b", path=str(checkpoints["b"]), wait=True), timeout=60)
        assert loaded.status == mpb.MODEL_STATUS_READY and loaded.weight_bytes == resident
        statuses = {m.name: m.status for m in harness.models.ListModels(mpb.ListModelsRequest()).models}
        assert statuses == {"a": mpb.MODEL_STATUS_EVICTED, "b": mpb.MODEL_STATUS_READY}
        assert table.loaded_bytes() <= budget


def test_load_model_takes_a_single_file_model(checkpoints, tmp_path) -> None:
    """LoadModel with a GGUF file (not a directory): the format plugin opens it, the model serves."""
    from _gguf_fixtures import spm_vocabulary, uniform, write_gguf
    from _llama_fixtures import make_hf_model

    spm = spm_vocabulary()
    gguf = write_gguf(tmp_path / "tiny.Q8_0.gguf", make_hf_model("llama", vocab_size=len(spm[0])), uniform("Q8_0"), spm=spm)
    table = ModelTable.load([ModelSource("a", checkpoints["a"])])
    with socket_dir() as directory, ServingHarness(table, directory / "f.sock") as harness:
        info = harness.models.LoadModel(mpb.LoadModelRequest(name="g", path=str(gguf), wait=True), timeout=120)
        assert info.status == mpb.MODEL_STATUS_READY, info.error
        assert info.source == str(gguf) and "GGUF Q8_0" in info.weight_note
        assert _generate(harness, "g") == agentd.model.load_model(gguf).generate(PROMPT, 6)
