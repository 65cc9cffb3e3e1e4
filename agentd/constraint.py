"""Grammar-constrained decoding: every generated token keeps the output inside a grammar.

A :class:`Constraint` says what the output must be — a JSON schema, a
regular expression or a Lark grammar — independently of any model.
:func:`compile_constraint` turns it into a :class:`Grammar` for one model's
tokenizer (with `llguidance <https://github.com/guidance-ai/llguidance>`_),
and each generation takes its own :class:`ConstraintMatcher` from it:

    grammar = compile_constraint(Constraint.json_schema(schema), model.tokenizer, model.info.vocab_size)
    matcher = grammar.matcher()
    allowed = matcher.allowed()          # (V,) bool: the tokens that keep the output valid
    matcher.consume(token)               # after sampling among them
    matcher.done                         # True once the grammar cannot go on: stop generating

:class:`agentd.generation.GenerationSequence` applies the mask before its
sampler's filters (disallowed logits are -inf, so greedy and sampled decoding
both obey it), ends the sequence with "stop" when the grammar is complete and
lets end-of-sequence through only where the grammar accepts. The engine
computes the masks of a batch with :func:`start_masks` while the batched
forward pass runs: llguidance does the work off the GIL, in parallel.

Caches: the llguidance tokenizer (built once per model tokenizer, ~0.2 s for
a 49k vocabulary) and the compiled grammars (by kind and text, the most
recent :data:`GRAMMAR_CACHE_SIZE` per tokenizer); a matcher is a cheap copy
of a cached, untouched one.

Torch-free. ``llguidance`` is imported only when a constraint is compiled,
so the client SDK can name constraints without it.
"""

from __future__ import annotations

import collections
import json
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Literal, Mapping, Sequence

import numpy as np

from agentd.errors import InvalidArgument

if TYPE_CHECKING:
    import llguidance

    from agentd.tokenizer import Tokenizer

