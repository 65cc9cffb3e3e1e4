"""The generation of one sequence: prefill, sample, decode, detokenise, stop.

Torch-free: every backend is driven through the contract in
:mod:`agentd.backend` (NumPy ids in, NumPy logits out). A
:class:`GenerationSequence` holds one request's per-sequence logic (sampler,
detokeniser, stop strings, counters, finish rules) and turns logits into
:class:`GenerationEvent` objects without calling the backend itself.
:func:`generate_stream` drives one sequence alone; the engine's batching
scheduler (:mod:`agentd.engine`) drives many with the same class, one batched
``decode`` per step. A sequence with a grammar constraint (:mod:`agentd.constraint`)
owns a matcher too: each token is drawn from the tokens the grammar allows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Mapping, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo, State, check_token_ids
from agentd.detokenizer import IncrementalDetokenizer
from agentd.errors import InvalidArgument, OutOfRange
from agentd.sampling import Sampler

if TYPE_CHECKING:
    from agentd.constraint import Constraint, ConstraintMatcher, Grammar
    from agentd.tokenizer import Tokenizer

#: Prompt tokens handed to ``backend.prefill`` at once, bounding activation memory.
PREFILL_CHUNK = 512
#: Limits on stop strings (OpenAI allows 4; a little more room for agents).
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 256


@dataclass(frozen=True)
class SamplingParams:
    """How to choose tokens and when to stop. ``validate()`` checks the ranges."""

    #: Most tokens to generate.
    max_tokens: int = 256
    #: Softmax temperature; 0 means greedy (argmax).
    temperature: float = 1.0
    #: Keep only the k most likely tokens; 0 turns the filter off.
    top_k: int = 0
    #: Nucleus sampling: smallest set of tokens whose probability reaches top_p.
    top_p: float = 1.0
    #: Drop tokens less likely than min_p times the most likely one.
    min_p: float = 0.0
    #: HF repetition penalty over prompt and generated ids; 1 is off.
    repetition_penalty: float = 1.0
    #: Same seed, same output; None draws a fresh seed.
    seed: int | None = None
    #: Generation stops before the first occurrence of any of these strings.
    stop: tuple[str, ...] = ()
    #: Keep generating past EOS tokens (benchmarks).
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # Wire formats hand repeated fields over as lists; the dataclass stays hashable.
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))

    def validate(self) -> None:
        """Raise :class:`InvalidArgument` naming the first out-of-range field."""
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise InvalidArgument("max_tokens", "must be an integer >= 1")
        if not _is_real(self.temperature) or not self.temperature >= 0 or math.isinf(self.temperature):
            raise InvalidArgument("temperature", "must be a finite number >= 0")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidArgument("top_k", "must be an integer >= 0 (0 turns it off)")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidArgument("top_p", "must be in (0, 1]")
        if not _is_real(self.min_p) or not 0 <= self.min_p <= 1:
            raise InvalidArgument("min_p", "must be in [0, 1]")
        if not _is_real(self.repetition_penalty) or not 0 < self.repetition_penalty < math.inf:
            raise InvalidArgument("repetition_penalty", "must be a finite number > 0")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**64):
            raise InvalidArgument("seed", "must be an integer in [0, 2**64)")
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) for s in self.stop):
            raise InvalidArgument("stop", "must be a list of strings")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidArgument("stop", f"must hold at most {MAX_STOP_STRINGS} strings")
        if any(not s for s in self.stop):
            raise InvalidArgument("stop", "must not contain empty strings")
        if any(len(s) > MAX_STOP_LENGTH for s in self.stop):
            raise InvalidArgument("stop", f"strings must be at most {MAX_STOP_LENGTH} characters")
        if not isinstance(self.ignore_eos, bool):
            raise InvalidArgument("ignore_eos", "must be a boolean")

    @classmethod
    def from_generation_config(cls, generation_config: Mapping[str, Any], **overrides: Any) -> "SamplingParams":
        """Defaults from a checkpoint's ``generation_config.json``, then ``overrides``; validated.

        Follows HF: ``do_sample`` false (or absent) means greedy whatever the
        temperature says. Only keys present in the file are taken (HF's implicit
        ``top_k=50`` is not, as in vLLM). Unknown override names raise
        :class:`InvalidArgument`.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in overrides:
            if name not in fields:
                raise InvalidArgument(name, "is not a sampling parameter")
        values: dict[str, Any] = {}
        if generation_config.get("do_sample"):
            for key in ("temperature", "top_k", "top_p", "min_p"):
                if generation_config.get(key) is not None:
                    values[key] = generation_config[key]
        else:
            values["temperature"] = 0.0
        if generation_config.get("repetition_penalty") is not None:
            values["repetition_penalty"] = generation_config["repetition_penalty"]
        if generation_config.get("max_new_tokens") is not None:
            values["max_tokens"] = generation_config["max_new_tokens"]
        values.update(overrides)
        params = cls(**values)
        params.validate()
        return params


