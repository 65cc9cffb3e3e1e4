"""``agentd.v1.Inference``: Generate, Embed, Classify, Tokenize, Detokenize, and sessions.

Thin: each handler validates its request into typed arguments, runs the model
work off the event loop (Generate through the model's batching engine) and
translates the result to protobuf. Errors are raised as agentd.errors
classes; the interceptor maps them to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, AsyncIterator

from grpc import aio

from agentd.backend import check_token_ids
from agentd.constraint import Constraint, compile_constraint
from agentd.errors import FailedPrecondition, InvalidArgument, OutOfRange
from agentd.server.interceptor import request_id
from agentd.server.served import ModelTable, ServedModel
from agentd.server.sessions import Session
from agentd.server.streaming import GenerationRun, run_in_turns
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import inference_pb2_grpc

if TYPE_CHECKING:
    from agentd.constraint import Grammar
    from agentd.engine import RequestHandle
    from agentd.generation import GenerationEvent, SamplingParams
    from agentd.tokenizer import Tokenizer

log = logging.getLogger(__name__)

#: Request fields that override the model's default sampling parameters when set.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
#: Most texts one Embed or Classify call may carry (bounds a request's memory).
MAX_EMBED_TEXTS = 256
#: Raw prompts offer the prefix cache a boundary every this many tokens.
PREFIX_BLOCK = 64

FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
}
SESSION_OUTCOMES = {
    None: pb.SESSION_OUTCOME_UNSPECIFIED,
    "created": pb.SESSION_OUTCOME_CREATED,
    "continued": pb.SESSION_OUTCOME_CONTINUED,
    "restarted": pb.SESSION_OUTCOME_RESTARTED,
}


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Serves the Inference RPCs over a :class:`ModelTable`."""

    def __init__(self, models: ModelTable):
        self._models = models
        self._max_queue = models.settings.max_queue

    async def Generate(self, request: pb.GenerateRequest, context: aio.ServicerContext) -> AsyncIterator[pb.GenerateResponse]:
        started = time.monotonic()
        async with self._models.use(request.model, "decoder") as served:
            prompt_ids, boundaries = await asyncio.to_thread(_prompt_ids, served, request)
            params = _sampling_params(served, request)
            constraint = _constraint(request)
            # Compiling (and, the first time for a model, reading its vocabulary) stays off the loop.
            grammar = await asyncio.to_thread(_compile, served, constraint) if constraint is not None else None
            remaining = context.time_remaining()
            run = GenerationRun(
                served,
                prompt_ids,
                params,
                started=started,
                deadline=time.monotonic() + remaining if remaining is not None else None,
                sessions=self._models.sessions,
                session_id=request.session_id,
                prefix_boundaries=boundaries,
                constraint=grammar,
            )
            run.start()  # a full queue raises RESOURCE_EXHAUSTED here, before any stream message
            rid = request_id.get()

            def log_end(handle: "RequestHandle") -> None:
                # What the engine really did (also after the client left). Counts and
                # timing only: no prompt or generated text in logs.
                log.info(
                    "request %s Generate model=%s prompt_tokens=%d cached_tokens=%d completion_tokens=%d "
                    "finish=%s session=%s constraint=%s %.3fs",
                    rid, served.name, len(prompt_ids), handle.cached_tokens, handle.completion_tokens,
                    handle.finish_reason or "error", run.outcome or "-",
                    constraint.kind if constraint is not None else "-", time.monotonic() - started,
                )

            assert run.handle is not None
            run.handle.on_done(log_end)
            async with aclosing(run.events()) as events:
                async for event in events:
                    yield _response(event, run)

    async def Embed(self, request: pb.EmbedRequest, context: aio.ServicerContext) -> pb.EmbedResponse:
        async with self._models.use(request.model, "encoder") as served:
            texts = _texts(request.texts, served)
            started = time.monotonic()
            model = served.model
            vectors = await run_in_turns(served, texts, lambda piece, start: model.embed(piece), max_queue=self._max_queue)
        log.info("request %s Embed model=%s texts=%d %.3fs", request_id.get(), served.name, len(texts), time.monotonic() - started)
        dim = int(vectors[0].shape[0])
        return pb.EmbedResponse(embeddings=[pb.Embedding(values=row.tolist()) for row in vectors], dim=dim)

    async def Classify(self, request: pb.ClassifyRequest, context: aio.ServicerContext) -> pb.ClassifyResponse:
        name = request.model or self._models.default_classifier()
        async with self._models.use(name, None) as served:
            model = served.model
            labels = model.info.labels
            if not labels:
                raise FailedPrecondition(
                    f"model {served.name!r} is not a token classifier (it has no labels; see `agentd models list`)"
                )
            texts = _texts(request.texts, served)
            started = time.monotonic()
            results = await run_in_turns(
                served, texts, lambda piece, start: model.classify(piece, first_index=start), max_queue=self._max_queue
            )
        log.info("request %s Classify model=%s texts=%d %.3fs", request_id.get(), served.name, len(texts), time.monotonic() - started)
        return pb.ClassifyResponse(
            labels=labels,
            results=[
                pb.TokenClassification(
                    tokens=[
                        pb.ClassifiedToken(start=t.start, end=t.end, label=t.label_id, score=t.score, logits=t.logits.tolist())
                        for t in result.tokens
                    ]
                )
                for result in results
            ],
        )

    async def Tokenize(self, request: pb.TokenizeRequest, context: aio.ServicerContext) -> pb.TokenizeResponse:
        async with self._models.use(request.model, None) as served:
            tokenizer = _tokenizer(served, "model")
            _check_text_size("text", len(request.text), served)
        ids = await asyncio.to_thread(tokenizer.encode, request.text, request.add_special_tokens)
        return pb.TokenizeResponse(ids=ids, tokens=[tokenizer.id_to_token(i) or "" for i in ids])

    async def Detokenize(self, request: pb.DetokenizeRequest, context: aio.ServicerContext) -> pb.DetokenizeResponse:
        async with self._models.use(request.model, None) as served:
            tokenizer = _tokenizer(served, "model")
        ids = list(request.ids)
        check_token_ids(ids, tokenizer.vocab_size, field="ids")
        text = await asyncio.to_thread(tokenizer.decode, ids, request.skip_special_tokens)
        return pb.DetokenizeResponse(text=text)

    # -- sessions ----------------------------------------------------------------------------
    async def SaveSession(self, request: pb.SaveSessionRequest, context: aio.ServicerContext) -> pb.SaveSessionResponse:
        sessions = self._models.sessions
        session = sessions.get(request.session_id)
        async with self._models.use(session.model, "decoder") as served:
            saved = await sessions.save(session.session_id, served.model.backend)
        log.info("request %s SaveSession %s tokens=%d bytes=%d", request_id.get(), session.session_id, saved.tokens, saved.file_bytes)
        return pb.SaveSessionResponse(path=str(saved.path), file_bytes=saved.file_bytes, tokens=saved.tokens)

    async def RestoreSession(self, request: pb.RestoreSessionRequest, context: aio.ServicerContext) -> pb.SessionInfo:
        sessions = self._models.sessions
        header, state = await asyncio.to_thread(sessions.read_header, request.session_id)
        async with self._models.use(str(header.get("model", "")), "decoder", field_name="session_id") as served:
            architecture = served.model.info.architecture
            if header.get("architecture") != architecture:
                raise InvalidArgument(
                    "session_id",
                    f"saved for a {header.get('architecture')} model; {served.name!r} is now a {architecture}",
                )
            session = await sessions.restore(request.session_id, served.name, served.model.backend, state, header)
        return session_info(session)

    async def ListSessions(self, request: pb.ListSessionsRequest, context: aio.ServicerContext) -> pb.ListSessionsResponse:
        return pb.ListSessionsResponse(
            sessions=[session_info(s) for s in self._models.sessions.list(request.model or None)]
        )

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: aio.ServicerContext) -> pb.DeleteSessionResponse:
        sessions = self._models.sessions
        deleted = sessions.delete(request.session_id)
        deleted_saved = False
        if request.delete_saved:
            path = sessions.file_path(request.session_id)
            deleted_saved = path.is_file()
            path.unlink(missing_ok=True)
        return pb.DeleteSessionResponse(deleted=deleted, deleted_saved=deleted_saved)


