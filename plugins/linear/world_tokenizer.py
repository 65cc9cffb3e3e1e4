"""The RWKV World tokenizer: greedy longest match over UTF-8 bytes.

RWKV World models (every x070 "World" checkpoint BlinkDL ships, vocabulary
65536) were trained with a byte-level vocabulary read from
``rwkv_vocab_v20230424.txt`` and a tokenizer that, at each position, takes the
longest vocabulary entry the remaining bytes start with. There are no merges,
no normalisation and no pre-tokenisation, so the Rust ``tokenizers`` library
cannot express it; this module is agentd's own implementation of that rule
(the ``rwkv`` package's ``TRIE_TOKENIZER`` is the reference the tests compare
against), shaped like the part of ``tokenizers.Tokenizer`` that
:class:`agentd.tokenizer.Tokenizer` uses (:class:`agentd.tokenizer.TokenizerBackend`).

The vocabulary file ships inside the ``rwkv`` PyPI package. It is located
with :func:`importlib.util.find_spec`, never imported: ``rwkv.model`` imports
torch and compiles TorchScript at import time.

Id 0 is not in the file: it is the end-of-text token (the separator between
training documents), named :data:`END_OF_TEXT` here.
"""

from __future__ import annotations

import ast
import importlib.util
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from agentd.errors import BackendUnavailable, ModelLoadError

#: The vocabulary file's name inside the ``rwkv`` package.
VOCAB_FILE = "rwkv_vocab_v20230424.txt"
#: Id and name of the end-of-text token (RWKV World's only special token).
END_OF_TEXT_ID = 0
END_OF_TEXT = "<|rwkv_tokenizer_end_of_text|>"
#: Vocabulary size of RWKV World models (the embedding has 65536 rows; ids above
#: the file's last entry are padding the tokenizer never produces).
WORLD_VOCAB_SIZE = 65536

#: RWKV World chat format as a Jinja chat template. Ours, written from the
#: format BlinkDL's chat demos use: turns are ``Role: text`` separated by a
#: blank line, so a message is stripped and its runs of newlines collapsed to
#: one (``re.sub(r"\n+", "\n", text.strip())`` in the demos; a blank line would
#: end the turn), and the prompt ends in
#: ``Assistant:`` with no space (the vocabulary has space-led words). The model
#: ends its turn with a blank line ("\n\n"), not with end-of-text: chat clients
#: pass ``stop=["\n\n"]``.
CHAT_TEMPLATE = (
    "{%- set roles = {'system': 'System', 'user': 'User', 'assistant': 'Assistant'} -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if message['role'] not in roles -%}\n"
    "{{- raise_exception('RWKV World chat has no role ' ~ message['role']) -}}\n"
    "{%- endif -%}\n"
    "{%- set lines = (message['content'] | default('') | string | trim).replace('\\r\\n', '\\n').split('\\n') -%}\n"
    "{{- roles[message['role']] ~ ': ' ~ (lines | reject('equalto', '') | join('\\n')) ~ '\\n\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- 'Assistant:' -}}\n"
    "{%- endif -%}\n"
)


def find_vocab() -> Path:
    """The ``rwkv`` package's vocabulary file, located without importing the package.

    Raises BackendUnavailable when the package (or the file in it) is missing.
    """
    try:
        spec = importlib.util.find_spec("rwkv")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / VOCAB_FILE
        if candidate.is_file():
            return candidate
    raise BackendUnavailable(
        f"the RWKV World tokenizer needs {VOCAB_FILE} from the 'rwkv' package, which is not installed "
        "(pip install rwkv)"
    )


@dataclass(frozen=True)
class WorldEncoding:
    """What ``encode`` returns: the ids, as the Rust library's ``Encoding.ids``."""

    ids: list[int]


class GreedyLongestMatch:
    """The tokenizer model: longest vocabulary entry at each byte position.

    A trie of 65k entries in Python dicts costs ~100 MB, so matching uses
    hash lookups instead: the lengths of the entries of three or more bytes
    that start with the next three bytes, longest first, then the next two
    bytes, then one. That finds the entry a trie walk finds, the longest one
    the remaining bytes start with, at about the ``rwkv`` package's trie speed
    (1.5x faster on mixed English/CJK/emoji text).
    """

    def __init__(self, entries: Sequence[bytes | None]):
        #: ``entries[id]`` is the entry's bytes (None for ids with no bytes, i.e. end of text).
        self.entries = list(entries)
        self.ids: dict[bytes, int] = {entry: i for i, entry in enumerate(self.entries) if entry}
        lengths: dict[bytes, set[int]] = defaultdict(set)
        for entry in self.ids:
            if len(entry) >= 3:
                lengths[entry[:3]].add(len(entry))
        self._lengths = {prefix: sorted(found, reverse=True) for prefix, found in lengths.items()}
        missing = [byte for byte in range(256) if bytes((byte,)) not in self.ids]
        if missing:
            # Every byte needs an entry, or some text could not be encoded at all.
            raise ValueError(f"no entry for byte(s) {', '.join(hex(b) for b in missing[:8])}")

    def tokenize(self, data: bytes) -> list[int]:
        """Ids of ``data``, left to right, longest match first."""
        ids, lookup, lengths = [], self.ids, self._lengths
        position, end = 0, len(data)
        while position < end:
            token = None
            for length in lengths.get(data[position : position + 3], ()):
                if position + length <= end:
                    token = lookup.get(data[position : position + length])
                    if token is not None:
                        position += length
                        break
            if token is None and position + 2 <= end:
                token = lookup.get(data[position : position + 2])
                if token is not None:
                    position += 2
            if token is None:
                token = lookup[data[position : position + 1]]
                position += 1
            ids.append(token)
        return ids


