"""The onnxrt decoder decodes a batch in one onnxruntime run over its slot pool.

The reference is onnxruntime itself running each sequence alone with plain
arrays (``InferenceSession.run``: past in, present out, no IOBinding, no shared
buffer, no pool), so batching, slot moves, capacity growth and right-padded
masks are all checked against a path that has none of them. The model is a
tiny random Llama (hidden 64, head_dim 16, context 512) exported to fp32.
"""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend  # noqa: E402
from _llama_fixtures import save_variant  # noqa: E402

from agentd.errors import InvalidArgument  # noqa: E402

ATOL = 1e-4
HEADER_BYTES = 28  # magic, version, layers, kv_heads, head_dim, length ("<4sIIIIQ")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("batched")
    save_variant("llama", directory / "source")
    return export(directory / "source", directory / "bundle")


@pytest.fixture()
def backend(bundle: Path):
    return onnx_backend(bundle)


class Alone:
    """One sequence run by onnxruntime with plain arrays: the cache is graph input and output."""

    def __init__(self, bundle: Path, backend) -> None:
        self.session = _plain_session(bundle)
        pool = backend.pool
        empty = np.zeros((1, pool.kv_heads, 0, pool.head_dim), dtype=np.float32)
        self.cache = {f"past_key_values.{i}.{kind}": empty for i in range(pool.layers) for kind in ("key", "value")}
        self.length = 0

    def feed(self, tokens: list[int]) -> np.ndarray:
        """Logits of the last position ``(V,)`` after feeding ``tokens``."""
        total = self.length + len(tokens)
        inputs = {
            "input_ids": np.asarray([tokens], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(self.length, total, dtype=np.int64)[None],
            **self.cache,
        }
        names = [output.name for output in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(names, inputs)))
        self.cache = {name: outputs[name.replace("past_key_values", "present")] for name in self.cache}
        self.length = total
        return outputs["logits"][0, -1]

    def saved_keys(self) -> np.ndarray:
        """Every layer's keys ``(L, KVH, T, D)``, as save_state lays them out."""
        return np.stack([self.cache[f"past_key_values.{i}.key"][0] for i in range(len(self.cache) // 2)])


@functools.cache
def _plain_session(bundle: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])


def _prompt(rng: np.random.Generator, n: int) -> list[int]:
    return [int(t) for t in rng.integers(0, 256, n)]


def _start(backend, bundle: Path, prompt: list[int]):
    """A pooled state and its reference, both fed ``prompt``; their prefill logits must agree."""
    state, alone = backend.new_state(), Alone(bundle, backend)
    np.testing.assert_allclose(backend.prefill(np.asarray(prompt), state)[0], alone.feed(prompt), atol=ATOL, rtol=0)
    return state, alone


def test_a_batch_at_different_lengths_matches_each_row_run_alone_as_rows_join_and_leave(backend, bundle) -> None:
    rng = np.random.default_rng(0)
    # 300 tokens lives in the 512-token arena; 254 grows into it during the steps.
    live = [_start(backend, bundle, _prompt(rng, n)) for n in (5, 1, 11, 300, 254)]
    joining = [_prompt(rng, n) for n in (7, 2, 40)]
    for step in range(8):
        if step in (2, 4, 5):  # a new sequence joins the batch
            live.insert(int(rng.integers(0, len(live) + 1)), _start(backend, bundle, joining.pop()))
        if step in (3, 6):  # one leaves, dropped as the engine drops it
            live.pop(int(rng.integers(0, len(live))))
        tokens = [int(t) for t in rng.integers(0, 256, len(live))]
        lengths = [state.length for state, _ in live]
        together = backend.decode(np.asarray(tokens), [state for state, _ in live])
        for row, ((state, alone), token) in enumerate(zip(live, tokens)):
            np.testing.assert_allclose(together[row], alone.feed([token]), atol=ATOL, rtol=0, err_msg=f"step {step} row {row}")
            assert state.length == lengths[row] + 1
    assert {state.capacity for state, _ in live} == {256, 512}
    for state, _ in live:
        assert backend.state_bytes(state) == state.capacity * backend.info.state_bytes_per_token


def test_one_run_per_arena_even_when_the_batch_sits_on_scattered_slots(backend, bundle, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    states = [_start(backend, bundle, _prompt(rng, n)) for n in (3, 9, 4, 6, 12, 2)]
    batch = states[::2] + states[1::2][:1]  # slots 0, 2, 4 and 1: not adjacent, not in slot order
    runs = []
    original = backend.session.run_with_iobinding
    monkeypatch.setattr(backend.session, "run_with_iobinding", lambda binding: (runs.append(1), original(binding)))
    tokens = [int(t) for t in rng.integers(0, 256, len(batch))]
    together = backend.decode(np.asarray(tokens), [state for state, _ in batch])
    assert len(runs) == 1
    for row, ((_, alone), token) in enumerate(zip(batch, tokens)):
        np.testing.assert_allclose(together[row], alone.feed([token]), atol=ATOL, rtol=0)
    # The states left out kept what they held through the moves.
    for state, alone in (states[3], states[5]):
        np.testing.assert_allclose(backend.decode(np.asarray([5]), [state])[0], alone.feed([5]), atol=ATOL, rtol=0)


def test_save_and_load_of_a_pooled_state_keep_the_committed_positions_only(backend, bundle) -> None:
    rng = np.random.default_rng(2)
    pair = [_start(backend, bundle, _prompt(rng, n)) for n in (4, 17)]
    backend.decode(np.asarray([1, 2]), [state for state, _ in pair])
    for (_, alone), token in zip(pair, (1, 2)):
        alone.feed([token])
    state, alone = pair[1]
    blob = backend.save_state(state)
    pool = backend.pool
    count = pool.layers * pool.kv_heads * state.length * pool.head_dim
    assert len(blob) == HEADER_BYTES + 2 * 4 * count
    keys = np.frombuffer(blob, dtype=np.float32, offset=HEADER_BYTES)[:count].reshape(alone.saved_keys().shape)
    np.testing.assert_allclose(keys, alone.saved_keys(), atol=ATOL, rtol=0)
    restored = backend.load_state(blob)
    assert backend.save_state(restored) == blob and restored.length == state.length
    together = backend.decode(np.asarray([9, 9]), [restored, state])
    np.testing.assert_array_equal(together[0], together[1])
    np.testing.assert_allclose(together[0], alone.feed([9]), atol=ATOL, rtol=0)


def test_a_failing_decode_commits_nothing_for_any_row(backend, bundle, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    rows = [_start(backend, bundle, _prompt(rng, n)) for n in (6, 300, 2)]  # two arenas: two runs
    states = [state for state, _ in rows]
    before = [backend.save_state(state) for state in states]
    with pytest.raises(InvalidArgument):
        backend.decode(np.asarray([3, 256, 4]), states)  # an id past the vocabulary
    original, calls = backend.session.run_with_iobinding, []

    def second_run_fails(binding):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected onnxruntime failure")
        return original(binding)

    monkeypatch.setattr(backend.session, "run_with_iobinding", second_run_fails)
    with pytest.raises(RuntimeError, match="injected"):
        backend.decode(np.asarray([3, 5, 4]), states)
    monkeypatch.undo()
    assert [backend.save_state(state) for state in states] == before
    tokens = [7, 8, 9]
    together = backend.decode(np.asarray(tokens), states)
    for row, ((_, alone), token) in enumerate(zip(rows, tokens)):
        np.testing.assert_allclose(together[row], alone.feed([token]), atol=ATOL, rtol=0)


def test_the_same_state_twice_in_a_batch_is_refused(backend, bundle) -> None:
    state, _ = _start(backend, bundle, [1, 2, 3])
    saved = backend.save_state(state)
    with pytest.raises(InvalidArgument, match="twice"):
        backend.decode(np.asarray([4, 4]), [state, state])
    assert backend.save_state(state) == saved


def test_states_created_and_dropped_release_their_slots(backend) -> None:
    rng = np.random.default_rng(4)
    for _ in range(60):
        states = [backend.new_state() for _ in range(3)]
        for state, n in zip(states, (3, 1, 8)):
            backend.prefill(rng.integers(0, 256, n), state)
        backend.decode(rng.integers(0, 256, 3), states)
        assert backend.pool.slots <= 4
        del states, state
    gc.collect()
    assert backend.pool.slots == 0 and backend.pool.nbytes == 0
