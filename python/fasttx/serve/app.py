"""The HTTP side of ``fasttx serve``: FastAPI routes over the continuous-batching engine.

Requests are checked and tokenized by protocol.py, submitted to the engine, and answered either as
one JSON object or as Server-Sent Events. Whatever goes wrong answers in OpenAI's error shape: a
client's mistake is a 400 (never FastAPI's 422, never a 500), a wrong key a 401, a full queue a
503; a failure inside the engine fails that request only. A client that goes away cancels its
request, so its rows leave the running batch at the next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import AsyncGenerator, AsyncIterator, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import protocol
from .engine import Engine, Failure, Finish, QueueFull, Token
from .protocol import Choice, Prepared, ProtocolError, error_body

log = logging.getLogger("fasttx.serve")

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25
# Request bodies beyond this are refused (413) before they are read to the end.
MAX_BODY_BYTES = 32 * 2**20


class EngineError(Exception):
    """The engine failed one request (it keeps serving the others)."""


class Job:
    """The engine handles of one HTTP request, cancelled together unless they ran to the end."""

    def __init__(self, prepared: Prepared, handles: list):
        self.prepared = prepared
        self.handles = handles
        self.finished = False

    def abort(self) -> None:
        if not self.finished:
            for h in self.handles:
                h.cancel()

    async def events(self) -> AsyncGenerator[tuple[int, Union[Token, Finish, Failure]], None]:
        """``(choice index, event)`` from every handle as they come; a ``Failure`` ends it."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(k: int, handle) -> None:
            try:
                async for event in handle.stream():
                    await queue.put((k, event))
            except Exception as e:  # noqa: BLE001 - reported to the client as this request's failure
                log.exception("engine stream failed")
                await queue.put((k, Failure(f"{type(e).__name__}: {e}")))
            finally:
                await queue.put((k, None))

        tasks = [asyncio.create_task(pump(k, h)) for k, h in enumerate(self.handles)]
        try:
            open_handles = len(tasks)
            while open_handles:
                k, event = await queue.get()
                if event is None:
                    open_handles -= 1
                    continue
                if isinstance(event, Failure):
                    yield -1, event
                    return
                yield self.prepared.choice_of[k][event.index], event
            self.finished = True
        finally:
            for t in tasks:
                t.cancel()


def build_app(model, *, model_id: str, max_batch: int, max_queue: int, api_key: Optional[str]) -> FastAPI:
    engine = Engine(model, max_batch=max_batch, max_queue=max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.close()

    # No OpenAPI pages: the schema is OpenAI's, and the request bodies are parsed by hand.
    app = FastAPI(title="fasttx", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    created = protocol.now()
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "fasttx"}

    # ------------------------------------------------------------------ errors

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, exc: ProtocolError):
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(error_body(exc.message, type=kind, param=exc.param, code=exc.code), exc.status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(f"invalid request: {exc.errors()}"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail)), exc.status_code, exc.headers)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError):
        return JSONResponse(error_body(str(exc), type="server_error"), 500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", type="server_error"), 500)

    # ------------------------------------------------------------------ auth

    async def require_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of the key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ProtocolError(
                "missing or wrong API key: send 'Authorization: Bearer <key>'", status=401, code="invalid_api_key"
            )

    authorized = [Depends(require_key)]

    # ------------------------------------------------------------------ routes

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.stats}

    @app.get("/v1/models", dependencies=authorized)
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}", dependencies=authorized)
    async def model_card(name: str):
        if name != model_id:
            raise ProtocolError(f"the model '{name}' does not exist; this server serves '{model_id}'", "model", status=404, code="model_not_found")
        return card

    @app.post("/v1/chat/completions", dependencies=authorized)
    async def chat_completions(request: Request):
        return await _complete(request, protocol.parse_chat)

    @app.post("/v1/completions", dependencies=authorized)
    async def completions(request: Request):
        return await _complete(request, protocol.parse_completion)

    # ------------------------------------------------------------------ requests

    async def _complete(request: Request, parse):
        body = await _read_json(request)
        # Rendering the chat template and tokenizing take a while on long prompts: off the loop.
        prepared = await run_in_threadpool(parse, body, model)
        job = Job(prepared, _submit(prepared))
        if prepared.stream:
            return EventStream(_sse(job, model_id), job)
        try:
            return await _collect(request, job, model_id)
        finally:
            job.abort()

    def _submit(prepared: Prepared) -> list:
        handles: list = []
        try:
            for req in prepared.requests:
                handles.append(engine.submit(req))
        except BaseException as e:
            for h in handles:
                h.cancel()
            if isinstance(e, QueueFull):
                raise ProtocolError(
                    "the server is at capacity (request queue full): retry later", status=503, code="queue_full"
                ) from None
            if isinstance(e, ValueError):  # the options or the prompt, checked by the engine
                raise ProtocolError(str(e)) from None
            raise
        return handles

    return app