# -- request -> typed arguments ---------------------------------------------------
#: More characters than any tokenizer puts in one token. A text longer than this many per token of
#: the model's context cannot fit it, so it is refused (or, for encoders, which keep only their first
#: ``context`` tokens, cut) before tokenising: tokenising megabytes holds the GIL for seconds, and
#: every other client (health checks included) would wait.
MAX_CHARS_PER_TOKEN = 64


def _texts(texts: Any, served: ServedModel) -> list[str]:
    """Embed's and Classify's texts: at least one, at most :data:`MAX_EMBED_TEXTS`, each cut to what
    the encoder can read (it keeps its first ``context_length`` tokens anyway)."""
    texts = list(texts)
    if not texts:
        raise InvalidArgument("texts", "is empty: give at least one text")
    if len(texts) > MAX_EMBED_TEXTS:
        raise InvalidArgument("texts", f"holds {len(texts)} texts; at most {MAX_EMBED_TEXTS} per call")
    assert served.model is not None
    readable = served.model.info.context_length * MAX_CHARS_PER_TOKEN
    return [text[:readable] for text in texts]


def _check_text_size(field: str, size: int, served: ServedModel) -> None:
    """Refuse text that cannot fit the model's context whatever its tokenizer, before tokenising it."""
    assert served.model is not None
    context = served.model.info.context_length
    if size > context * MAX_CHARS_PER_TOKEN:
        raise OutOfRange(
            f"{field} has {size} characters, more than the model's {context}-token context can hold "
            f"(at most {MAX_CHARS_PER_TOKEN} characters per token)"
        )


