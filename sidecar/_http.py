"""The Unix-socket transport: OpenAI's Chat Completions API over HTTP/1.1 (aiohttp).

Any OpenAI client works unchanged. Routing inputs ride in ``model`` ("task:…", "class:…", a model
name, or "auto"), in the ``x-tollgate-task``/``x-tollgate-tenant`` headers, or in ``metadata``.
Replies name the request, model and provider in ``x-tollgate-*`` headers.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from adapters import TextDelta, ToolCallDelta

from ._api import ChatCompletionRequest, parse_chat_request
from ._errors import TollgateError, error_body, unexpected_error
from ._executor import Call, ClientDisconnectedError, Executor, Outcome, Served

__all__ = [
    "LISTEN_BACKLOG",
    "Collector",
    "bind_unix_socket",
    "body_too_large",
    "chunk_head",
    "create_app",
    "decode_call",
    "openai_finish",
    "openai_usage",
    "routing_inputs",
    "tool_call_piece",
    "usd",
]

log = logging.getLogger("tollgate.http")

# Connections waiting to be accepted. A burst beyond it is refused by the kernel, so it is sized
# for a busy application's connection pool, not for aiohttp's default of 128.
LISTEN_BACKLOG = 4096

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_encode = msgspec.json.Encoder().encode
# Where a chunk's JSON goes on from its other members to its delta.
_DELTA_OPEN = b',"choices":[{"index":0,"delta":'
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_OPENAI_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "context_overflow": "length",
}


def create_app(executor: Executor, *, max_body_bytes: int, default_tenant: str) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_typed_errors])
    handler = _ChatHandler(executor, max_body_bytes=max_body_bytes, default_tenant=default_tenant)
    app.router.add_post("/v1/chat/completions", handler.handle)
    return app


def bind_unix_socket(path: str, mode: int) -> socket.socket:
    """A listening Unix socket at ``path`` with permissions ``mode`` from the start.

    The mode is set between bind() and listen(), so no client can connect while the socket is
    more open than asked. A stale socket file is replaced; a live one (another sidecar still
    serving) or a non-socket file is an error.
    """
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            target.unlink()
        else:
            raise OSError(f"{path} is in use by a running server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


@web.middleware
async def _typed_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error a client sees has the OpenAI error shape, including aiohttp's own."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        return _error_response(
            TollgateError.invalid_request(exc.reason, code=code, status=exc.status)
        )
    except Exception as exc:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return _error_response(unexpected_error(exc))


def _error_response(error: TollgateError, request_id: str | None = None) -> web.Response:
    headers = {"x-tollgate-request-id": request_id} if request_id else None
    return web.Response(
        status=error.status,
        body=error_body(error),
        content_type="application/json",
        headers=headers,
    )


class _ChatHandler:
    def __init__(self, executor: Executor, *, max_body_bytes: int, default_tenant: str) -> None:
        self._executor = executor
        self._max_body_bytes = max_body_bytes
        self._default_tenant = default_tenant

    async def handle(self, request: web.Request) -> web.StreamResponse:
        received_ns = time.perf_counter_ns()
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            # Refuse before reading: a 20 MB body should cost nothing.
            return _error_response(body_too_large(self._max_body_bytes))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error_response(body_too_large(self._max_body_bytes))
        try:
            call = decode_call(
                body,
                max_body_bytes=self._max_body_bytes,
                tenant_header=request.headers.get("x-tollgate-tenant"),
                task_header=request.headers.get("x-tollgate-task"),
                default_tenant=self._default_tenant,
                transport="unix",
                received_ns=received_ns,
            )
        except TollgateError as error:
            return _error_response(error)
        if call.request.stream:
            return await self._stream(request, call)
        collector = Collector()
        try:
            outcome = await self._executor.execute(call, collector)
        except TollgateError as error:
            return _error_response(error, call.request_id)
        headers = _served_headers(outcome.served)
        # A stream's headers leave before its cost is known: it reports it in the usage chunk.
        headers["x-tollgate-cost-usd"] = usd(outcome.cost_micros)
        return web.Response(
            body=collector.completion(outcome), content_type="application/json", headers=headers
        )

    async def _stream(self, request: web.Request, call: Call) -> web.StreamResponse:
        options = call.request.stream_options
        sink = _SSEWriter(request, include_usage=options is not None and options.include_usage)
        try:
            outcome = await self._executor.execute(call, sink)
        except TollgateError as error:
            if sink.response is None:
                return _error_response(error, call.request_id)
            # Already streaming: the status is sent, so the error travels as a data event,
            # the way OpenAI reports mid-stream failures (its SDK raises on it).
            await sink.close_with_error(error)
            return sink.response
        except ClientDisconnectedError:
            assert sink.response is not None
            return sink.response
        await sink.finish(outcome)
        assert sink.response is not None
        return sink.response


def routing_inputs(
    parsed: ChatCompletionRequest,
    *,
    tenant_header: str | None,
    task_header: str | None,
    default_tenant: str,
) -> tuple[str, str | None]:
    """The request's tenant and task: a transport's headers win over ``metadata``. Shared by
    the transports so that they route alike."""
    metadata = parsed.metadata or {}
    tenant = tenant_header or metadata.get("tenant") or default_tenant
    task = task_header or metadata.get("task")
    if not _NAME.match(tenant):
        raise TollgateError.invalid_request(
            "the tenant must be 1-64 letters, digits, '.', '_', ':' or '-'", param="tenant"
        )
    if task is not None and not _NAME.match(task):
        raise TollgateError.invalid_request(
            "the task must be 1-64 letters, digits, '.', '_', ':' or '-'", param="task"
        )
    return tenant, task


def decode_call(
    body: bytes,
    *,
    max_body_bytes: int,
    tenant_header: str | None,
    task_header: str | None,
    default_tenant: str,
    transport: str,
    received_ns: int,
) -> Call:
    """A request body and a transport's routing headers as the executor's :class:`Call`.

    Shared by the transports so that they accept, refuse and route alike. Raises
    :class:`TollgateError` for a body over ``max_body_bytes`` or one that is not a valid request.
    """
    if len(body) > max_body_bytes:
        raise body_too_large(max_body_bytes)
    parsed, params = parse_chat_request(body)
    tenant, task = routing_inputs(
        parsed,
        tenant_header=tenant_header,
        task_header=task_header,
        default_tenant=default_tenant,
    )
    return Call(
        request=parsed,
        params=params,
        tenant=tenant,
        task=task,
        transport=transport,
        received_ns=received_ns,
    )


def usd(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}"


def body_too_large(limit: int) -> TollgateError:
    return TollgateError.invalid_request(
        f"the request body is larger than the limit of {limit} bytes",
        code="body_too_large",
        status=413,
    )


def openai_finish(reason: str) -> str:
    """tollgate's finish reason as OpenAI names it."""
    return _OPENAI_FINISH.get(reason, "stop")