@dataclass(frozen=True)
class GenerationEvent:
    """One streamed step: a token with its text, or the final event."""

    #: The sampled token; None on the final event.
    token_id: int | None
    #: Text completed since the previous event ("" allowed); never half a character.
    text: str
    #: Log-probability of the token under the final sampling distribution
    #: (for greedy decoding: under the model's raw logits); None on the final event.
    logprob: float | None
    #: Final event only: "stop" (EOS or stop string), "length", or "cancelled".
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class StopStringMatcher:
    """Finds stop strings in streamed text, even when they span several deltas.

    Text that could still be the start of a stop string is held back; every
    other character is released as soon as it arrives. A stop string therefore
    can never begin inside text already released.
    """

    def __init__(self, stops: tuple[str, ...]):
        self._stops = stops
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Add ``text``; return what is safe to emit. After a match, ``matched`` is set
        and the returned text is everything before the stop string."""
        if not self._stops:
            return text
        buffer = self._held + text
        hits = [(i, s) for s in self._stops if (i := buffer.find(s)) >= 0]
        if hits:
            start, self.matched = min(hits)
            self._held = ""
            return buffer[:start]
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Release the held text at the end of generation (no stop string matched)."""
        held, self._held = self._held, ""
        return held

    def _longest_partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest


class GenerationSequence:
    """One request's generation, step by step, with no backend calls of its own.

    Owns what makes a request's tokens its own: the :class:`Sampler` (and its
    seeded generator), the :class:`IncrementalDetokenizer`, the
    :class:`StopStringMatcher`, the counters and the finish rules, plus the
    backend ``state`` it is decoded in. A driver feeds it logits:
    :func:`generate_stream` one sequence at a time, the engine's scheduler a
    batch of them per step; both get identical events from identical logits.

    The constructor checks every argument, so nothing is queued or computed
    for a request that would fail.

    With a ``constraint`` (a :class:`~agentd.constraint.Constraint`, compiled
    here, or a :class:`~agentd.constraint.Grammar` compiled already for this
    tokenizer) every token is sampled among those the grammar allows, an EOS
    token is only allowed where the grammar accepts, and the sequence ends
    with "stop" as soon as the grammar is complete.
    """

    def __init__(
        self,
        info: ModelInfo,
        tokenizer: "Tokenizer | None",
        prompt_ids: np.ndarray | Sequence[int],
        params: SamplingParams,
        *,
        eos_token_ids: Collection[int] | None = None,
        state: State | None = None,
        past_tokens: int = 0,
        constraint: "Constraint | Grammar | None" = None,
    ):
        params.validate()
        if tokenizer is None and params.stop:
            raise InvalidArgument("stop", "stop strings need a tokenizer; this model has none")
        prompt = check_token_ids(prompt_ids, info.vocab_size, field="prompt")
        if prompt.size == 0:
            raise InvalidArgument("prompt", "is empty")
        if not _is_int(past_tokens) or past_tokens < 0:
            raise InvalidArgument("past_tokens", "must be an integer >= 0")
        context = info.context_length
        if past_tokens + prompt.size > context:
            raise OutOfRange(f"prompt has {past_tokens + prompt.size} tokens; the model's context is {context}")
        if eos_token_ids is None:
            eos_token_ids = tokenizer.eos_token_ids if tokenizer is not None else ()
        #: The grammar's state for this sequence (None: unconstrained).
        self.matcher: ConstraintMatcher | None = None
        if constraint is not None:
            self.matcher = _matcher(constraint, tokenizer, info, params, eos_token_ids)

        self.prompt = prompt
        self.params = params
        #: The backend state this sequence is decoded in; the driver allocates it.
        self.state: State | None = state
        self.past_tokens = int(past_tokens)
        self.eos = frozenset() if params.ignore_eos else frozenset(int(t) for t in eos_token_ids)
        # Tokens the context still holds after the prompt bound the generation too.
        self.limit = min(params.max_tokens, context - self.past_tokens - prompt.size)
        self.sampler = Sampler(params)
        self.sampler.observe(prompt.tolist())
        self.detokenizer = IncrementalDetokenizer(tokenizer) if tokenizer is not None else None
        self.stops = StopStringMatcher(params.stop)
        #: Prompt tokens already handed to ``backend.prefill``.
        self.prefilled = 0
        #: Tokens sampled so far.
        self.generated = 0
        #: The newest sampled token: the next ``decode`` input (never fed back once finished).
        self.last_token: int | None = None
        #: Set by the final event: "stop", "length" or "cancelled".
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def needs_prefill(self) -> bool:
        """True while prompt tokens remain to be prefilled."""
        return not self.finished and self.prefilled < self.prompt.size

    @property
    def decoding(self) -> bool:
        """True when the next step is ``decode([last_token])``."""
        return not self.finished and self.last_token is not None

    def next_prompt_chunk(self, max_tokens: int) -> np.ndarray:
        """The next at most ``max_tokens`` prompt tokens to prefill (not yet counted)."""
        return self.prompt[self.prefilled : self.prefilled + max_tokens]

    def accept_prefill(self, count: int, logits: np.ndarray) -> list[GenerationEvent]:
        """Record that ``count`` prompt tokens were prefilled, giving ``logits`` ``(n, V)``.

        Once the whole prompt is in, samples the first token from the last row.
        """
        self.prefilled += count
        if self.prefilled < self.prompt.size:
            return []
        if self.generated >= self.limit:  # the prompt filled the context
            return [self.finish("length")]
        return self.accept_logits(logits[-1])

    def accept_logits(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> list[GenerationEvent]:
        """Sample the next token from this sequence's logits row ``(V,)``.

        A constrained sequence samples among the tokens its grammar allows:
        ``allowed`` is that mask when the driver computed it already
        (:func:`agentd.constraint.start_masks`), else the matcher computes it
        here. Returns the token's event, followed by the final event when the
        token ends the generation (EOS, stop string, a complete grammar,
        max_tokens or a full context).
        """
        matcher = self.matcher
        if matcher is not None:
            if allowed is None:
                allowed = matcher.allowed()
            if allowed.shape[-1] < logits.shape[-1]:  # tokens past the tokenizer's vocabulary: never allowed
                allowed = np.concatenate([allowed, np.zeros(logits.shape[-1] - allowed.shape[-1], dtype=bool)])
            token, logprob = self.sampler.sample(logits, allowed[: logits.shape[-1]])
            matcher.consume(token)
        else:
            token, logprob = self.sampler.sample(logits)
        self.sampler.observe((token,))
        self.generated += 1
        self.last_token = token
        text = self.stops.feed(self.detokenizer.push(token) if self.detokenizer is not None else "")
        events = [self._event(token, text, logprob, None)]
        if self.stops.matched is not None:
            self.finish_reason = "stop"
            events.append(self._event(None, "", None, "stop"))
        elif token in self.eos or (matcher is not None and matcher.done):
            events.append(self.finish("stop"))
        elif self.generated >= self.limit:
            events.append(self.finish("length"))
        return events

    def finish(self, reason: str) -> GenerationEvent:
        """End the generation with ``reason``; returns the final event (with any held text)."""
        if self.finished:
            raise RuntimeError(f"sequence already finished ({self.finish_reason})")
        # Text held back by the detokeniser may still complete a stop string.
        text = self.stops.feed(self.detokenizer.flush() if self.detokenizer is not None else "")
        if self.stops.matched is not None:
            reason = "stop"
        else:
            text += self.stops.flush()
        self.finish_reason = reason
        return self._event(None, text, None, reason)

    def _event(self, token: int | None, text: str, logprob: float | None, reason: str | None) -> GenerationEvent:
        return GenerationEvent(token, text, logprob, reason, int(self.prompt.size), self.generated)


def generate_stream(
    backend: Backend,
    tokenizer: "Tokenizer | None",
    prompt_ids: np.ndarray,
    params: SamplingParams,
    *,
    cancelled: Callable[[], bool] | None = None,
    state: State | None = None,
    past_tokens: int = 0,
    eos_token_ids: Collection[int] | None = None,
    constraint: "Constraint | Grammar | None" = None,
) -> Iterator[GenerationEvent]:
    """Generate from ``prompt_ids``: one event per sampled token, then a final event.

    Arguments are checked here, before the first ``next()``. ``state`` continues
    a sequence (a session) that already holds ``past_tokens`` tokens; otherwise a
    fresh state is made. ``eos_token_ids`` overrides ``tokenizer.eos_token_ids``
    (for checkpoints without a tokenizer). ``cancelled`` is polled before every
    prefill chunk and every decode step; once it returns True no further
    backend call is made. The last sampled token is never fed back, so a
    session's next turn must start its prompt with it. ``constraint`` keeps
    the output inside a grammar (see :class:`GenerationSequence`).
    """
    sequence = GenerationSequence(
        backend.info,
        tokenizer,
        prompt_ids,
        params,
        eos_token_ids=eos_token_ids,
        state=state,
        past_tokens=past_tokens,
        constraint=constraint,
    )
    return _drive(backend, sequence, cancelled or (lambda: False))


def _drive(backend: Backend, sequence: GenerationSequence, cancelled: Callable[[], bool]) -> Iterator[GenerationEvent]:
    """Run one sequence to its end: prefill in chunks, then one decode per token."""
    if sequence.state is None:
        sequence.state = backend.new_state()
    while not sequence.finished:
        if cancelled():
            yield sequence.finish("cancelled")
            return
        if sequence.needs_prefill:
            chunk = sequence.next_prompt_chunk(PREFILL_CHUNK)
            events = sequence.accept_prefill(chunk.size, backend.prefill(chunk, sequence.state))
        else:
            logits = backend.decode(np.array([sequence.last_token], dtype=np.int64), [sequence.state])
            events = sequence.accept_logits(logits[0])
        yield from events


def _matcher(
    constraint: "Constraint | Grammar",
    tokenizer: "Tokenizer | None",
    info: ModelInfo,
    params: SamplingParams,
    eos_token_ids: Collection[int],
) -> "ConstraintMatcher":
    """A fresh matcher for ``constraint`` (compiled here unless it is a Grammar already)."""
    from agentd.constraint import Constraint, Grammar, compile_constraint

    if isinstance(constraint, Constraint):
        field = constraint.kind
        if params.ignore_eos:
            raise InvalidArgument("ignore_eos", f"cannot be combined with a {field} constraint")
        grammar = compile_constraint(constraint, tokenizer, info.vocab_size, eos_token_ids)
    elif isinstance(constraint, Grammar):
        field = constraint.constraint.kind
        if params.ignore_eos:
            raise InvalidArgument("ignore_eos", f"cannot be combined with a {field} constraint")
        if constraint.vocab_size != info.vocab_size:
            raise InvalidArgument(field, f"was compiled for {constraint.vocab_size} tokens; this model has {info.vocab_size}")
        grammar = constraint
    else:
        raise InvalidArgument("constraint", f"expected a Constraint or a Grammar, got {type(constraint).__name__}")
    return grammar.matcher()


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