async def _read_json(request: Request):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ProtocolError(f"the request body exceeds {MAX_BODY_BYTES} bytes", status=413)
    chunks, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(f"the request body exceeds {MAX_BODY_BYTES} bytes", status=413)
        chunks.append(piece)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ProtocolError(f"the request body is not valid JSON: {e}") from None


async def _watch_disconnect(request: Request, job: Job) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    job.abort()


async def _collect(request: Request, job: Job, model_id: str) -> dict:
    """A non-streaming answer: every sequence to its end, unless the client leaves first."""
    p = job.prepared
    choices = [Choice() for _ in range(p.choices)]
    watcher = asyncio.create_task(_watch_disconnect(request, job))
    events = job.events()
    try:
        async for i, event in events:
            if isinstance(event, Failure):
                raise EngineError(event.message)
            c = choices[i]
            if isinstance(event, Token):
                c.text += event.text
                c.logprobs.extend(event.logprobs or ())
            elif isinstance(event, Finish):
                c.text += event.text
                c.finish_reason = event.reason
                c.completion_tokens = event.completion_tokens
    finally:
        watcher.cancel()
        await events.aclose()  # its pumps stop now, not when the generator is collected
    build = protocol.chat_completion if p.chat else protocol.text_completion
    return build(protocol.new_id(p.chat), protocol.now(), model_id, choices, p.prompt_tokens, p.logprobs is not None)


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _sse(job: Job, model_id: str) -> AsyncIterator[str]:
    """The Server-Sent Events of a streamed request: for chat a first chunk per choice with the
    role, then content deltas, a chunk with each choice's finish_reason, the usage chunk when
    asked for, and ``data: [DONE]``."""
    p = job.prepared
    rid, created = protocol.new_id(p.chat), protocol.now()

    def chunk(choices: list) -> str:
        return _data(protocol.chunk(rid, created, model_id, p.chat, choices, p.include_usage))

    if p.chat:
        for i in range(p.choices):
            yield chunk([protocol.chat_delta(i, {"role": "assistant", "content": ""})])
    offsets = [0] * p.choices  # characters of each completion so far, for text_offset
    completion_tokens = 0
    events = job.events()
    try:
        async for i, event in events:
            if isinstance(event, Failure):
                yield _data(error_body(event.message, type="server_error"))
                return
            entries = event.logprobs if isinstance(event, Token) and p.logprobs is not None else None
            text = event.text
            if isinstance(event, Token) and not text and not entries:
                continue  # text held back (an unfinished word or a possible stop string)
            reason = event.reason if isinstance(event, Finish) else None
            if isinstance(event, Finish):
                completion_tokens += event.completion_tokens
            if p.chat:
                lp = protocol.chat_logprobs(entries) if entries else None
                yield chunk([protocol.chat_delta(i, {"content": text} if text or entries else {}, lp, reason)])
            else:
                lp = protocol.completion_logprobs(entries, offsets[i]) if entries else None
                offsets[i] += sum(len(e.token) for e in entries or ())
                yield chunk([protocol.text_delta(i, text, lp, reason)])
    except Exception as e:  # noqa: BLE001 - the status line is gone: the error goes in the stream
        log.exception("stream failed")
        yield _data(error_body(f"internal error: {type(e).__name__}: {e}", type="server_error"))
        return
    finally:
        await events.aclose()
    if p.include_usage:
        final = protocol.chunk(rid, created, model_id, p.chat, [], False)
        final["usage"] = protocol.usage(p.prompt_tokens, completion_tokens)
        yield _data(final)
    yield "data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """An SSE response whose request is cancelled if the response ends early: the client
    disconnected (Starlette then cancels the stream), or sending failed."""

    def __init__(self, content: AsyncIterator[str], job: Job):
        # no-cache and no proxy buffering: each event must reach the client when it is made.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._job.abort()
