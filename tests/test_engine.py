"""The continuous-batching engine: parity with unbatched generation, scheduling, cancellation, errors.

Parity runs the real Llama (and, when registered, Mamba) backends on tiny
random Hugging Face checkpoints and compares every request's tokens with what
it gets alone through ``Model.generate``. Scheduling tests hold the engine in
a gated fake backend and read the calls it made, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from contextlib import aclosing

import numpy as np
import pytest

from _engine_fixtures import (
    DECODE_POISON,
    PREFILL_POISON,
    RecordingBackend,
    StepGate,
    save_tiny_llama,
    save_tiny_mamba,
)
from agentd.engine import Engine, RequestHandle
from agentd.engine.scheduler import fair_shares
from agentd.errors import InvalidArgument, OutOfRange, ResourceExhausted, Unavailable, UnsupportedArchitecture
from agentd.generation import GenerationEvent, SamplingParams, generate_stream

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
LOGPROB_ATOL = 1e-4


def _tokens(events: list[GenerationEvent]) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None]


def _final(events: list[GenerationEvent]) -> GenerationEvent:
    *steps, final = events
    assert all(e.finish_reason is None for e in steps) and final.token_id is None
    assert final.completion_tokens == len(steps)
    return final


def _prompt(seed: int, length: int, vocab: int = 60) -> list[int]:
    """Random ids below the fake backend's poison ids."""
    return np.random.default_rng(seed).integers(0, vocab, size=length).tolist()


def _alone(backend_factory, prompt: list[int], params: SamplingParams) -> list[GenerationEvent]:
    return list(generate_stream(backend_factory(), None, np.array(prompt), params))


@pytest.fixture
def gated():
    """An engine over a gated recording backend; the gate is opened before closing."""
    made: list[tuple[Engine, StepGate]] = []

    def make(**limits: int) -> tuple[Engine, RecordingBackend, StepGate]:
        gate = StepGate()
        backend = RecordingBackend(gate=gate)
        engine = Engine(backend, None, **limits)
        made.append((engine, gate))
        return engine, backend, gate

    yield make
    for engine, gate in made:
        gate.open()
        engine.close()


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from agentd import load_model

    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama")))


# -- parity with unbatched generation --------------------------------------------------------
def _check_batched_equals_alone(model, requests: list[tuple[list[int], SamplingParams]], **limits: int) -> None:
    with Engine.from_model(model, **limits) as engine:
        handles = [engine.submit(prompt, params) for prompt, params in requests]
        batched = [list(handle) for handle in handles]
    for (prompt, params), events in zip(requests, batched):
        alone = list(model.stream(prompt, params))
        assert _tokens(events) == _tokens(alone)
        assert _final(events).finish_reason == _final(alone).finish_reason
        np.testing.assert_allclose(
            [e.logprob for e in events[:-1]], [e.logprob for e in alone[:-1]], rtol=0, atol=LOGPROB_ATOL
        )


def test_llama_concurrent_greedy_equals_each_alone(llama) -> None:
    lengths, budgets = [3, 40, 9, 27, 1, 17], [12, 5, 20, 9, 15, 1]
    requests = [
        (_prompt(i, n, vocab=128), SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True))
        for i, (n, m) in enumerate(zip(lengths, budgets))
    ]
    # A small prefill budget spreads the long prompts over several steps of others' decoding.
    _check_batched_equals_alone(llama, requests, max_batch=4, prefill_chunk=16)
    # Model.generate is the public single-request path; it agrees with the stream used above.
    prompt, params = requests[0]
    assert llama.generate(prompt, params.max_tokens) == _tokens(list(llama.stream(prompt, params)))


def test_llama_seeded_sampling_is_independent_of_the_batch(llama) -> None:
    def sampled(seed: int) -> SamplingParams:
        return SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=seed, max_tokens=16, ignore_eos=True)

    target = (_prompt(100, 7, vocab=128), sampled(1234))
    others = [(_prompt(200 + i, 5 + 6 * i, vocab=128), sampled(i)) for i in range(3)]
    alone = llama.generate(target[0], 16, temperature=0.9, top_k=40, top_p=0.95, seed=1234, ignore_eos=True)
    for neighbours in (others, others[:1], []):
        with Engine.from_model(llama, max_batch=4) as engine:
            handles = [engine.submit(p, s) for p, s in [*neighbours, target]]
            results = [_tokens(list(h)) for h in handles]
        assert results[-1] == alone
    # The same seed in a different batch again gives the same tokens; another seed does not.
    assert llama.generate(target[0], 16, temperature=0.9, top_k=40, top_p=0.95, seed=99, ignore_eos=True) != alone