def chunk_head(served: Served) -> bytes:
    """The JSON every ``chat.completion.chunk`` of the answer starts with, up to its delta:
    ``{"id":…,"choices":[{"index":0,"delta":``. Shared by the transports' streams."""
    return _chunk_fields(served) + _DELTA_OPEN


def _chunk_fields(served: Served) -> bytes:
    """A chunk's members before ``choices``, its object left open: ``{"id":…,"model":…``."""
    fields = _encode(
        {
            "id": f"chatcmpl-{served.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": served.model,
        }
    )
    return fields[:-1]


def tool_call_piece(chunk: ToolCallDelta, *, first: bool) -> dict[str, Any]:
    """A tool call's entry in a chunk's ``delta.tool_calls``. As in OpenAI's streams, the first
    piece of each call carries its id (``call_<index>`` when the provider gave none), type and
    name; later pieces carry arguments alone."""
    function: dict[str, str] = {"arguments": chunk.arguments}
    call: dict[str, Any] = {"index": chunk.index, "function": function}
    if first:
        call["id"] = chunk.id or f"call_{chunk.index}"
        call["type"] = "function"
        function["name"] = chunk.name or ""
    return call


def _served_headers(served: Served) -> dict[str, str]:
    return {
        "x-tollgate-request-id": served.request_id,
        "x-tollgate-model": served.model,
        "x-tollgate-provider": served.provider,
        "x-tollgate-route": served.route,
    }