class WorldTokenizer:
    """The RWKV World tokenizer with the methods :class:`agentd.tokenizer.Tokenizer` calls.

    Token strings (``id_to_token``, ``get_vocab``) are an entry's text when its
    bytes are valid UTF-8, else its bytes written ``<0xNN>`` as SentencePiece's
    byte fallback writes them; the bytes themselves are what encode and decode use.
    """

    def __init__(self, entries: Sequence[bytes | None], source: Path | str = "RWKV World vocabulary"):
        try:
            self.model = GreedyLongestMatch(entries)
        except ValueError as exc:
            raise ModelLoadError(source, f"not a usable RWKV World vocabulary ({exc})") from None
        self._tokens: list[str | None] = [_token_string(entry) for entry in self.model.entries]
        self._tokens[END_OF_TEXT_ID] = END_OF_TEXT
        self._vocab: dict[str, int] = {}
        for i, token in enumerate(self._tokens):
            if token is None:
                continue
            if token in self._vocab:
                raise ModelLoadError(source, f"token string {token!r} names both id {self._vocab[token]} and {i}")
            self._vocab[token] = i

    @classmethod
    def from_file(cls, path: Path) -> "WorldTokenizer":
        """Parse a vocabulary file: ``<id> <Python str or bytes literal> <byte length>`` per line.

        The literals are read with :func:`ast.literal_eval`, never ``eval``.
        """
        entries: list[bytes | None] = [None]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(path, f"unreadable ({exc})") from None
        for number, line in enumerate(lines, 1):
            try:
                first, last = line.index(" "), line.rindex(" ")
                index, length = int(line[:first]), int(line[last + 1 :])
                value = ast.literal_eval(line[first + 1 : last])
            except (ValueError, SyntaxError):
                raise ModelLoadError(path, f"line {number} is not '<id> <literal> <length>'") from None
            entry = value.encode("utf-8") if isinstance(value, str) else value
            if not isinstance(entry, bytes) or len(entry) != length or not entry:
                raise ModelLoadError(path, f"line {number}: entry does not have its stated {length} bytes")
            if index != len(entries):
                raise ModelLoadError(path, f"line {number}: id {index} out of order (expected {len(entries)})")
            entries.append(entry)
        return cls(entries, path)

    # -- the tokenizers.Tokenizer methods agentd.tokenizer.Tokenizer uses -------
    def encode(self, sequence: str, add_special_tokens: bool = True) -> WorldEncoding:
        """Ids of ``sequence``. RWKV World adds no special tokens, so the flag changes nothing;
        end-of-text written as text is encoded as its bytes (as the reference does)."""
        return WorldEncoding(self.model.tokenize(sequence.encode("utf-8")))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``. Bytes that are not (yet) valid UTF-8 become U+FFFD, which the
        incremental detokeniser relies on; ids outside the vocabulary are skipped, as the
        Rust library skips them."""
        entries, pieces = self.model.entries, []
        for i in ids:
            if i == END_OF_TEXT_ID:
                if not skip_special_tokens:
                    pieces.append(END_OF_TEXT.encode("utf-8"))
            elif 0 < i < len(entries):
                pieces.append(entries[i])  # type: ignore[arg-type]
        return b"".join(pieces).decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self._tokens[id] if 0 <= id < len(self._tokens) else None

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]:
        return dict(self._vocab)

    def no_truncation(self) -> None:
        """Nothing to switch off: this tokenizer never truncates."""

    def no_padding(self) -> None:
        """Nothing to switch off: this tokenizer never pads."""

    def __repr__(self) -> str:
        return f"WorldTokenizer({len(self._vocab)} tokens)"


def _token_string(entry: bytes | None) -> str | None:
    if entry is None:
        return None
    try:
        return entry.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{byte:02X}>" for byte in entry)


_cache: dict[Path, WorldTokenizer] = {}
_cache_lock = threading.Lock()


def world_tokenizer(path: Path | None = None) -> WorldTokenizer:
    """The tokenizer of vocabulary ``path`` (default: the ``rwkv`` package's), parsed once per process.

    Parsing 65k literals takes a noticeable fraction of a second; every RWKV
    World model in a daemon shares one immutable instance.
    """
    path = (path or find_vocab()).resolve()
    with _cache_lock:
        tokenizer = _cache.get(path)
        if tokenizer is None:
            tokenizer = _cache[path] = WorldTokenizer.from_file(path)
        return tokenizer