Kind = Literal["json_schema", "regex", "lark_grammar"]
#: The kinds of constraint, named as the GenerateRequest fields that carry them.
KINDS: tuple[Kind, ...] = ("json_schema", "regex", "lark_grammar")
#: Longest constraint text accepted (bounds compile time and memory).
MAX_CONSTRAINT_CHARS = 256 * 1024
#: Compiled grammars kept per tokenizer.
GRAMMAR_CACHE_SIZE = 64
#: How JSON is written unless the schema's "x-guidance" says otherwise: no free
#: whitespace (a small model would pad with it endlessly), the usual separators.
JSON_DEFAULTS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Constraint:
    """What a generation's output must be; model-independent and hashable."""

    #: "json_schema", "regex" or "lark_grammar" (the GenerateRequest field names).
    kind: Kind
    #: The schema (JSON text), the regular expression or the Lark grammar.
    text: str

    @classmethod
    def json_schema(cls, schema: str | Mapping[str, Any]) -> "Constraint":
        """Output is one JSON value valid under ``schema`` (JSON text or a dict)."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return cls("json_schema", text)

    @classmethod
    def regex(cls, pattern: str) -> "Constraint":
        """Output fully matches ``pattern`` (Rust ``regex`` syntax)."""
        return cls("regex", pattern)

    @classmethod
    def lark(cls, grammar: str) -> "Constraint":
        """Output matches the ``start`` rule of a Lark grammar (llguidance's dialect)."""
        return cls("lark_grammar", grammar)

    def validate(self) -> None:
        """Raise :class:`InvalidArgument` for a malformed constraint (the grammar itself
        is checked when compiled)."""
        if self.kind not in KINDS:
            raise InvalidArgument("constraint", f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidArgument(self.kind, "is empty")
        if len(self.text) > MAX_CONSTRAINT_CHARS:
            raise InvalidArgument(self.kind, f"is {len(self.text)} characters; at most {MAX_CONSTRAINT_CHARS}")


class Grammar:
    """A :class:`Constraint` compiled for one tokenizer; makes a matcher per generation.

    Thread-safe: :meth:`matcher` copies a pristine matcher that is never used itself.
    """

    def __init__(self, constraint: Constraint, vocab: "_Vocabulary", pristine: "llguidance.LLMatcher"):
        self.constraint = constraint
        self.vocab_size = vocab.vocab_size
        self.eos_token_ids = vocab.eos_token_ids
        self._vocab = vocab
        self._pristine = pristine
        self._lock = threading.Lock()

    def matcher(self) -> "ConstraintMatcher":
        """A fresh matcher at the start of the grammar."""
        with self._lock:
            copy = self._pristine.deep_copy()
        return ConstraintMatcher(self, copy)

    def __repr__(self) -> str:
        return f"Grammar({self.constraint.kind}, {len(self.constraint.text)} chars, vocab={self.vocab_size})"


class ConstraintMatcher:
    """One generation's position in its grammar. Not thread-safe: one sequence owns it."""

    def __init__(self, grammar: Grammar, matcher: "llguidance.LLMatcher"):
        self.grammar = grammar
        self._matcher = matcher
        self._words = np.empty(grammar._vocab.mask_words, dtype=np.int32)

    @property
    def vocab_size(self) -> int:
        return self.grammar.vocab_size

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more (only end-of-sequence)."""
        return self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        """What was consumed so far is a complete output (more may still follow)."""
        return self._matcher.is_accepting()

    def allowed(self) -> np.ndarray:
        """The tokens allowed next, as a ``(vocab_size,)`` bool array (computed now)."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, self._words.reshape(1, -1))
        self._check()
        return unpack_mask(self._words, self.vocab_size)

    def consume(self, token: int) -> None:
        """Advance past ``token``; raises RuntimeError if the grammar does not allow it."""
        if not self._matcher.consume_token(int(token)):
            raise RuntimeError(f"constraint rejected token {int(token)}: {_one_line(self._matcher.get_error())}")

    def _check(self) -> None:
        if self._matcher.is_error():
            raise RuntimeError(f"constraint matcher failed: {_one_line(self._matcher.get_error())}")


def unpack_mask(words: np.ndarray, vocab_size: int) -> np.ndarray:
    """llguidance's bitmask (int32 words, bit i of word w = token 32w+i) as ``(..., vocab_size)`` bool."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :vocab_size].view(bool)


class MaskBatch:
    """Masks of several matchers being computed on the mask thread; :meth:`result` waits."""

    def __init__(self, future: "Future[np.ndarray]"):
        self._future = future

    def result(self) -> np.ndarray:
        """``(n, vocab_size)`` bool, row i for matcher i; raises what the computation raised."""
        return self._future.result()


def start_masks(matchers: Sequence[ConstraintMatcher]) -> MaskBatch:
    """Begin computing the next-token masks of ``matchers`` (all of one vocabulary size)
    in the background; the caller must not touch them until :meth:`MaskBatch.result`.

    The work runs in llguidance's thread pool with the GIL released, so the
    caller's forward pass (torch or onnxruntime, which release it too) runs
    at the same time.
    """
    return MaskBatch(_mask_thread().submit(compute_masks, list(matchers)))


def compute_masks(matchers: Sequence[ConstraintMatcher]) -> np.ndarray:
    """The next-token masks of ``matchers`` as ``(n, vocab_size)`` bool, computed in parallel."""
    if not matchers:
        return np.zeros((0, 0), dtype=bool)
    from llguidance.numpy import fill_next_token_bitmask_par

    vocab = matchers[0].grammar._vocab
    if any(m.grammar._vocab.mask_words != vocab.mask_words for m in matchers):
        raise ValueError("compute_masks needs matchers of one vocabulary size")
    words = np.empty((len(matchers), vocab.mask_words), dtype=np.int32)
    fill_next_token_bitmask_par(_executor(), [(m._matcher, i) for i, m in enumerate(matchers)], words)
    for matcher in matchers:
        matcher._check()
    return unpack_mask(words, matchers[0].vocab_size)


# -- compiling ---------------------------------------------------------------------
def compile_constraint(
    constraint: Constraint,
    tokenizer: "Tokenizer | None",
    vocab_size: int,
    eos_token_ids: Collection[int] | None = None,
) -> Grammar:
    """``constraint`` compiled for ``tokenizer`` over ``vocab_size`` logits (the model's).

    ``eos_token_ids`` (default: the tokenizer's) are the tokens the grammar
    allows where it accepts. Raises :class:`InvalidArgument` naming the
    constraint's field for an invalid schema, regex or grammar, or when the
    tokenizer is one constrained decoding cannot use. Cached: compiling the
    same text again for the same tokenizer is a dictionary lookup.
    """
    constraint.validate()
    if tokenizer is None:
        raise InvalidArgument(constraint.kind, "constrained decoding needs a tokenizer; this model has none")
    eos = tuple(sorted(int(t) for t in (tokenizer.eos_token_ids if eos_token_ids is None else eos_token_ids)))
    vocab = _vocabulary(tokenizer, int(vocab_size), eos, constraint.kind)
    key = (constraint.kind, constraint.text)
    with vocab.lock:
        grammar = vocab.grammars.get(key)
        if grammar is not None:
            vocab.grammars.move_to_end(key)
            return grammar
    grammar = Grammar(constraint, vocab, _compile(constraint, vocab))  # outside the lock: may take a while
    with vocab.lock:
        vocab.grammars[key] = grammar
        while len(vocab.grammars) > GRAMMAR_CACHE_SIZE:
            vocab.grammars.popitem(last=False)
    return grammar


def _compile(constraint: Constraint, vocab: "_Vocabulary") -> "llguidance.LLMatcher":
    import llguidance

    kind, text = constraint.kind, constraint.text
    if kind == "json_schema":
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(kind, f"is not valid JSON ({exc})") from None
        if not isinstance(schema, (dict, bool)):
            raise InvalidArgument(kind, "must be a JSON object (a schema)")
        try:
            source = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_DEFAULTS)
        except ValueError as exc:
            raise InvalidArgument(kind, _one_line(str(exc))) from None
    elif kind == "regex":
        source = llguidance.LLMatcher.grammar_from_regex(text)
    else:
        source = llguidance.LLMatcher.grammar_from_lark(text)
    # The matcher compiles the grammar (lexer, parser tables), releasing the GIL;
    # it never raises for a bad grammar but starts in an error state instead.
    matcher = llguidance.LLMatcher(vocab.tokenizer, source, log_level=0)
    if matcher.is_error():
        raise InvalidArgument(kind, _describe_error(kind, matcher.get_error()))
    return matcher


def _describe_error(kind: Kind, error: str) -> str:
    message = _one_line(error)
    # llguidance wraps a regex as the Lark rule `start: /.../`; its position
    # prefix refers to that wrapper, not to the user's text.
    if kind == "regex" and message.startswith("at "):
        message = message.split(": ", 1)[-1]
    return message


def _one_line(text: str, limit: int = 300) -> str:
    """The first line of an error (llguidance adds a source excerpt below it), shortened."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    # "regex parse error:" is followed by the pattern and a caret, then the actual error.
    errors = [line for line in lines if line.startswith("error:")]
    first = lines[0] if lines else "invalid"
    message = f"{first.rstrip(':')}: {errors[0][len('error:'):].strip()}" if errors and errors[0] != first else first
    return message if len(message) <= limit else message[: limit - 3] + "..."


# -- the llguidance tokenizer, per model tokenizer -------------------------------------
class _Vocabulary:
    """A model tokenizer as llguidance sees it, and the grammars compiled for it."""

    def __init__(self, tokenizer: "llguidance.LLTokenizer", vocab_size: int, eos_token_ids: tuple[int, ...]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = frozenset(eos_token_ids)
        self.mask_words = (max(vocab_size, tokenizer.vocab_size) + 31) // 32
        self.lock = threading.Lock()
        self.grammars: collections.OrderedDict[tuple[str, str], Grammar] = collections.OrderedDict()


_vocabularies: "weakref.WeakKeyDictionary[Tokenizer, dict[tuple[int, tuple[int, ...]], _Vocabulary]]" = (
    weakref.WeakKeyDictionary()
)
_vocabularies_lock = threading.Lock()
# One build at a time: building takes ~0.2 s and a burst of first requests must not do it N times.
_build_lock = threading.Lock()


def _vocabulary(tokenizer: "Tokenizer", vocab_size: int, eos: tuple[int, ...], field: str) -> _Vocabulary:
    key = (vocab_size, eos)
    with _vocabularies_lock:
        found = _vocabularies.get(tokenizer, {}).get(key)
    if found is not None:
        return found
    with _build_lock:
        with _vocabularies_lock:
            found = _vocabularies.get(tokenizer, {}).get(key)
        if found is not None:
            return found
        vocab = _Vocabulary(_llg_tokenizer(tokenizer, vocab_size, eos, field), vocab_size, eos)
        with _vocabularies_lock:
            _vocabularies.setdefault(tokenizer, {})[key] = vocab
        return vocab


def _llg_tokenizer(tokenizer: "Tokenizer", vocab_size: int, eos: tuple[int, ...], field: str) -> "llguidance.LLTokenizer":
    """llguidance's view of ``tokenizer``: from its ``tokenizer.json`` when the Rust
    ``tokenizers`` library runs it, else from its vocabulary's bytes."""
    import llguidance

    # The Tokenizer's encoder: a tokenizers.Tokenizer, or another TokenizerBackend.
    backend = tokenizer.backend
    n_vocab = max(vocab_size, tokenizer.vocab_size)
    to_str = getattr(backend, "to_str", None)
    if callable(to_str) and type(backend).__module__.startswith("tokenizers"):
        try:
            return llguidance.LLTokenizer(to_str(), n_vocab=n_vocab, eos_token=list(eos) or None)
        except Exception as exc:  # llguidance cannot use this tokenizer.json
            raise InvalidArgument(
                field, f"constrained decoding needs a tokenizer llguidance supports; this one is not ({_one_line(str(exc))})"
            ) from None
    wrapper = _VocabularyWrapper.from_tokenizer(tokenizer, n_vocab, eos, field)
    try:
        return llguidance.LLTokenizer(llguidance.TokenizerWrapper(wrapper), n_vocab=n_vocab, eos_token=list(eos) or None)
    except Exception as exc:
        raise InvalidArgument(
            field, f"constrained decoding needs a tokenizer llguidance supports; this one is not ({_one_line(str(exc))})"
        ) from None


class _VocabularyWrapper:
    """A tokenizer that is not a ``tokenizer.json`` (e.g. RWKV World's), described to
    llguidance by the bytes of every token (``llguidance.TokenizerWrapper``'s contract).

    Each token's bytes are its vocabulary string as UTF-8, or the ``<0xNN>``
    byte-fallback spelling; every one is checked against the tokenizer's own
    ``decode``, so a tokenizer whose strings mean something else is refused
    rather than constrained wrongly.
    """

    def __init__(self, tokenizer: "Tokenizer", tokens: list[bytes], eos: tuple[int, ...], special: list[int]):
        self._tokenizer = tokenizer
        self.tokens = tokens
        self.eos_token_id = eos[0] if eos else None
        self.bos_token_id = None
        self.special_token_ids = special

    @classmethod
    def from_tokenizer(cls, tokenizer: "Tokenizer", n_vocab: int, eos: tuple[int, ...], field: str) -> "_VocabularyWrapper":
        special = set(eos)
        tokens: list[bytes] = []
        for i in range(n_vocab):
            name = tokenizer.id_to_token(i) if i < tokenizer.vocab_size else None
            if name is None or i in special:
                tokens.append(b"")
                continue
            data = _token_bytes(name)
            decoded = tokenizer.decode([i], skip_special_tokens=False)
            if decoded != data.decode("utf-8", errors="replace"):
                raise InvalidArgument(
                    field,
                    "constrained decoding needs a tokenizer.json tokenizer or one whose vocabulary strings "
                    f"spell each token's bytes; token {i} ({name!r}) decodes to {decoded!r}",
                )
            tokens.append(data)
        if not eos:
            raise InvalidArgument(field, "constrained decoding needs a tokenizer with an end-of-sequence token")
        return cls(tokenizer, tokens, eos, sorted(special))

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text, add_special_tokens=False)


def _token_bytes(name: str) -> bytes:
    """A vocabulary string's bytes: ``<0xNN>...`` is byte fallback, anything else UTF-8."""
    if name.startswith("<0x") and name.endswith(">") and len(name) % 6 == 0:
        try:
            parts = [name[i : i + 6] for i in range(0, len(name), 6)]
            if all(p.startswith("<0x") and p.endswith(">") for p in parts):
                return bytes(int(p[3:5], 16) for p in parts)
        except ValueError:
            pass
    return name.encode("utf-8")


# -- threads -----------------------------------------------------------------------
_threads_lock = threading.Lock()
_llg_executor: "llguidance.LLExecutor | None" = None
_mask_pool: ThreadPoolExecutor | None = None


def _executor() -> "llguidance.LLExecutor":
    global _llg_executor
    with _threads_lock:
        if _llg_executor is None:
            import llguidance

            _llg_executor = llguidance.LLExecutor()
        return _llg_executor


def _mask_thread() -> ThreadPoolExecutor:
    global _mask_pool
    with _threads_lock:
        if _mask_pool is None:
            # A few threads: each engine (one per model) waits on its own batch.
            _mask_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agentd-masks")
        return _mask_pool
