"""The backend contract, enforced: every registered backend runs :mod:`agentd.conformance`.

Parametrised over ``agentd.registry.backend_specs()``: a backend registered
without a conformance fixture here (or one its plugin offers through the
``agentd.conformance`` entry-point group, as the third-party plugin of
``tests/test_plugins.py`` does) FAILS the module. Each fixture builds a tiny
random-weight model with the reference library (transformers, the ``rwkv``
package's layout, the ONNX exporter), loads it the way serving does, and
names how to make ``decode`` fail midway:

* torch backends: the method the decode step calls once per layer raises on
  the last layer, after every earlier layer has run (and, before the fix,
  had written its part of a batch-of-one state in place);
* onnxrt KV decoder: the session's ``run_with_iobinding`` raises on the last
  row of the batch, after the earlier rows have run (and, before the fix,
  had committed their new position);
* onnxrt fixed-state decoder: the session's ``run`` raises (one run per batch).

Tolerances (prefill + decode vs one full forward; batched vs alone) are per
backend and say why in the fixture.
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agentd import conformance  # noqa: E402
from agentd.backend import Backend  # noqa: E402
from agentd.conformance import Fixture, Tolerance, fail_on_call  # noqa: E402
from agentd.registry import backend_specs  # noqa: E402


def _load(directory: Path, quant: str | None = None) -> Backend:
    import agentd

    backend = agentd.load_model(directory, quant).backend  # the serving path: packed or quantised weights
    assert quant is None or backend.info.dtype == {"fp32": "float32"}.get(quant, quant)
    return backend


# -- builders ------------------------------------------------------------------------------


def _llama(variant: str, quant: str | None = None) -> Callable[[Path], Backend]:
    def build(directory: Path) -> Backend:
        from _llama_fixtures import save_variant

        save_variant(variant, directory)
        return _load(directory, quant)

    return build



def _bert(directory: Path) -> Backend:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.2)
    model.save_pretrained(directory)
    return _load(directory)


def _mamba(directory: Path, quant: str | None = None) -> Backend:
    from _ssm_fixtures import make_hf_mamba

    make_hf_mamba(directory, use_bias=True)
    return _load(directory, quant)


def _mamba2(directory: Path) -> Backend:
    from _ssm_fixtures import make_hf_mamba2

    make_hf_mamba2(directory, tie_word_embeddings=True, time_step_limit=(0.01, 2.0))
    return _load(directory)


def _rwkv4(directory: Path) -> Backend:
    from _rwkv_fixtures import make_hf_rwkv4

    make_hf_rwkv4(directory)  # rescale_every=2: the halved blocks run too
    return _load(directory)


def _rwkv7(directory: Path, quant: str | None = None) -> Backend:
    from _rwkv_fixtures import make_rwkv7_pth

    from agentd.plugins.linear.convert import convert_rwkv7_pth

    pth = make_rwkv7_pth(directory / "tiny.pth", hidden=64, layers=2, head_size=32)
    return _load(convert_rwkv7_pth(pth, directory / "converted"), quant)


def _onnx(source: Callable[[Path], Backend], quant: str = "fp32") -> Callable[[Path], Backend]:
    def build(directory: Path) -> Backend:
        from _export_fixtures import export, onnx_backend

        source(directory / "source")
        return onnx_backend(export(directory / "source", directory / "bundle", quant=quant))

    return build


# -- failure injectors ---------------------------------------------------------------------


def _last_layer(method: str, layers: Callable[[Backend], int], owner: Callable[[Backend], object] = lambda b: b):
    """Fail ``owner(backend).method`` (called once per layer by a decode step) on the last layer."""

    def inject(backend: Backend) -> conformance.FailureInjector:
        return lambda batch: fail_on_call(owner(backend), method, after=layers(backend) - 1)

    return inject


def _onnx_batch_run(backend: Backend) -> conformance.FailureInjector:
    # The whole decode batch is one run (its rows on adjacent pool slots): that run fails.
    return lambda batch: fail_on_call(backend.session, "run_with_iobinding", after=0)


def _onnx_run(backend: Backend) -> conformance.FailureInjector:
    return lambda batch: fail_on_call(backend.session, "run", after=0)


_fixed_state_layer = _last_layer("_mix_step", lambda b: len(b.layers))
_rwkv_layer = _last_layer("_channel_mix", lambda b: len(b.layers))
_llama_layer = _last_layer("_mlp", lambda b: len(b.model.layers), owner=lambda b: b.model)

#: Torch backends: oneDNN / MKL pick kernels by row count, so a row decoded in a batch of
#: three and alone differ by rounding, as do the parallel (prefill) and recurrent forms.
TORCH = Tolerance(atol=2e-4, rtol=2e-4, batch_atol=2e-4, batch_rtol=2e-4)
#: Quantised torch backends: activations enter the int8/int4 kernels as bfloat16 (8 bits of
#: mantissa), so the parallel and recurrent forms, or a row in a batch and alone, round apart by more.
QUANTISED = Tolerance(atol=3e-2, rtol=3e-2, batch_atol=3e-2, batch_rtol=3e-2)

#: Built-in backend name -> its fixtures.
FIXTURES: dict[str, list[Fixture]] = {
    "transformer": [
        Fixture("llama", "decoder", _llama("llama"), _llama_layer, TORCH, why="tiled prefill attention vs decode matmuls"),
        Fixture("qwen2-tied", "decoder", _llama("qwen2-tied"), _llama_layer, TORCH, why="q/k/v biases, packed tied head"),
        Fixture("llama-int4", "decoder", _llama("llama", "int4"), _llama_layer, QUANTISED, why="int4 groups, int8 head"),
        Fixture("qwen2-tied-int8", "decoder", _llama("qwen2-tied", "int8"), _llama_layer, QUANTISED, why="int8 rows, one int8 table for the tied head and the embedding"),
    ],
    "bert": [Fixture("bert", "encoder", _bert, tolerance=Tolerance(batch_atol=1e-5, batch_rtol=1e-5), why="padding is masked out")],
    "mamba": [
        Fixture("mamba", "decoder", _mamba, _fixed_state_layer, TORCH, why="chunked log-depth scan vs recurrent step"),
        Fixture("mamba-int4", "decoder", functools.partial(_mamba, quant="int4"), _fixed_state_layer, QUANTISED, why="int4 projections"),
    ],
    "mamba2": [Fixture("mamba2-tied", "decoder", _mamba2, _fixed_state_layer, TORCH, why="chunked SSD vs recurrent step")],
    "rwkv4": [Fixture("rwkv4", "decoder", _rwkv4, _rwkv_layer, TORCH, why="chunked WKV vs recurrent step")],
    "rwkv7": [
        Fixture("rwkv7", "decoder", _rwkv7, _rwkv_layer, TORCH, why="chunked delta rule vs recurrent step"),
        Fixture("rwkv7-int4", "decoder", functools.partial(_rwkv7, quant="int4"), _rwkv_layer, QUANTISED, why="int4 projections"),
    ],
    "onnxrt": [
        Fixture("onnx-llama", "decoder", _onnx(_llama("llama")), _onnx_batch_run,
                Tolerance(atol=2e-4, rtol=2e-4, batch_atol=0, batch_rtol=0), why="GQA attends each row over its own length: batched == alone exactly"),
        Fixture("onnx-mamba2", "decoder", _onnx(_mamba2), _onnx_run, TORCH, why="one graph, sequence vs step shapes"),
        Fixture("onnx-bert", "encoder", _onnx(_bert), tolerance=Tolerance(batch_atol=1e-5, batch_rtol=1e-5)),
    ],
}


def _plugin_fixtures() -> dict[str, list[Fixture]]:
    """Fixtures installed plugins offer for their own backends (entry-point group ``agentd.conformance``)."""
    found: dict[str, list[Fixture]] = {}
    for point in entry_points(group=conformance.ENTRY_POINT_GROUP):
        offered = point.load()()
        found.setdefault(point.name, []).extend(offered if isinstance(offered, list) else [offered])
    return found


def _all_fixtures() -> dict[str, list[Fixture]]:
    return {**_plugin_fixtures(), **FIXTURES}


DECODER_CHECKS = ("info", "prefill_decode", "batched_decode", "save_load", "failed_decode")
ENCODER_CHECKS = ("info", "embed_batch")


def _cases() -> list:
    fixtures = _all_fixtures()
    cases = []
    for spec in backend_specs():
        if not fixtures.get(spec.name):
            cases.append(pytest.param(spec.name, None, "fixture", id=f"{spec.name}-no-fixture"))
            continue
        for fixture in fixtures[spec.name]:
            marks = [pytest.mark.slow] if fixture.slow else []
            for check in DECODER_CHECKS if fixture.kind == "decoder" else ENCODER_CHECKS:
                cases.append(pytest.param(spec.name, fixture, check, id=f"{spec.name}-{fixture.variant}-{check}", marks=marks))
    return cases


def test_every_registered_backend_has_a_conformance_fixture() -> None:
    registered = {spec.name for spec in backend_specs()}
    missing = sorted(registered - _all_fixtures().keys())
    assert not missing, f"registered backends without a conformance fixture: {missing} (add one to FIXTURES)"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Fixture], Backend]:
    """Each variant's backend, built once for the module."""

    @functools.cache
    def build(fixture: Fixture) -> Backend:
        return fixture.build(tmp_path_factory.mktemp(fixture.variant))

    return build