class _OutUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]
    completion_tokens_details: dict[str, int]
    # tollgate's addition: what the request cost, failed attempts included (clients ignore it).
    cost_usd: float


def openai_usage(outcome: Outcome) -> _OutUsage:
    usage = outcome.usage
    return _OutUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        prompt_tokens_details={"cached_tokens": usage.cached_input_tokens},
        completion_tokens_details={"reasoning_tokens": usage.reasoning_tokens},
        cost_usd=outcome.cost_micros / 1_000_000,
    )


class Collector:
    """Gathers a non-streamed answer into one chat.completion object."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    async def begin(self, served: Served) -> None:
        pass

    async def send(self, chunks: Sequence[TextDelta | ToolCallDelta]) -> None:
        for chunk in chunks:
            if isinstance(chunk, TextDelta):
                self._text.append(chunk.text)
                continue
            call = self._calls.setdefault(
                chunk.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if chunk.id:
                call["id"] = chunk.id
            if chunk.name:
                call["function"]["name"] = chunk.name
            call["function"]["arguments"] += chunk.arguments

    def completion(self, outcome: Outcome) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self._text) if self._text or not self._calls else None,
        }
        if self._calls:
            message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        return _encode(
            {
                "id": f"chatcmpl-{outcome.served.request_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": outcome.served.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": openai_finish(outcome.finish_reason),
                        "logprobs": None,
                    }
                ],
                "usage": openai_usage(outcome),
            }
        )


class _SSEWriter:
    """Streams the answer as OpenAI chat.completion.chunk events.

    Every chunk shares its id, creation time and model, so the JSON around each delta is
    encoded once and the per-chunk work is encoding the delta alone.
    """

    def __init__(self, request: web.Request, *, include_usage: bool) -> None:
        self._request = request
        self._include_usage = include_usage
        self.response: web.StreamResponse | None = None
        # ``data: `` and the chunk's members before ``choices``, for the usage chunk; every
        # chunk shares them (one creation time), so they are encoded once, in begin().
        self._head = b""
        # The head continued up to the delta: what every other event starts with.
        self._prefix = b""
        self._calls_started: set[int] = set()

    async def begin(self, served: Served) -> None:
        response = web.StreamResponse(headers={**_SSE_HEADERS, **_served_headers(served)})
        self._head = b"data: " + _chunk_fields(served)
        self._prefix = self._head + _DELTA_OPEN
        self.response = response
        try:
            await response.prepare(self._request)
            await response.write(
                self._prefix + b'{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
            )
        except ConnectionError as exc:
            raise ClientDisconnectedError from exc

    async def send(self, chunks: Sequence[TextDelta | ToolCallDelta]) -> None:
        # One write for the chunks of one upstream read: a syscall per chunk would dominate.
        data = b"".join(self._event(chunk) for chunk in chunks)
        assert self.response is not None
        try:
            await self.response.write(data)
        except ConnectionError as exc:
            raise ClientDisconnectedError from exc

    def _event(self, chunk: TextDelta | ToolCallDelta) -> bytes:
        if isinstance(chunk, TextDelta):
            delta: dict[str, Any] = {"content": chunk.text}
        else:
            first = chunk.index not in self._calls_started
            self._calls_started.add(chunk.index)
            delta = {"tool_calls": [tool_call_piece(chunk, first=first)]}
        return self._prefix + _encode(delta) + b',"finish_reason":null}]}\n\n'

    async def finish(self, outcome: Outcome) -> None:
        assert self.response is not None
        finish = openai_finish(outcome.finish_reason)
        tail = self._prefix + b'{},"finish_reason":' + _encode(finish) + b"}]}\n\n"
        if self._include_usage:
            usage = _encode(openai_usage(outcome))
            tail += self._head + b',"choices":[],"usage":' + usage + b"}\n\n"
        try:
            await self.response.write(tail + b"data: [DONE]\n\n")
            await self.response.write_eof()
        except ConnectionError:
            pass

    async def close_with_error(self, error: TollgateError) -> None:
        assert self.response is not None
        try:
            await self.response.write(b"data: " + error_body(error) + b"\n\n")
            await self.response.write_eof()
        except ConnectionError:
            pass