def test_mamba_concurrent_greedy_equals_each_alone(tmp_path) -> None:
    from agentd import load_model
    from agentd.registry import spec_for

    try:
        spec_for("MambaForCausalLM")
    except UnsupportedArchitecture:
        pytest.skip("no backend registered for MambaForCausalLM (plugins/ssm not registered yet)")
    model = load_model(save_tiny_mamba(tmp_path / "mamba"))
    requests = [
        (_prompt(i, n, vocab=128), SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True))
        for i, (n, m) in enumerate(zip([4, 30, 11], [10, 6, 14]))
    ]
    _check_batched_equals_alone(model, requests, max_batch=3, prefill_chunk=8)


def test_fake_backend_many_requests_equal_alone_exactly(gated) -> None:
    engine, backend, gate = gated(max_batch=8, max_queue=64, prefill_chunk=10)
    requests = [
        (_prompt(i, 1 + i % 13), SamplingParams(temperature=0.0 if i % 2 else 0.8, seed=i, max_tokens=2 + i % 9))
        for i in range(40)
    ]
    handles = [engine.submit(p, s) for p, s in requests]
    gate.open()  # the first decode waited until all 40 were queued
    results = [list(h) for h in handles]
    for (prompt, params), events in zip(requests, results):
        assert events == _alone(RecordingBackend, prompt, params)
    sizes = backend.decode_sizes()
    assert 1 < max(sizes) <= 8  # really batched, never past max_batch
    assert engine.active_count() == engine.queued_count() == 0


# -- scheduling ----------------------------------------------------------------------------------------
def test_a_new_request_joins_at_the_next_step(gated) -> None:
    engine, backend, gate = gated(max_batch=4)
    first = iter(engine.submit(_prompt(1, 5), GREEDY))
    assert next(first).token_id is not None  # from the prefill logits; decode 1 now waits at the gate
    gate.allow(3)
    for _ in range(3):
        next(first)  # decodes 1-3 done
    gate.wait_blocked()  # decode 4 (A alone) is under way
    second = engine.submit(_prompt(2, 6), GREEDY)
    gate.open()
    rest = list(first)
    events = list(second)

    log = backend.log
    joined = log.index(("prefill", 1, 6))
    # Decode 4 was under way (A alone); the very next step prefills B and decodes both.
    assert log[:joined] == [("prefill", 0, 5)] + [("decode", (0,))] * 4
    assert log[joined + 1] == ("decode", (0, 1))
    assert _tokens(events) == _tokens(_alone(RecordingBackend, _prompt(2, 6), GREEDY))
    assert len(_tokens(rest)) == GREEDY.max_tokens - 4


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(gated) -> None:
    engine, backend, gate = gated(max_batch=4, prefill_chunk=64)
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    running = iter(engine.submit(_prompt(1, 5), params))
    next(running)
    gate.wait_blocked()  # decode 1 (A alone) is under way
    long_prompt = _prompt(2, 200)
    late = engine.submit(long_prompt, GREEDY)
    gate.open()
    list(running)
    events = list(late)

    chunks = [i for i, entry in enumerate(backend.log) if entry[:2] == ("prefill", 1)]
    assert [backend.log[i][2] for i in chunks] == [64, 64, 64, 8]
    # Between consecutive chunks the running stream decodes: it is never stalled for the whole prompt.
    for before, after in itertools.pairwise(chunks):
        assert backend.log[before + 1 : after] == [("decode", (0,))]
    assert backend.log[chunks[-1] + 1] == ("decode", (0, 1))
    assert _tokens(events) == _tokens(_alone(RecordingBackend, long_prompt, GREEDY))


def test_cancelling_200_streams_mid_flight_frees_every_slot_and_state(gated) -> None:
    engine, backend, gate = gated(max_batch=16, max_queue=200)
    params = SamplingParams(temperature=0.0, max_tokens=1000, ignore_eos=True)
    handles = [engine.submit(_prompt(i, 3 + i % 7), params) for i in range(200)]
    streams = [iter(h) for h in handles]
    # Step 1 admitted whatever was queued then; step 2 (all 200 queued by now) fills the 16 slots.
    gate.allow(2)
    # The first 16 hold slots and are decoding.
    seen: list[list[GenerationEvent]] = [[next(stream)] for stream in streams[:16]] + [[] for _ in streams[16:]]
    assert engine.active_count() == 16
    for handle in handles:
        handle.cancel()
    gate.open()
    finals = [_final(events + list(stream)) for events, stream in zip(seen, streams)]
    assert {f.finish_reason for f in finals} == {"cancelled"}
    assert all(f.completion_tokens <= 4 for f in finals)
    assert engine.active_count() == 0 and engine.queued_count() == 0
    gc.collect()
    assert len(backend.live) == 0  # no state outlives its request
    assert len(backend.log) < 60  # queued requests were dropped, not run