@pytest.mark.parametrize(("backend_name", "fixture", "check"), _cases())
def test_conformance(backend_name: str, fixture: Fixture | None, check: str, built) -> None:
    spec = next(spec for spec in backend_specs() if spec.name == backend_name)
    if fixture is None:
        pytest.fail(f"backend {backend_name!r} is registered but has no conformance fixture")
    if spec.unavailable_reason:
        pytest.skip(f"backend {backend_name!r} {spec.unavailable_reason}")
    backend = built(fixture)
    assert backend.info.kind == fixture.kind
    tolerance = fixture.tolerance
    if check == "info":
        conformance.check_info(backend)
    elif check == "embed_batch":
        conformance.check_embed_batch_matches_alone(backend, tolerance=tolerance)
    else:
        work = conformance.workload(backend.info.vocab_size)
        if check == "prefill_decode":
            conformance.check_prefill_decode_matches_forward(backend, work, tolerance=tolerance)
        elif check == "batched_decode":
            conformance.check_batched_decode_matches_alone(backend, work, tolerance=tolerance)
        elif check == "save_load":
            conformance.check_save_load_round_trip(backend, work)
        else:
            assert fixture.inject is not None, f"{fixture.variant}: a decoder fixture needs a failure injector"
            conformance.check_failed_decode_is_all_or_nothing(backend, work, fixture.inject(backend))


