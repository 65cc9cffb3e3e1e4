"""The generation loop with a scripted NumPy backend and real tiny tokenizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _generation_fixtures import MULTIBYTE_TEXTS, ScriptedBackend, byte_level_bpe, sentencepiece_bpe
from agentd.detokenizer import REPLACEMENT_CHAR
from agentd.errors import InvalidArgument, OutOfRange
from agentd.generation import PREFILL_CHUNK, GenerationEvent, SamplingParams, generate_stream

GREEDY = SamplingParams(temperature=0.0)
PROMPT = np.array([5, 6, 7, 8], dtype=np.int64)


def _run(backend, tokenizer, params, prompt=PROMPT, **kwargs) -> list[GenerationEvent]:
    return list(generate_stream(backend, tokenizer, prompt, params, **kwargs))


def _tokens(events: list[GenerationEvent]) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None]


def _text(events: list[GenerationEvent]) -> str:
    return "".join(e.text for e in events)


def _check_final(events: list[GenerationEvent], reason: str) -> None:
    *steps, final = events
    assert all(e.finish_reason is None and e.token_id is not None for e in steps)
    assert final.token_id is None and final.logprob is None
    assert final.finish_reason == reason
    assert final.completion_tokens == len(steps)
    assert all(e.prompt_tokens == PROMPT.size for e in events)


def test_max_tokens_finishes_with_length_and_no_extra_decode() -> None:
    tok = byte_level_bpe()
    script = tok.encode("the quick brown fox jumps over the lazy dog", add_special_tokens=False)
    backend = ScriptedBackend(script, tok.vocab_size)
    events = _run(backend, tok, SamplingParams(temperature=0.0, max_tokens=5))
    _check_final(events, "length")
    assert _tokens(events) == script[:5]
    assert [e.completion_tokens for e in events] == [1, 2, 3, 4, 5, 5]
    assert backend.decode_calls == 4  # the 5th token is never fed back
    assert _text(events) == tok.decode(script[:5])


def test_eos_finishes_with_stop_and_is_reported() -> None:
    tok = byte_level_bpe()
    (eos,) = tok.eos_token_ids
    script = tok.encode("hello world", add_special_tokens=False) + [eos] + [9, 9, 9]
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, GREEDY)
    _check_final(events, "stop")
    assert _tokens(events) == script[: script.index(eos) + 1]
    assert _text(events) == "hello world"


def test_ignore_eos_keeps_generating() -> None:
    tok = byte_level_bpe()
    (eos,) = tok.eos_token_ids
    script = tok.encode("hello", add_special_tokens=False) + [eos] + [9, 9, 9]
    params = SamplingParams(temperature=0.0, max_tokens=len(script), ignore_eos=True)
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, params)
    _check_final(events, "length")
    assert _tokens(events) == script


@pytest.mark.parametrize("tokenizer", [byte_level_bpe, sentencepiece_bpe])
def test_stop_string_spanning_tokens_truncates_text(tokenizer) -> None:
    tok = tokenizer()
    text = "the quick brown fox jumps over the lazy dog"
    script = tok.encode(text, add_special_tokens=False)
    stop = "fox jum"
    # The stop string really spans token boundaries.
    assert all(stop not in tok.decode([i]) for i in script)
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, SamplingParams(temperature=0.0, stop=(stop, "zzz")))
    _check_final(events, "stop")
    assert _text(events) == "the quick brown "
    # Generation ends on the token that completes the stop string; its id is reported.
    done = next(n for n in range(1, len(script) + 1) if stop in tok.decode(script[:n]))
    assert _tokens(events) == script[:done]


def test_stop_string_inside_multibyte_tokens_and_earliest_match_wins() -> None:
    tok = byte_level_bpe()
    script = tok.encode("say 👋 then bye", add_special_tokens=False)
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, SamplingParams(temperature=0.0, stop=("bye", "👋")))
    _check_final(events, "stop")
    assert _text(events) == "say "
    assert all(REPLACEMENT_CHAR not in e.text for e in events)


def test_partial_stop_string_is_released_when_it_does_not_complete() -> None:
    tok = byte_level_bpe()
    text = "the dog and the dog again"
    script = tok.encode(text, add_special_tokens=False)
    params = SamplingParams(temperature=0.0, max_tokens=len(script), stop=("the dogs", "again!"))
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, params)
    _check_final(events, "length")
    assert _text(events) == text
    # "again" was held back as a possible stop start until generation ended.
    assert events[-1].text.endswith("again")


def test_context_full_finishes_with_length() -> None:
    tok = byte_level_bpe()
    script = tok.encode("the quick brown fox jumps", add_special_tokens=False)
    backend = ScriptedBackend(script, tok.vocab_size, context_length=PROMPT.size + 3)
    events = _run(backend, tok, SamplingParams(temperature=0.0, max_tokens=50))
    _check_final(events, "length")
    assert _tokens(events) == script[:3]
    assert backend.decode_calls == 2

    full = ScriptedBackend(script, tok.vocab_size, context_length=PROMPT.size)
    events = _run(full, tok, GREEDY)
    _check_final(events, "length")
    assert _tokens(events) == []

    with pytest.raises(OutOfRange):
        generate_stream(ScriptedBackend(script, tok.vocab_size, context_length=3), tok, PROMPT, GREEDY)


def test_cancelled_stops_without_further_decode_calls() -> None:
    tok = byte_level_bpe()
    script = tok.encode("the quick brown fox jumps over the lazy dog", add_special_tokens=False)
    backend = ScriptedBackend(script, tok.vocab_size)
    flag = {"cancel": False}
    events = []
    for event in generate_stream(backend, tok, PROMPT, GREEDY, cancelled=lambda: flag["cancel"]):
        events.append(event)
        if len(events) == 3:
            flag["cancel"] = True
            decode_calls_at_cancel = backend.decode_calls
    _check_final(events, "cancelled")
    assert _tokens(events) == script[:3]
    assert backend.decode_calls == decode_calls_at_cancel == 2

    before = ScriptedBackend(script, tok.vocab_size)
    events = _run(before, tok, GREEDY, cancelled=lambda: True)
    _check_final(events, "cancelled")
    assert before.prefill_calls == [] and before.decode_calls == 0


@pytest.mark.parametrize("tokenizer", [byte_level_bpe, sentencepiece_bpe])
@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_multibyte_text_streams_without_replacement_chars(tokenizer, text: str) -> None:
    tok = tokenizer()
    script = tok.encode(text, add_special_tokens=False)
    assert len(script) > len(text.split())  # characters really split over tokens
    params = SamplingParams(temperature=0.0, max_tokens=len(script))
    events = _run(ScriptedBackend(script, tok.vocab_size), tok, params)
    assert _tokens(events) == script
    assert all(REPLACEMENT_CHAR not in e.text for e in events)
    assert _text(events) == tok.decode(script)


def test_sampled_logprobs_are_finite_and_non_positive() -> None:
    tok = byte_level_bpe()
    script = tok.encode("the lazy dog", add_special_tokens=False)
    backend = ScriptedBackend(script, tok.vocab_size, margin=2.0)
    params = SamplingParams(temperature=1.2, top_p=0.95, max_tokens=40, seed=3, ignore_eos=True)
    events = _run(backend, tok, params)
    logprobs = [e.logprob for e in events if e.token_id is not None]
    assert len(logprobs) == 40
    assert all(math.isfinite(lp) and lp <= 0 for lp in logprobs)
    assert any(lp < -1e-3 for lp in logprobs)  # a real distribution, not one-hot


def test_greedy_equals_argmax_with_log_softmax_logprobs() -> None:
    tok = byte_level_bpe()
    backend = ScriptedBackend([], tok.vocab_size, margin=0.0, seed=42)  # pure noise logits
    events = _run(backend, tok, SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True))
    noise = torch.from_numpy(backend.noise[:20])  # (20, V): logits at each generated position
    assert _tokens(events) == noise.argmax(-1).tolist()
    expected = torch.log_softmax(noise.double(), -1).max(-1).values.numpy()
    np.testing.assert_allclose([e.logprob for e in events[:-1]], expected, rtol=0, atol=1e-6)


def test_same_seed_same_stream_different_seed_differs() -> None:
    tok = byte_level_bpe()

    def run(seed: int) -> list[int]:
        backend = ScriptedBackend([], tok.vocab_size, margin=0.0)
        return _tokens(_run(backend, tok, SamplingParams(max_tokens=30, seed=seed, ignore_eos=True)))

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_long_prompt_is_prefilled_in_bounded_chunks() -> None:
    tok = byte_level_bpe()
    backend = ScriptedBackend([3, 4], tok.vocab_size)
    prompt = np.arange(2 * PREFILL_CHUNK + 100, dtype=np.int64) % tok.vocab_size
    events = list(generate_stream(backend, tok, prompt, SamplingParams(temperature=0.0, max_tokens=2)))
    assert backend.prefill_calls == [PREFILL_CHUNK, PREFILL_CHUNK, 100]
    assert _tokens(events) == [3, 4]
    assert events[-1].prompt_tokens == prompt.size


def test_state_continues_a_session_within_the_context() -> None:
    tok = byte_level_bpe()
    backend = ScriptedBackend([10, 11, 12], tok.vocab_size, context_length=PROMPT.size * 2 + 4)
    state = backend.new_state()
    first = _run(backend, tok, SamplingParams(temperature=0.0, max_tokens=2), state=state)
    assert _tokens(first) == [10, 11]
    held = len(state["tokens"])  # prompt + first token (the last one was never fed back)
    assert held == PROMPT.size + 1
    second = _run(backend, tok, SamplingParams(temperature=0.0, max_tokens=50), state=state, past_tokens=held)
    assert state["tokens"][:held] == PROMPT.tolist() + [10]
    _check_final(second, "length")
    assert len(_tokens(second)) == backend.info.context_length - held - PROMPT.size


def test_without_tokenizer_text_is_empty_and_stop_strings_are_rejected() -> None:
    backend = ScriptedBackend([3, 1, 4, 1, 5], 50)
    events = _run(backend, None, SamplingParams(temperature=0.0, max_tokens=5), eos_token_ids=[4])
    _check_final(events, "stop")
    assert _tokens(events) == [3, 1, 4]
    assert _text(events) == ""
    with pytest.raises(InvalidArgument, match="^stop: "):
        generate_stream(backend, None, PROMPT, SamplingParams(stop=("x",)))


def test_arguments_are_checked_before_iteration() -> None:
    backend = ScriptedBackend([1], 50)
    with pytest.raises(InvalidArgument, match="^top_p: "):
        generate_stream(backend, None, PROMPT, SamplingParams(top_p=2.0))
    with pytest.raises(InvalidArgument, match="^prompt: "):
        generate_stream(backend, None, np.array([], dtype=np.int64), GREEDY)
    assert backend.prefill_calls == []