def _prompt_ids(served: ServedModel, request: pb.GenerateRequest) -> tuple[list[int], list[int]]:
    """Token ids of the request's prompt, messages or ids, checked against the context,
    and the prompt lengths worth offering the prefix cache."""
    which = request.WhichOneof("input")
    model = served.model
    assert model is not None
    if which is None:
        raise InvalidArgument("prompt", "one of prompt, messages or prompt_token_ids is required")
    if which == "prompt":
        if not request.prompt:
            raise InvalidArgument("prompt", "is empty")
        _check_text_size("prompt", len(request.prompt), served)
        ids = _tokenizer(served, "prompt").encode(request.prompt, add_special_tokens=True)
    elif which == "messages":
        messages = request.messages.messages
        if not messages:
            raise InvalidArgument("messages", "is empty")
        for index, message in enumerate(messages):
            if not message.role:
                raise InvalidArgument(f"messages[{index}].role", "is empty")
        _check_text_size("messages", sum(len(m.content) + len(m.role) for m in messages), served)
        chat = [{"role": message.role, "content": message.content} for message in messages]
        tokenizer = _tokenizer(served, "messages")
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    else:
        ids = list(request.prompt_token_ids.ids)
        if not ids:
            raise InvalidArgument("prompt_token_ids", "is empty")
        check_token_ids(ids, model.info.vocab_size, field="prompt_token_ids")
    if not ids:
        raise InvalidArgument(which, "is empty after tokenization")
    context = model.info.context_length
    if len(ids) >= context:
        raise OutOfRange(f"prompt has {len(ids)} tokens; the model's context is {context}, leaving no room to generate")
    if which == "messages":
        boundaries = _message_boundaries(tokenizer, chat, ids)
    else:
        boundaries = list(range(PREFIX_BLOCK, len(ids), PREFIX_BLOCK))
    return ids, boundaries


def _message_boundaries(tokenizer: "Tokenizer", chat: list[dict[str, str]], ids: list[int]) -> list[int]:
    """Where the first message (a system prompt, typically) and everything before the
    last message end in ``ids``: the prefixes a later request is likely to repeat.

    A boundary counts only if the template renders that part of the conversation
    as an exact prefix of the whole (true of ChatML-style templates).
    """
    boundaries = []
    for count in sorted({1, len(chat) - 1}):
        if not 0 < count < len(chat):
            continue
        try:
            head = tokenizer.apply_chat_template(chat[:count], add_generation_prompt=False)
        except Exception:  # e.g. a template that insists on a user turn: only an optimisation is lost
            continue
        if 0 < len(head) < len(ids) and ids[: len(head)] == head:
            boundaries.append(len(head))
    return boundaries


def _sampling_params(served: ServedModel, request: pb.GenerateRequest) -> "SamplingParams":
    """The model's defaults overridden by the fields the request sets; validated."""
    assert served.model is not None
    overrides: dict[str, Any] = {name: getattr(request, name) for name in SAMPLING_FIELDS if request.HasField(name)}
    if request.stop:
        overrides["stop"] = tuple(request.stop)
    context = served.model.info.context_length
    if overrides.get("max_tokens", 1) > context:
        raise InvalidArgument("max_tokens", f"must be at most the model's context length {context}")
    return served.model.default_params(**overrides)  # validates: InvalidArgument names the field


def _constraint(request: pb.GenerateRequest) -> Constraint | None:
    """The request's json_schema / regex / lark_grammar, if it sets one; checked."""
    which = request.WhichOneof("constraint")
    if which is None:
        return None
    constraint = Constraint(which, getattr(request, which))
    constraint.validate()
    return constraint


def _compile(served: ServedModel, constraint: Constraint) -> "Grammar":
    """``constraint`` compiled for the served model's tokenizer (cached per model)."""
    model = served.model
    assert model is not None
    if model.tokenizer is None:
        raise InvalidArgument(constraint.kind, f"constrained decoding needs a tokenizer; model {served.name!r} has none")
    return compile_constraint(constraint, model.tokenizer, model.info.vocab_size)


def _tokenizer(served: ServedModel, field: str) -> "Tokenizer":
    if served.model is None or served.model.tokenizer is None:
        raise InvalidArgument(field, f"model {served.name!r} has no tokenizer")
    return served.model.tokenizer


# -- results -> protobuf --------------------------------------------------------------
def _response(event: "GenerationEvent", run: GenerationRun) -> pb.GenerateResponse:
    if event.finish_reason is None:
        return pb.GenerateResponse(text=event.text, token_ids=[event.token_id], logprobs=[event.logprob])
    usage = pb.Usage(
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_prompt_tokens=run.cached_tokens,
    )
    return pb.GenerateResponse(
        text=event.text,
        finish_reason=FINISH_REASONS[event.finish_reason],
        usage=usage,
        session_outcome=SESSION_OUTCOMES[run.outcome],
    )


def session_info(session: Session) -> pb.SessionInfo:
    """The wire form of an in-memory session."""
    return pb.SessionInfo(
        session_id=session.session_id,
        model=session.model,
        tokens=len(session.tokens),
        state_bytes=session.state_bytes,
        idle_seconds=max(0.0, time.monotonic() - session.last_used),
        busy=session.busy,
    )