def test_expired_deadlines_finish_as_cancelled(gated) -> None:
    engine, backend, gate = gated()
    # Already expired when the engine first sees it: no work at all.
    gone = list(engine.submit(_prompt(1, 4), GREEDY, deadline=time.monotonic() - 1.0))
    assert _final(gone).finish_reason == "cancelled" and _tokens(gone) == []
    assert backend.log == []
    # Expires mid-stream: ended at the next step.
    deadline = time.monotonic() + 0.2
    stream = iter(engine.submit(_prompt(2, 4), GREEDY, deadline=deadline))
    first = next(stream)  # decode 1 waits at the gate
    while time.monotonic() < deadline:
        time.sleep(0.05)
    gate.allow(1)
    events = [first, *stream]
    assert _final(events).finish_reason == "cancelled"
    assert len(_tokens(events)) == 2
    assert engine.wait_idle(10.0) and engine.active_count() == 0


def test_handle_reports_what_ran_after_the_reader_left(gated) -> None:
    engine, _, gate = gated()
    handle = engine.submit(_prompt(1, 4), SamplingParams(temperature=0.0, max_tokens=100, ignore_eos=True))
    stream = iter(handle)
    next(stream)
    gate.wait_blocked()
    stream.close()  # the reader leaves: the request is cancelled
    gate.open()
    assert engine.wait_idle(10.0)
    assert handle.done and handle.finish_reason == "cancelled"
    assert handle.completion_tokens == 2  # decode 1 was under way when the reader left
    with pytest.raises(RuntimeError, match="already being read"):
        iter(handle)


def test_full_queue_raises_resource_exhausted_at_once(gated) -> None:
    engine, _, gate = gated(max_batch=1, max_queue=2)
    running = iter(engine.submit(_prompt(1, 4), GREEDY))
    next(running)  # holds the only slot, waiting at the gate
    queued = [engine.submit(_prompt(i, 4), GREEDY) for i in (2, 3)]
    assert engine.queued_count() == 2
    with pytest.raises(ResourceExhausted, match="max_queue"):
        engine.submit(_prompt(4, 4), GREEDY)
    gate.open()
    assert all(_final(list(h)).finish_reason == "length" for h in queued)
    engine.submit(_prompt(4, 4), GREEDY)  # room again


def test_arguments_are_checked_before_any_work() -> None:
    backend = RecordingBackend(context_length=32)
    with Engine(backend, None) as engine:
        with pytest.raises(InvalidArgument, match="^top_p: "):
            engine.submit([1, 2], SamplingParams(top_p=0.0))
        with pytest.raises(InvalidArgument, match="^prompt: "):
            engine.submit([], GREEDY)
        with pytest.raises(InvalidArgument, match="^prompt: "):
            engine.submit([1, 64], GREEDY)
        with pytest.raises(InvalidArgument, match="^stop: "):
            engine.submit([1, 2], SamplingParams(stop=("x",)))  # no tokenizer
        with pytest.raises(OutOfRange):
            engine.submit(list(range(33)), GREEDY)
        assert engine.queued_count() == 0
    assert backend.log == []
    with pytest.raises(InvalidArgument, match="^max_batch: "):
        Engine(backend, None, max_batch=0)


def test_a_backend_error_fails_only_its_request() -> None:
    backend = RecordingBackend()
    healthy = [_prompt(i, 4 + i) for i in range(3)]
    with Engine(backend, None, max_batch=8) as engine:
        handles = [engine.submit(p, GREEDY) for p in healthy]
        bad_decode = engine.submit([DECODE_POISON, *_prompt(7, 3)], GREEDY)
        bad_prefill = engine.submit([*_prompt(8, 3), PREFILL_POISON], GREEDY)
        results = [list(h) for h in handles]
        with pytest.raises(RuntimeError, match="poisoned decode"):
            list(bad_decode)
        with pytest.raises(RuntimeError, match="poisoned prefill"):
            list(bad_prefill)
        for prompt, events in zip(healthy, results):
            assert events == _alone(RecordingBackend, prompt, GREEDY)
        # The engine keeps serving, and no slot leaked.
        after = list(engine.submit(healthy[0], GREEDY))
        assert after == results[0]
        assert engine.wait_idle(10.0)
        assert engine.active_count() == engine.queued_count() == 0


