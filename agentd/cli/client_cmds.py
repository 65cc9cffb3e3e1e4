"""``agentd generate | chat | embed | classify``: talk to a running daemon.

``chat --session ID`` keeps the conversation's model state in a daemon
session, so each turn prefills only the new text; the interactive chat always
keeps one (a temporary one, deleted when the chat ends, unless ``--session``
names it).

Each command dials the daemon (``--socket``/``AGENTD_SOCKET``, or ``--tcp``)
and uses the daemon's default model of the kind it needs unless ``--model``
names one. Over TCP, ``--tls-ca`` (the CA that signed the daemon's
certificate), ``--token-file`` and, for mutual TLS, ``--tls-cert`` +
``--tls-key`` authenticate; each also reads an environment variable
(``AGENTD_TLS_CA``, ``AGENTD_TOKEN_FILE``, ``AGENTD_TLS_CLIENT_CERT``,
``AGENTD_TLS_CLIENT_KEY``) so other command groups calling :func:`connect`
get them too. Errors print one line and exit non-zero (see agentd.cli.main).
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from agentd.cli import app

if TYPE_CHECKING:
    from agentd.client import Client, GenerationStream, SamplingOptions
    from agentd.constraint import Constraint

SocketOption = Annotated[
    Optional[Path], typer.Option("--socket", envvar="AGENTD_SOCKET", help="The daemon's Unix socket.")
]
TcpOption = Annotated[
    Optional[str], typer.Option("--tcp", metavar="HOST:PORT", help="Dial the daemon over TCP instead.")
]
TlsCaOption = Annotated[
    Optional[Path], typer.Option("--tls-ca", help="CA certificate (PEM) that signed the daemon's TLS certificate; implies TLS. Env: AGENTD_TLS_CA.")
]
TlsCertOption = Annotated[
    Optional[Path], typer.Option("--tls-cert", help="Client certificate (PEM) for mutual TLS. Env: AGENTD_TLS_CLIENT_CERT.")
]
TlsKeyOption = Annotated[
    Optional[Path], typer.Option("--tls-key", help="Private key of --tls-cert. Env: AGENTD_TLS_CLIENT_KEY.")
]
TokenFileOption = Annotated[
    Optional[Path], typer.Option("--token-file", help="File with the daemon's bearer token. Env: AGENTD_TOKEN_FILE.")
]
#: Client-side environment variables, read when the matching flag is not given.
CLIENT_ENV = {"tls_ca": "AGENTD_TLS_CA", "tls_cert": "AGENTD_TLS_CLIENT_CERT", "tls_key": "AGENTD_TLS_CLIENT_KEY", "token_file": "AGENTD_TOKEN_FILE"}
ModelOption = Annotated[
    Optional[str], typer.Option("--model", "-m", help="Served model name (default: the daemon's first model of its kind).")
]
MaxTokensOption = Annotated[Optional[int], typer.Option("--max-tokens", help="Most tokens to generate.")]
TemperatureOption = Annotated[Optional[float], typer.Option("--temperature", help="0 is greedy.")]
TopPOption = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling mass in (0, 1].")]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", help="Keep the k most likely tokens (0: off).")]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible sampling.")]
MinPOption = Annotated[Optional[float], typer.Option("--min-p", help="Drop tokens below min-p times the top probability, in [0, 1).")]
RepetitionOption = Annotated[
    Optional[float], typer.Option("--repetition-penalty", help="Penalty (> 0; 1: off) on tokens already in the sequence.")
]
StopOption = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop before this string (repeatable).")]
JsonSchemaOption = Annotated[
    Optional[str],
    typer.Option("--json-schema", metavar="FILE|JSON", help="Output is JSON valid under this schema (a file, or the schema itself)."),
]
RegexOption = Annotated[Optional[str], typer.Option("--regex", help="Output fully matches this regular expression.")]
GrammarOption = Annotated[
    Optional[Path], typer.Option("--grammar", metavar="FILE", help="Output matches this Lark grammar file's start rule.")
]
SessionOption = Annotated[
    Optional[str],
    typer.Option("--session", help="Keep the model state in this daemon session (1-128 of A-Z a-z 0-9 . _ -): later turns prefill only new text."),
]


class ClassifyFormat(str, enum.Enum):
    """How ``agentd classify`` prints its result."""

    #: One line per token: its span, text, label and probability.
    text = "text"
    #: Every text's tokens as JSON objects (start, end, text, label, score).
    json = "json"


class EmbedFormat(str, enum.Enum):
    """How ``agentd embed`` prints its result."""

    json = "json"
    dims = "dims"
    #: Cosine similarity of every pair of texts (embeddings are normalised).
    similarity = "similarity"


def connect(
    socket: Path | None,
    tcp: str | None,
    tls_ca: Path | None = None,
    token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Client:
    """A client for the daemon the options (or the environment) point at."""
    from agentd.client import Client, Credentials
    from agentd.config import default_socket_path, parse_tcp_address, tcp_target, unix_target

    def given(value: Path | None, name: str) -> Path | None:
        raw = os.environ.get(CLIENT_ENV[name], "").strip()
        return value if value is not None else (Path(raw) if raw else None)

    credentials = Credentials(
        ca_file=given(tls_ca, "tls_ca"),
        cert_file=given(tls_cert, "tls_cert"),
        key_file=given(tls_key, "tls_key"),
        token_file=given(token_file, "token_file"),
    )
    if tcp:
        return Client(tcp_target(*parse_tcp_address(tcp)), credentials=credentials)
    return Client(unix_target(socket or default_socket_path()), credentials=credentials)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue.")],
    model: ModelOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    top_k: TopKOption = None,
    min_p: MinPOption = None,
    repetition_penalty: RepetitionOption = None,
    seed: SeedOption = None,
    stop: StopOption = None,
    json_schema: JsonSchemaOption = None,
    regex: RegexOption = None,
    grammar: GrammarOption = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Continue PROMPT, streaming the text as it is generated."""
    sampling = _sampling(max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
    constraint = _constraint(json_schema, regex, grammar)
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        _print_stream(client.generate(prompt, model=model, sampling=sampling, constraint=constraint))


@app.command()
def chat(
    message: Annotated[Optional[str], typer.Argument(help="Your message; omit for an interactive chat.")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="System prompt.")] = None,
    model: ModelOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    top_k: TopKOption = None,
    min_p: MinPOption = None,
    repetition_penalty: RepetitionOption = None,
    seed: SeedOption = None,
    stop: StopOption = None,
    json_schema: JsonSchemaOption = None,
    regex: RegexOption = None,
    grammar: GrammarOption = None,
    session: SessionOption = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Chat with a model: one turn, or a conversation when stdin is a terminal and no MESSAGE is given."""
    sampling = _sampling(max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
    constraint = _constraint(json_schema, regex, grammar)
    history = [{"role": "system", "content": system}] if system else []
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        if message is None and sys.stdin.isatty():
            # The conversation names its model; a one-shot turn lets the daemon pick its default.
            _chat_repl(client, model or client.default_model("decoder"), history, sampling, session, constraint)
            return
        if message is None:
            message = sys.stdin.read()
        history.append({"role": "user", "content": message})
        _print_stream(client.chat(history, model=model, sampling=sampling, session_id=session, constraint=constraint))


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    model: ModelOption = None,
    output: Annotated[
        EmbedFormat, typer.Option("--format", help="json: the vectors; dims: their count and length; similarity: cosine of each pair.")
    ] = EmbedFormat.json,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Embed TEXTS with an encoder model."""
    import json

    import numpy as np

    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        vectors = client.embed(texts, model=model)
    if output is EmbedFormat.dims:
        typer.echo(f"{vectors.shape[0]} x {vectors.shape[1]}")
        return
    if output is EmbedFormat.similarity:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        cosine = unit @ unit.T
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                typer.echo(f"{cosine[i, j]:+.4f}  {texts[i]!r} ~ {texts[j]!r}")
        return
    # str(np.float32) is the shortest text that reads back as the same float32.
    rows = [[float(str(np.float32(value))) for value in row] for row in vectors]
    typer.echo(json.dumps(rows))


@app.command()
def classify(
    texts: Annotated[list[str], typer.Argument(help="Texts whose tokens to label.")],
    model: ModelOption = None,
    output: Annotated[
        ClassifyFormat, typer.Option("--format", help="text: one line per token; json: the tokens of each text.")
    ] = ClassifyFormat.text,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Label every token of TEXTS with a token-classification model (default: the daemon's first with labels)."""
    import json

    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        result = client.classify(texts, model=model)
    if output is ClassifyFormat.json:
        rows = [
            {"text": text, "tokens": [
                {"start": t.start, "end": t.end, "text": text[t.start : t.end], "label": t.label, "score": round(t.score, 4)}
                for t in tokens
            ]}
            for text, tokens in zip(texts, result.results)
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for index, (text, tokens) in enumerate(zip(texts, result.results)):
        if len(texts) > 1:
            typer.echo(("\n" if index else "") + f"# {text}")
        width = max((len(text[t.start : t.end]) for t in tokens), default=0)
        for t in tokens:
            span = f"{t.start}-{t.end}"
            typer.echo(f"{span:>9}  {text[t.start : t.end]:<{width}}  {t.label}  {t.score:.3f}")


def _sampling(
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    min_p: float | None,
    repetition_penalty: float | None,
    seed: int | None,
    stop: list[str] | None,
) -> SamplingOptions:
    from agentd.client import SamplingOptions

    return SamplingOptions(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()),
    )


def _constraint(json_schema: str | None, regex: str | None, grammar: Path | None) -> Constraint | None:
    """The one constraint the options give (--json-schema, --regex, --grammar), or None."""
    from agentd.constraint import Constraint
    from agentd.errors import InvalidArgument

    given = [name for name, value in (("--json-schema", json_schema), ("--regex", regex), ("--grammar", grammar)) if value is not None]
    if len(given) > 1:
        raise InvalidArgument(given[1], f"cannot be combined with {given[0]}: give one constraint")
    if json_schema is not None:
        text = json_schema
        if not json_schema.lstrip().startswith(("{", "[")) and json_schema.strip() not in ("true", "false"):
            text = _read_text("--json-schema", Path(json_schema))  # not JSON: a file name
        return Constraint.json_schema(text)
    if regex is not None:
        return Constraint.regex(regex)
    if grammar is not None:
        return Constraint.lark(_read_text("--grammar", grammar))
    return None


def _read_text(option: str, path: Path) -> str:
    from agentd.errors import InvalidArgument

    try:
        return path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(option, f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _print_stream(stream: GenerationStream) -> str:
    """Write chunks to stdout as they arrive; Ctrl-C cancels the generation on the daemon."""
    pieces = []
    try:
        for chunk in stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            pieces.append(chunk.text)
    except KeyboardInterrupt:
        stream.cancel()
        sys.stdout.write("\n")
        raise typer.Exit(130) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces)


def _chat_repl(
    client: Client,
    model: str,
    history: list[dict[str, str]],
    sampling: SamplingOptions,
    session: str | None,
    constraint: Constraint | None = None,
) -> None:
    """Turn after turn in one session: each turn resends the history, the daemon prefills only the new text."""
    import uuid

    # Without --session the conversation still keeps its state, in a session of its own.
    session_id = session or f"chat-{uuid.uuid4().hex[:16]}"
    typer.echo(f"chatting with {model} (session {session_id}); an empty line or Ctrl-D ends the conversation")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                typer.echo()
                return
            if not line.strip():
                return
            history.append({"role": "user", "content": line})
            reply = _print_stream(
                client.chat(history, model=model, sampling=sampling, session_id=session_id, constraint=constraint)
            )
            history.append({"role": "assistant", "content": reply})
    finally:
        if session is None:
            _forget(client, session_id)


def _forget(client: Client, session_id: str) -> None:
    """Delete a temporary session; the daemon's TTL removes it anyway if this fails."""
    from agentd.errors import AgentdError

    try:
        client.delete_session(session_id)
    except AgentdError:
        pass
