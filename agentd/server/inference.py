"""``agentd.v1.Inference``: Generate, Embed, Tokenize, Detokenize.

Thin: each handler validates its request into typed arguments, runs the model
work off the event loop and translates the result to protobuf. Errors are
raised as agentd.errors classes; the interceptor maps them to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, AsyncIterator

from grpc import aio

from agentd.errors import InvalidArgument, OutOfRange
from agentd.server.interceptor import request_id
from agentd.server.served import ModelTable, ServedModel
from agentd.server.streaming import GenerationRun, run_exclusive
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import inference_pb2_grpc

if TYPE_CHECKING:
    from agentd.generation import GenerationEvent, SamplingParams
    from agentd.tokenizer import Tokenizer

log = logging.getLogger(__name__)

#: Request fields that override the model's default sampling parameters when set.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
#: Most texts one Embed call may carry (bounds a request's memory).
MAX_EMBED_TEXTS = 256

FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
}


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Serves the Inference RPCs over a :class:`ModelTable`."""

    def __init__(self, models: ModelTable):
        self._models = models

    async def Generate(self, request: pb.GenerateRequest, context: aio.ServicerContext) -> AsyncIterator[pb.GenerateResponse]:
        served = self._models.decoder(request.model)
        prompt_ids = await asyncio.to_thread(_prompt_ids, served, request)
        params = _sampling_params(served, request)
        run = GenerationRun(served, prompt_ids, params)
        started = time.monotonic()
        try:
            async with aclosing(run.events()) as events:
                async for event in events:
                    yield _response(event)
        finally:
            # Counts and timing only: no prompt or generated text in logs.
            log.info(
                "request %s Generate model=%s prompt_tokens=%d completion_tokens=%d finish=%s %.3fs",
                request_id.get(), served.name, len(prompt_ids), run.completion_tokens,
                run.finish_reason or "aborted", time.monotonic() - started,
            )

    async def Embed(self, request: pb.EmbedRequest, context: aio.ServicerContext) -> pb.EmbedResponse:
        served = self._models.encoder(request.model)
        texts = list(request.texts)
        if not texts:
            raise InvalidArgument("texts", "is empty: give at least one text")
        if len(texts) > MAX_EMBED_TEXTS:
            raise InvalidArgument("texts", f"holds {len(texts)} texts; at most {MAX_EMBED_TEXTS} per call")
        started = time.monotonic()
        vectors = await run_exclusive(served, lambda: served.model.embed(texts))
        log.info("request %s Embed model=%s texts=%d %.3fs", request_id.get(), served.name, len(texts), time.monotonic() - started)
        dim = int(vectors.shape[1])
        return pb.EmbedResponse(embeddings=[pb.Embedding(values=row.tolist()) for row in vectors], dim=dim)

    async def Tokenize(self, request: pb.TokenizeRequest, context: aio.ServicerContext) -> pb.TokenizeResponse:
        tokenizer = _tokenizer(self._models.get(request.model), "model")
        ids = await asyncio.to_thread(tokenizer.encode, request.text, request.add_special_tokens)
        return pb.TokenizeResponse(ids=ids, tokens=[tokenizer.id_to_token(i) or "" for i in ids])

    async def Detokenize(self, request: pb.DetokenizeRequest, context: aio.ServicerContext) -> pb.DetokenizeResponse:
        tokenizer = _tokenizer(self._models.get(request.model), "model")
        ids = list(request.ids)
        _check_ids(ids, tokenizer.vocab_size, "ids")
        text = await asyncio.to_thread(tokenizer.decode, ids, request.skip_special_tokens)
        return pb.DetokenizeResponse(text=text)


# -- request -> typed arguments ---------------------------------------------------
def _prompt_ids(served: ServedModel, request: pb.GenerateRequest) -> list[int]:
    """Token ids of the request's prompt, messages or ids; checked against the context."""
    which = request.WhichOneof("input")
    model = served.model
    if which is None:
        raise InvalidArgument("prompt", "one of prompt, messages or prompt_token_ids is required")
    if which == "prompt":
        if not request.prompt:
            raise InvalidArgument("prompt", "is empty")
        ids = _tokenizer(served, "prompt").encode(request.prompt, add_special_tokens=True)
    elif which == "messages":
        messages = request.messages.messages
        if not messages:
            raise InvalidArgument("messages", "is empty")
        for index, message in enumerate(messages):
            if not message.role:
                raise InvalidArgument(f"messages[{index}].role", "is empty")
        chat = [{"role": message.role, "content": message.content} for message in messages]
        ids = _tokenizer(served, "messages").apply_chat_template(chat, add_generation_prompt=True)
    else:
        ids = list(request.prompt_token_ids.ids)
        if not ids:
            raise InvalidArgument("prompt_token_ids", "is empty")
        _check_ids(ids, model.info.vocab_size, "prompt_token_ids")
    if not ids:
        raise InvalidArgument(which, "is empty after tokenization")
    context = model.info.context_length
    if len(ids) >= context:
        raise OutOfRange(f"prompt has {len(ids)} tokens; the model's context is {context}, leaving no room to generate")
    return ids


def _sampling_params(served: ServedModel, request: pb.GenerateRequest) -> "SamplingParams":
    """The model's defaults overridden by the fields the request sets; validated."""
    overrides: dict[str, Any] = {name: getattr(request, name) for name in SAMPLING_FIELDS if request.HasField(name)}
    if request.stop:
        overrides["stop"] = tuple(request.stop)
    context = served.model.info.context_length
    if overrides.get("max_tokens", 1) > context:
        raise InvalidArgument("max_tokens", f"must be at most the model's context length {context}")
    return served.model.default_params(**overrides)  # validates: InvalidArgument names the field


def _tokenizer(served: ServedModel, field: str) -> "Tokenizer":
    if served.model.tokenizer is None:
        raise InvalidArgument(field, f"model {served.name!r} has no tokenizer")
    return served.model.tokenizer


def _check_ids(ids: list[int], vocab_size: int, field: str) -> None:
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise InvalidArgument(field, f"token id {bad} is outside the vocabulary [0, {vocab_size})")


# -- results -> protobuf --------------------------------------------------------------
def _response(event: "GenerationEvent") -> pb.GenerateResponse:
    if event.finish_reason is None:
        return pb.GenerateResponse(text=event.text, token_ids=[event.token_id], logprobs=[event.logprob])
    return pb.GenerateResponse(
        text=event.text,
        finish_reason=FINISH_REASONS[event.finish_reason],
        usage=pb.Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens),
    )
