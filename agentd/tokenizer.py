"""Tokenizer and chat template: ``tokenizer.json`` plus ``tokenizer_config.json``.

Torch-free, so the engine, the gRPC server and phone-class installs use it
as is. Encoding and decoding go through the Rust ``tokenizers`` library, or
through any object with the same few methods (:class:`TokenizerBackend`) for
tokenizers it cannot express, such as RWKV World's greedy byte matching;
chat templates are rendered with Jinja2 exactly as Hugging Face transformers'
``apply_chat_template`` renders them (same sandbox, same whitespace control,
same helpers), so a prompt built here tokenizes to the same ids a model was
trained and evaluated with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agentd.errors import InvalidArgument, ModelLoadError

if TYPE_CHECKING:
    from agentd.checkpoint import Checkpoint

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

#: The named special tokens a template sees as variables (HF's ``special_tokens_map``).
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

#: Names a message's reasoning may come under; templates read ``reasoning_content``
#: (and gpt-oss ones ``thinking``), so each is filled from whichever is present.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

# Punctuation spacing undone by ``clean_up_tokenization_spaces`` (WordPiece era).
_CLEANUP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


class Encoding(Protocol):
    """The result of :meth:`TokenizerBackend.encode`; only the ids are read
    (and, by :meth:`Tokenizer.encode_with_offsets`, ``offsets`` and
    ``special_tokens_mask`` when the backend gives them)."""

    @property
    def ids(self) -> list[int]: ...


@dataclass(frozen=True)
class OffsetEncoding:
    """Token ids with where each token came from in the text."""

    ids: list[int]
    #: ``(start, end)`` of each token as Python ``str`` indices (code points) into the text;
    #: special tokens have ``(0, 0)``.
    offsets: list[tuple[int, int]]
    #: True at tokens the post-processor added (``[CLS]``, ``[SEP]``, BOS, ...).
    special: list[bool]


class TokenizerBackend(Protocol):
    """What :class:`Tokenizer` calls on its encoder/decoder.

    The subset of the Rust ``tokenizers.Tokenizer`` API agentd uses, written
    down so a format plugin can supply a tokenizer that library cannot
    express (a ``tokenizer.json`` has no greedy-longest-match model, for one)
    without pretending to be it. Special tokens, EOS ids and the chat template
    stay :class:`Tokenizer`'s job, read from the checkpoint's documents.
    """

    #: The tokenizer model; only its type's name is read (``BPE`` output never gets
    #: the WordPiece-era cleanup), so any other object means "not BPE".
    @property
    def model(self) -> object: ...

    def encode(self, sequence: str, add_special_tokens: bool = True) -> Encoding: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; an incomplete UTF-8 character at the end must come out as
        U+FFFD, which :mod:`agentd.detokenizer` waits on."""
        ...

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, id: int) -> str | None: ...

    def get_vocab(self, with_added_tokens: bool = True) -> dict[str, int]: ...

    def no_truncation(self) -> None: ...

    def no_padding(self) -> None: ...


@dataclass(frozen=True)
class ChatTemplates:
    """The chat templates a checkpoint ships: a default and, optionally, named ones."""

    #: Template used when nothing more specific applies.
    default: str | None
    #: Named templates (``tool_use``, ``rag``, ...) from a list-valued ``chat_template``.
    named: Mapping[str, str]
    #: File the templates came from, named in errors.
    source: Path | None

    def select(self, with_tools: bool) -> str | None:
        """HF's choice: ``tool_use`` when tools are given and it exists, else the default."""
        if with_tools and "tool_use" in self.named:
            return self.named["tool_use"]
        return self.default


