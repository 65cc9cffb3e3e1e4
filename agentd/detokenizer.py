"""Incremental detokenisation: token ids in, complete text deltas out.

Decoding one token at a time is wrong in two ways. A byte-level BPE or
byte-fallback tokenizer splits one UTF-8 character (an emoji, a CJK ideograph)
over several tokens, so a lone token decodes to U+FFFD. And SentencePiece-style
decoders treat the first token of a sequence specially (they strip its leading
space), so ``decode([a]) + decode([b]) != decode([a, b])``.

The prefix-offset / read-offset technique (Hugging Face TGI, vLLM) fixes both:
decode a small trailing window twice — up to the text already emitted
(``prefix_offset:read_offset``) and up to the newest token (``prefix_offset:``) —
and emit the difference, but only once it no longer ends in U+FFFD. Both
decodes start at the same token, so first-token effects cancel, and a
character is emitted only when all its bytes have arrived.

One case no streaming decoder can match: a byte-fallback decoder (``<0xNN>``
tokens) replaces a whole *invalid* run of byte tokens with U+FFFDs, including
bytes that earlier formed valid characters already emitted. Byte tokens a
model emits for real text spell valid UTF-8, so this only affects garbage.
"""

from __future__ import annotations

from typing import Protocol, Sequence

REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    """The part of :class:`agentd.tokenizer.Tokenizer` the detokeniser needs."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing list of generated ids into text deltas.

    The concatenation of every :meth:`push` result and the final :meth:`flush`
    equals ``tokenizer.decode(all_ids)``; no delta contains half a character.
    """

    def __init__(self, tokenizer: Decoder, *, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        # ids[prefix_offset:read_offset] decode to text already emitted; they are
        # re-decoded as context so the new token's text comes out right.
        self._prefix_offset = 0
        self._read_offset = 0

    @property
    def token_ids(self) -> list[int]:
        """Every id pushed so far."""
        return list(self._ids)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text it completes ("" while incomplete)."""
        self._ids.append(int(token_id))
        prefix_text, new_text = self._window_texts()
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held back at the end of generation (may end in U+FFFD if the
        model stopped inside a character, exactly as a full decode would)."""
        prefix_text, new_text = self._window_texts()
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def _window_texts(self) -> tuple[str, str]:
        window = self._ids[self._prefix_offset :]
        emitted = self._read_offset - self._prefix_offset
        prefix_text = self._tokenizer.decode(window[:emitted], skip_special_tokens=self._skip_special)
        new_text = self._tokenizer.decode(window, skip_special_tokens=self._skip_special)
        return prefix_text, new_text