def test_asyncio_readers_and_abandoned_streams() -> None:
    backend = RecordingBackend(context_length=1_000_000)
    prompts = [_prompt(i, 3 + 2 * i) for i in range(4)]

    async def read(handle: RequestHandle) -> list[GenerationEvent]:
        return [event async for event in handle.aiter()]

    async def abandon(handle: RequestHandle) -> int:
        seen = 0
        async with aclosing(handle.aiter()) as events:
            async for _ in events:
                seen += 1
                if seen == 2:
                    break
        return seen

    async def main(engine: Engine) -> tuple[list[list[GenerationEvent]], int]:
        # Would take minutes to finish: only cancellation can end it in time for wait_idle.
        long_params = SamplingParams(temperature=0.0, max_tokens=900_000, ignore_eos=True)
        abandoned = engine.submit(_prompt(9, 3), long_params)
        handles = [engine.submit(p, GREEDY) for p in prompts]
        results = await asyncio.gather(*(read(h) for h in handles), abandon(abandoned))
        return list(results[:-1]), results[-1]

    with Engine(backend, None, max_batch=8) as engine:
        results, seen = asyncio.run(main(engine))
        assert seen == 2
        assert engine.wait_idle(60.0)  # the abandoned stream was cancelled
        assert engine.active_count() == 0
    for prompt, events in zip(prompts, results):
        assert events == _alone(RecordingBackend, prompt, GREEDY)


def test_close_drains_or_cancels_and_then_refuses_work(gated) -> None:
    engine, _, gate = gated(max_batch=2)
    handles = [engine.submit(_prompt(i, 4), GREEDY) for i in range(3)]
    gate.open()
    engine.close(drain=True, grace=30.0)
    assert [_final(list(h)).finish_reason for h in handles] == ["length"] * 3
    with pytest.raises(Unavailable):
        engine.submit(_prompt(1, 4), GREEDY)

    engine, _, gate = gated(max_batch=2)
    handles = [engine.submit(_prompt(i, 4), GREEDY) for i in range(3)]
    streams = [iter(h) for h in handles]
    first = next(streams[0])
    gate.wait_blocked()  # requests 0 and 1 running, 2 queued
    closer = threading.Thread(target=engine.close)
    closer.start()
    gate.open()
    closer.join()
    finals = [_final(([first] if i == 0 else []) + list(s)) for i, s in enumerate(streams)]
    assert finals[2].finish_reason == "cancelled"  # never admitted
    assert engine.active_count() == engine.queued_count() == 0


def test_a_short_prompt_is_not_prefilled_after_a_long_one(gated) -> None:
    engine, backend, gate = gated(max_batch=4, prefill_chunk=64)
    gate.open()
    with engine._cond:  # both wait in the queue, so they are admitted in the same step, long one first
        long_handle = engine.submit(_prompt(1, 600), GREEDY)
        short_handle = engine.submit(_prompt(2, 10), GREEDY)
    long_events, short_events = list(long_handle), list(short_handle)

    prefills = [entry for entry in backend.log if entry[0] == "prefill"]
    # The first step shares the 64-token budget: all of the short prompt, the rest to the long one
    # (oldest first, it took 9 steps of 64 tokens before the short one got any).
    assert prefills[:2] == [("prefill", 0, 54), ("prefill", 1, 10)]
    assert sum(size for _, tag, size in prefills if tag == 0) == 600
    assert _tokens(short_events) == _tokens(_alone(RecordingBackend, _prompt(2, 10), GREEDY))
    assert _tokens(long_events) == _tokens(_alone(RecordingBackend, _prompt(1, 600), GREEDY))


@pytest.mark.parametrize(
    ("needs", "budget", "shares"),
    [
        ([600, 10], 64, [54, 10]),  # the short one fits its half: all of it now
        ([600, 600], 64, [32, 32]),  # equal long prompts share equally
        ([5, 100, 7], 64, [5, 52, 7]),
        ([100, 100, 100], 64, [22, 21, 21]),  # what cannot be split equally goes to the oldest
        ([3, 2], 64, [3, 2]),  # less needed than the budget: everything
        ([1, 1, 1], 2, [1, 1, 0]),  # more requests than tokens: the oldest first
        ([], 64, []),
    ],
)
def test_fair_shares_split_the_prefill_budget_max_min_fairly(needs, budget, shares) -> None:
    assert fair_shares(needs, budget) == shares