# -- the checks themselves can fail --------------------------------------------------------


class _Bigram(Backend):
    """A NumPy bigram model whose ``decode`` commits each row as it goes unless ``atomic``."""

    def __init__(self, atomic: bool):
        from agentd.backend import ModelInfo

        self.table = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
        self.atomic = atomic
        self.info = ModelInfo("Bigram", "decoder", 256, 64, 16, "float32", state_bytes_per_token=8, weight_bytes=1024)

    def new_state(self) -> list[int]:
        return []

    def prefill(self, token_ids, state, *, all_logits=False):
        ids = np.asarray(token_ids)
        positions = len(state) + 1 + np.arange(ids.size, dtype=np.float32)  # logits depend on the position
        state.extend(int(t) for t in ids)
        rows = self.table[ids] + positions[:, None]
        return rows if all_logits else rows[-1:]

    def _row(self, token: int, position: int) -> np.ndarray:
        return self.table[token] + position

    def decode(self, token_ids, states):
        rows = []
        for token, state in zip(token_ids, states):
            rows.append(self._row(int(token), len(state) + 1))
            if not self.atomic:
                state.append(int(token))  # committed before the later rows ran
        if self.atomic:
            for token, state in zip(token_ids, states):
                state.append(int(token))
        return np.stack(rows)

    def state_bytes(self, state):
        return 8 * len(state)

    def save_state(self, state):
        return np.asarray(state, dtype=np.int64).tobytes()

    def load_state(self, data):
        return np.frombuffer(data, dtype=np.int64).tolist()


