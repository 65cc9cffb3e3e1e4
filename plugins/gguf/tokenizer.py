"""``tokenizer.ggml.*`` metadata -> ``tokenizer.json`` and ``tokenizer_config.json``.

A GGUF carries its tokenizer as arrays (tokens, scores, token types, merges)
plus special-token ids and the chat template. This rebuilds the Hugging Face
``tokenizers`` pipeline those arrays came from, the way transformers' GGUF
loader does, so text tokenises to the ids the model was trained on:

* ``gpt2`` (byte-level BPE: SmolLM2, Llama 3, Qwen2): tokens are spelled in
  GPT-2's byte alphabet; the split regex follows ``tokenizer.ggml.pre``.
* ``llama`` (SentencePiece BPE: TinyLlama, Llama 2): ``▁`` for spaces, byte
  fallback, BOS added; files often have no merges, so they are recovered from
  the vocabulary and its scores.

Control tokens (type 3) become special added tokens and user-defined ones
(type 4) plain added tokens, so ``<|im_end|>`` stays one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd.errors import ModelLoadError

#: ``tokenizer.ggml.token_type`` values (llama.cpp's ``llama_token_type``).
CONTROL, USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: ``tokenizer.ggml.pre`` -> split regex, for vocabularies not split GPT-2's way.
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
}

#: GGUF special-token id key -> Hugging Face special-token name.
SPECIAL_TOKEN_KEYS = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (the alphabet byte-level BPE vocabularies use)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelling = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in spelling:
            spelling[byte] = chr(256 + extra)
            extra += 1
    return spelling


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges implied by a vocabulary: every split of a token into two
    tokens, the merge that forms higher-scored tokens first (ties: shorter left, then right piece).
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    score_of = dict(zip(tokens, scores))
    merges: list[tuple[str, str, float]] = []
    for token, score in score_of.items():
        pairs = [
            (token[:cut], token[cut:], score)
            for cut in range(1, len(token))
            if token[:cut] in vocab and token[cut:] in vocab
        ]
        merges += sorted(pairs, key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
    merges.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def build_tokenizer(meta: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """``(tokenizer.json text, tokenizer_config.json dict)`` from the GGUF metadata."""
    try:
        return _build_tokenizer(meta, path)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception on pieces it cannot use
        # Metadata of the wrong shape (a corrupted file: a token that is a number, a special
        # token the post-processor cannot parse) is the file's problem, not a bug to report.
        detail = " ".join(str(exc).split())[:200]
        raise ModelLoadError(path, f"tokenizer metadata cannot be built into a tokenizer ({type(exc).__name__}: {detail})") from None


def _build_tokenizer(meta: dict[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelLoadError(path, "metadata 'tokenizer.ggml.tokens' is missing")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges_text = meta.get("tokenizer.ggml.merges")
    merges = [tuple(merge.split(" ", 1)) for merge in merges_text] if merges_text else None

    if kind == "gpt2":
        alphabet = byte_alphabet()
        letters = set(alphabet.values())
        spelled = [
            token if set(token) <= letters else "".join(alphabet[b] for b in token.encode("utf-8")) for token in tokens
        ]
        if merges is None:
            raise ModelLoadError(path, "byte-level tokenizer has no 'tokenizer.ggml.merges'")
        backend = Tokenizer(
            BPE(vocab=_vocab(spelled), merges=merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        )
        split = PRE_TOKENIZER_SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
        if split is None:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(split), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
            )
        backend.decoder = decoders.ByteLevel()
        add_bos_default = False
    elif kind == "llama":
        if merges is None:
            scores = meta.get("tokenizer.ggml.scores")
            if not isinstance(scores, list) or len(scores) != len(tokens):
                raise ModelLoadError(path, "SentencePiece tokenizer has neither merges nor one score per token")
            merges = merges_from_scores(tokens, scores)
        backend = Tokenizer(BPE(vocab=_vocab(tokens), merges=merges, fuse_unk=True, byte_fallback=True))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        backend.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
        )
        spelled, letters = tokens, None
        add_bos_default = True  # llama.cpp's rule for SentencePiece files that do not say
    else:
        raise ModelLoadError(path, f"tokenizer model {kind!r} (tokenizer.ggml.model) is not supported (gpt2, llama)")

    # Control tokens whole and special; in a byte-level vocabulary one spelled outside
    # the alphabet is a converter mislabel and stays an ordinary token.
    special = [
        AddedToken(token, normalized=False, special=True)
        for token, kind_id in zip(spelled, types)
        if kind_id == CONTROL and (letters is None or set(token) <= letters)
    ]
    named = _special_tokens(meta, spelled, path)
    listed = {str(token) for token in special}
    special += [AddedToken(token, normalized=False, special=True) for token in named.values() if token not in listed]
    backend.add_special_tokens(special)
    backend.add_tokens(
        [AddedToken(token, normalized=False, special=False) for token, kind_id in zip(spelled, types) if kind_id == USER_DEFINED]
    )

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)) and "bos_token" in named
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and "eos_token" in named
    single = " ".join([*(["<bos>:0"] if add_bos else []), "$A:0", *(["<eos>:0"] if add_eos else [])])
    pair = single + " " + single.replace(":0", ":1").replace("$A", "$B")
    used = {"<bos>": ("bos_token", add_bos), "<eos>": ("eos_token", add_eos)}
    ids = _special_ids(meta)
    for marker, (name, on) in used.items():
        if on:
            single, pair = single.replace(marker, named[name]), pair.replace(marker, named[name])
    backend.post_processor = processors.TemplateProcessing(
        single=single,
        pair=pair,
        special_tokens=[(named[name], ids[name]) for name, on in used.values() if on],
    )

    config: dict[str, Any] = {
        **named,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    template = _chat_template(meta)
    if template is not None:
        config["chat_template"] = template
    return backend.to_str(), config


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)  # a duplicate keeps its first id, as llama.cpp does
    return vocab


def _special_ids(meta: dict[str, Any]) -> dict[str, int]:
    return {
        name: meta[f"tokenizer.ggml.{key}"]
        for name, key in SPECIAL_TOKEN_KEYS.items()
        if isinstance(meta.get(f"tokenizer.ggml.{key}"), int)
    }


def _special_tokens(meta: dict[str, Any], tokens: list[str], path: Path) -> dict[str, str]:
    """``{"bos_token": "<s>", ...}`` from the GGUF's special-token ids."""
    named = {}
    for name, token_id in _special_ids(meta).items():
        if not 0 <= token_id < len(tokens):
            raise ModelLoadError(path, f"tokenizer.ggml.{SPECIAL_TOKEN_KEYS[name]} {token_id} is outside the vocabulary")
        named[name] = tokens[token_id]
    return named


def _chat_template(meta: dict[str, Any]) -> str | list[dict[str, str]] | None:
    """``tokenizer.chat_template``, with any named ``tokenizer.chat_template.<name>`` as HF's list form."""
    default = meta.get("tokenizer.chat_template")
    named = {
        key.removeprefix("tokenizer.chat_template."): value
        for key, value in meta.items()
        if key.startswith("tokenizer.chat_template.") and isinstance(value, str)
    }
    if not named:
        return default if isinstance(default, str) else None
    templates = [{"name": "default", "template": default}] if isinstance(default, str) else []
    return templates + [{"name": name, "template": text} for name, text in named.items()]