class Tokenizer:
    """Text <-> token ids for one model, with its special tokens and chat template."""

    def __init__(
        self,
        backend: TokenizerBackend,
        *,
        special_tokens: Mapping[str, str] | None = None,
        chat_templates: ChatTemplates | None = None,
        extra_eos_token_ids: Sequence[int] = (),
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
    ):
        # Truncation and padding baked into tokenizer.json (e.g. all-MiniLM pads
        # every text to 128) are off, as in HF unless a call asks for them.
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.special_tokens: dict[str, str] = dict(special_tokens or {})
        self.bos_token: str | None = self.special_tokens.get("bos_token")
        self.eos_token: str | None = self.special_tokens.get("eos_token")
        self.model_max_length = model_max_length
        self._templates = chat_templates or ChatTemplates(default=None, named={}, source=None)
        self._compiled: dict[str, jinja2.Template] = {}
        # HF never applies the WordPiece-era cleanup to BPE output: it eats real spaces.
        model_type = type(backend.model).__name__
        self._clean_up = clean_up_tokenization_spaces and model_type != "BPE"

        vocab = backend.get_vocab(with_added_tokens=True)
        #: Size of the id space (largest id + 1), added tokens included.
        self.vocab_size: int = max(vocab.values()) + 1 if vocab else 0
        eos_ids = {int(i) for i in extra_eos_token_ids}
        if self.eos_token is not None and (eos_id := backend.token_to_id(self.eos_token)) is not None:
            eos_ids.add(eos_id)
        #: Every id that ends generation.
        self.eos_token_ids: frozenset[int] = frozenset(eos_ids)

    # -- loading -------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> Tokenizer | None:
        """The checkpoint's tokenizer, or None when it has no ``tokenizer.json``.

        Raises ModelLoadError naming the file when one is corrupt.
        """
        text = checkpoint.read_text(TOKENIZER_FILE)
        if text is None:
            return None
        from tokenizers import Tokenizer as RustTokenizer

        try:
            backend = RustTokenizer.from_str(text)
        except Exception as exc:  # the Rust side raises a bare Exception on bad input
            raise ModelLoadError(checkpoint.where(TOKENIZER_FILE), f"corrupt tokenizer file ({exc})") from None
        return cls.from_documents(backend, checkpoint)

    @classmethod
    def from_documents(cls, backend: TokenizerBackend, checkpoint: Checkpoint) -> Tokenizer:
        """``backend`` with the special tokens, EOS ids and chat template the checkpoint's documents give."""
        config = checkpoint.read_json(TOKENIZER_CONFIG_FILE) or {}
        config_path = checkpoint.where(TOKENIZER_CONFIG_FILE)
        special = _special_tokens(config, config_path)
        # Older checkpoints (e.g. all-MiniLM) keep some special tokens only here.
        legacy = checkpoint.read_json(SPECIAL_TOKENS_MAP_FILE) or {}
        for name, value in _special_tokens(legacy, checkpoint.where(SPECIAL_TOKENS_MAP_FILE)).items():
            special.setdefault(name, value)

        eos_ids: list[int] = []
        model_config = checkpoint.read_json("config.json") or {}
        eos_ids += _token_ids(model_config.get("eos_token_id"), checkpoint.where("config.json"))
        eos_ids += _token_ids(
            checkpoint.generation_config.get("eos_token_id"), checkpoint.where("generation_config.json")
        )

        max_length = config.get("model_max_length")
        return cls(
            backend,
            special_tokens=special,
            chat_templates=_chat_templates(checkpoint, config, config_path),
            extra_eos_token_ids=eos_ids,
            model_max_length=int(max_length) if isinstance(max_length, (int, float)) else None,
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        )

    # -- text <-> ids ----------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` applies the post-processor (BOS, CLS/SEP).

        Which special tokens are added is tokenizer.json's post-processor alone:
        transformers v5 ignores ``add_bos_token``/``add_eos_token`` too.
        """
        if not isinstance(text, str):
            raise InvalidArgument("text", f"expected a string, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_with_offsets(self, text: str, add_special_tokens: bool = True) -> OffsetEncoding:
        """:meth:`encode` plus each token's character span in ``text`` and which tokens are special."""
        if not isinstance(text, str):
            raise InvalidArgument("text", f"expected a string, got {type(text).__name__}")
        encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
        offsets = getattr(encoding, "offsets", None)
        if offsets is None:
            raise InvalidArgument("text", f"this model's tokenizer ({type(self._backend).__name__}) gives no token offsets")
        spans = [(int(start), int(end)) for start, end in offsets]
        mask = getattr(encoding, "special_tokens_mask", None)
        # Without a mask, the empty span at 0 is what marks an added token.
        special = [bool(flag) for flag in mask] if mask is not None else [span == (0, 0) for span in spans]
        return OffsetEncoding(ids=list(encoding.ids), offsets=spans, special=special)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special_tokens`` is False."""
        text = self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self._clean_up:
            for before, after in _CLEANUP_REPLACEMENTS:
                text = text.replace(before, after)
        return text

    @property
    def backend(self) -> TokenizerBackend:
        """The encoder underneath: a Rust ``tokenizers.Tokenizer`` or another :class:`TokenizerBackend`
        (constrained decoding hands the former's ``tokenizer.json`` to llguidance)."""
        return self._backend

    def token_to_id(self, token: str) -> int | None:
        """Id of one vocabulary entry (added tokens included), or None."""
        return self._backend.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        """Vocabulary entry of ``id``, or None when out of range."""
        return self._backend.id_to_token(int(id))

    # -- chat ----------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        """The default chat template source, or None."""
        return self._templates.default

    def render_chat(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> str:
        """The prompt text the chat template makes of ``messages`` (and ``tools``).

        Raises InvalidArgument("messages", ...) when the model has no template,
        the messages are malformed or the template rejects them.
        """
        source = self._templates.select(with_tools=tools is not None)
        if source is None:
            raise InvalidArgument("messages", "model has no chat template")
        chat = _prepare_messages(messages)
        if tools is not None:
            if not isinstance(tools, list) or not all(isinstance(tool, Mapping) for tool in tools):
                raise InvalidArgument("tools", "expected a list of JSON-schema objects")
            tools = _plain(tools)
        template = self._compile(source)
        try:
            return template.render(
                messages=chat,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise InvalidArgument("messages", f"chat template error: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # The template did something the messages' shape does not allow
            # (e.g. concatenated a list content with a string).
            raise InvalidArgument("messages", f"chat template failed on these messages: {exc}") from None

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> list[int]:
        """Token ids of the rendered chat; no special tokens are added (the template has them)."""
        return self.encode(self.render_chat(messages, add_generation_prompt, tools), add_special_tokens=False)

    def _compile(self, source: str) -> jinja2.Template:
        template = self._compiled.get(source)
        if template is None:
            try:
                template = _ENVIRONMENT.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                where = self._templates.source or "chat template"
                raise ModelLoadError(
                    where, f"invalid chat template (line {exc.lineno}: {exc.message})"
                ) from None
            self._compiled[source] = template
        return template

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r})"


# -- tokenizer_config.json parsing ------------------------------------------------


def _token_content(value: Any, field: str, path: Path) -> str | None:
    """A special token as a string: either the string or an AddedToken dict's ``content``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ModelLoadError(path, f"'{field}' must be a string or an object with 'content'")


def _special_tokens(config: Mapping[str, Any], path: Path) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for name in SPECIAL_TOKEN_NAMES:
        content = _token_content(config.get(name), name, path)
        if content is not None:
            tokens[name] = content
    return tokens


def _token_ids(value: Any, path: Path) -> list[int]:
    """``eos_token_id`` as a list: it may be absent, an int or a list of ints."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ModelLoadError(path, "'eos_token_id' must be an integer or a list of integers")
    return list(values)


def _chat_templates(checkpoint: Checkpoint, config: Mapping[str, Any], config_path: Path) -> ChatTemplates:
    """Templates from ``chat_template.jinja`` (newer layout, wins) or ``tokenizer_config.json``."""
    jinja = checkpoint.read_text(CHAT_TEMPLATE_FILE)
    if jinja is not None:
        return ChatTemplates(default=jinja, named={}, source=checkpoint.where(CHAT_TEMPLATE_FILE))

    value = config.get("chat_template")
    if value is None:
        return ChatTemplates(default=None, named={}, source=None)
    if isinstance(value, str):
        return ChatTemplates(default=value, named={}, source=config_path)
    if isinstance(value, list):
        named: dict[str, str] = {}
        for entry in value:
            if not (
                isinstance(entry, Mapping)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("template"), str)
            ):
                raise ModelLoadError(
                    config_path, "'chat_template' list entries need 'name' and 'template' strings"
                )
            named[entry["name"]] = entry["template"]
        return ChatTemplates(default=named.get("default"), named=named, source=config_path)
    raise ModelLoadError(config_path, "'chat_template' must be a string or a list of named templates")


# -- message preparation -----------------------------------------------------------


def _plain(value: Any) -> Any:
    """Rebuild ``value`` from plain JSON types so the sandbox sees no foreign methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, np.generic):
        # np.bool_(False) would otherwise become a truthy placeholder string.
        return _plain(value.item())
    # Anything else (arrays, images) becomes an inert placeholder naming its type.
    return f"<{type(value).__name__}>"


def _prepare_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate and normalise messages the way HF does before rendering."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidArgument("messages", "expected a non-empty list of messages")
    chat: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidArgument("messages", f"message {index} is not an object")
        # APIs send content=None / tool_calls=None; templates handle a missing key better.
        plain = {key: _plain(value) for key, value in message.items() if value is not None}
        reasoning = next((plain[key] for key in _REASONING_FIELDS if key in plain), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        chat.append(plain)
    return chat


# -- the Jinja environment -----------------------------------------------------------


class _GenerationBlock(jinja2.ext.Extension):
    """Accepts ``{% generation %}...{% endgeneration %}`` (HF's assistant-mask marker).

    The marker only matters for training masks; rendering keeps the body as is.
    """

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore attributes (no reaching into internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - mirrors jinja's signature
        self, positional = args[0], args[1:]
        attrs = dict(*positional, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} may not start with '_'")


class _TemplateDict:
    """``dict(...)`` for templates without exposing the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes '<', '>', '&' and "'", which would leak into prompts.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


# One sandboxed environment serves every tokenizer; compiled templates are cached per tokenizer.
_ENVIRONMENT = _make_environment()