def test_failed_decode_check_catches_a_row_by_row_commit() -> None:
    def inject(backend):
        return lambda batch: fail_on_call(backend, "_row", after=batch - 1)

    good, bad = _Bigram(atomic=True), _Bigram(atomic=False)
    work = conformance.workload(16)
    conformance.check_failed_decode_is_all_or_nothing(good, work, inject(good))
    with pytest.raises(conformance.ConformanceError, match="batch of 3: state of row 0 changed although decode raised"):
        conformance.check_failed_decode_is_all_or_nothing(bad, work, inject(bad))
    with pytest.raises(conformance.ConformanceError, match="injected failure did not fire"):
        conformance.check_failed_decode_is_all_or_nothing(good, work, lambda batch: fail_on_call(good, "_row", after=99))


def test_prefill_decode_check_catches_a_wrong_position() -> None:
    backend = _Bigram(atomic=True)
    backend._row = lambda token, position: backend.table[token] + position + 1  # off by one
    with pytest.raises(conformance.ConformanceError, match="prefill \\+ decode vs one forward"):
        conformance.check_prefill_decode_matches_forward(backend, conformance.workload(16), tolerance=Tolerance())


def test_save_load_check_catches_a_lossy_state() -> None:
    backend = _Bigram(atomic=True)
    backend.load_state = lambda data: np.frombuffer(data, dtype=np.int64).tolist()[1:]  # drops a token
    with pytest.raises(conformance.ConformanceError, match="saves to different bytes"):
        conformance.check_save_load_round_trip(backend, conformance.workload(16))


def test_info_check_wants_weight_bytes() -> None:
    import dataclasses

    backend = _Bigram(atomic=True)
    backend.info = dataclasses.replace(backend.info, weight_bytes=0)
    with pytest.raises(conformance.ConformanceError, match="info.weight_bytes must be a positive int"):
        conformance.check_info(backend)



# -- ModelInfo.weight_bytes: what is resident, not parameters x 4 -----------------------

TORCH_FIXTURES = [
    pytest.param(fixture, id=fixture.variant)
    for name, fixtures in FIXTURES.items()
    if name != "onnxrt"
    for fixture in fixtures
]


@pytest.mark.parametrize("fixture", TORCH_FIXTURES)
def test_loaded_torch_model_reports_at_least_four_bytes_per_parameter(fixture: Fixture, built) -> None:
    backend = built(fixture)
    info = backend.info
    if fixture.variant.endswith(("int4", "int8")):
        # Quantised weights are counted at their size: 1 byte (int8) or ~0.6 (int4 codes, scales and
        # zero points) per parameter, norms and biases float32, the head int8.
        assert info.dtype == fixture.variant.rsplit("-", 1)[1]
        assert 0 < info.weight_bytes <= info.parameters * 1.5
        return
    assert info.dtype == "float32"
    # RWKV folds block 0's LayerNorm (weight and bias) into its embedding table at load:
    # those 2 x hidden parameters are not held apart.
    folded = 2 * backend.config.hidden_size if fixture.variant.startswith("rwkv") else 0
    assert info.weight_bytes >= (info.parameters - folded) * 4
    head = getattr(backend, "lm_head", None)
    if head is None:
        head = getattr(getattr(backend, "model", None), "lm_head", None)
    if head is not None and head.is_mkldnn:
        embeddings = getattr(backend, "embeddings", None)
        if embeddings is None:
            embeddings = backend.model.embed
        if fixture.variant.endswith("tied"):
            # The gather keeps the dense table and the head is a packed copy of it: both are resident.
            assert info.weight_bytes >= info.parameters * 4 + embeddings.numel() * 4


@pytest.mark.slow
def test_int4_onnx_bundle_reports_its_stored_bytes_not_four_per_parameter(tmp_path: Path) -> None:
    from _export_fixtures import export, onnx_backend
    from _llama_fixtures import save_variant

    save_variant("llama", tmp_path / "source")
    fp32 = onnx_backend(export(tmp_path / "source", tmp_path / "fp32")).info
    int4 = onnx_backend(export(tmp_path / "source", tmp_path / "int4", quant="int4", block_size=32)).info
    assert fp32.parameters == int4.parameters
    assert fp32.weight_bytes >= fp32.parameters * 4  # every initialiser at fp32
    assert int4.weight_bytes < 0.35 * fp32.weight_bytes  # int4 blocks + scales, not 4 bytes a parameter
