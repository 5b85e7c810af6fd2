"""The NATS transport: chat requests by request-reply, from any language with a NATS client.

The protocol (the README's "Over NATS" section is its reference):

* A request is a message on ``<subject_prefix>.chat`` (default ``tollgate.v1.chat``) with a
  reply subject. Its body is the JSON body of ``POST /v1/chat/completions``; the headers
  ``Tollgate-Task`` and ``Tollgate-Tenant`` (any case) play the part of the HTTP
  ``x-tollgate-*`` headers. Sidecars subscribe in one queue group, so each request is served by
  one of them.
* Every reply message carries ``Tollgate-Kind`` (``delta``, ``done`` or ``error``) and
  ``Tollgate-Seq`` (1, 2, ... within the reply). A reply ends with exactly one ``done`` or
  ``error``.
* Not streamed: one message, ``done`` with the ``chat.completion`` object (plus a ``tollgate``
  summary member), or ``error`` with the error body of the HTTP API.
* Streamed: ``delta`` messages, each a ``chat.completion.chunk`` with what one upstream read
  brought (split further only to fit the server's max_payload), then ``done`` (the final chunk:
  finish reason, usage, summary) or ``error``.

Publishing never blocks on a caller: NATS drops what nobody reads. The delta messages of a
stream carry a reply subject of the sidecar's own; when the caller's inbox has no subscriber
left, the server answers it with a 503 status, and the request is stopped at its next chunk as
a client that went away, so its provider call stops being paid for.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from adapters import TextDelta, ToolCallDelta
from events import new_id

from ._config import Config
from ._errors import TollgateError, error_body, unexpected_error
from ._executor import Call, ClientDisconnectedError, Executor, Outcome, Served
from ._http import (
    Collector,
    chunk_head,
    decode_call,
    openai_finish,
    openai_usage,
    tool_call_piece,
    usd,
)
from ._nats_connect import NatsLink

__all__ = ["KIND", "SEQ", "DeltaEncoder", "NatsTransport", "chunk_head", "serve_nats"]

log = logging.getLogger("tollgate.nats")

KIND = "Tollgate-Kind"
SEQ = "Tollgate-Seq"
# A header block is framed by "NATS/1.0\r\n" and a closing "\r\n"; each header adds ": " and
# "\r\n". The server counts headers and body together against max_payload.
_HEADER_FRAME = len(b"NATS/1.0\r\n\r\n")
# Room kept in a delta's size for its headers, whatever its sequence number.
_DELTA_HEADERS = {KIND: "delta", SEQ: "9" * 12}
_NO_RESPONDERS = "503"

_encode = msgspec.json.Encoder().encode
Chunk = TextDelta | ToolCallDelta


def _headers_size(headers: dict[str, str]) -> int:
    return _HEADER_FRAME + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


class _Summary(msgspec.Struct):
    """The ``tollgate`` member of a ``done`` body: who served the request and what it cost."""

    request_id: str
    model: str
    provider: str
    route: str
    cost_usd: float
    ttft_ms: float | None
    ttlt_ms: float
    attempts: int
    fallbacks: int


def _summary(outcome: Outcome) -> _Summary:
    served = outcome.served
    return _Summary(
        request_id=served.request_id,
        model=served.model,
        provider=served.provider,
        route=served.route,
        cost_usd=outcome.cost_micros / 1_000_000,
        ttft_ms=None if outcome.ttft_ns is None else round(outcome.ttft_ns / 1e6, 3),
        ttlt_ms=round(outcome.latency_ns / 1e6, 3),
        attempts=outcome.attempts,
        fallbacks=outcome.fallbacks,
    )


def _summary_headers(summary: _Summary, cost_micros: int) -> dict[str, str]:
    headers = {
        "Tollgate-Request-Id": summary.request_id,
        "Tollgate-Model": summary.model,
        "Tollgate-Provider": summary.provider,
        "Tollgate-Route": summary.route,
        "Tollgate-Cost-Usd": usd(cost_micros),
        "Tollgate-Ttlt-Ms": f"{summary.ttlt_ms:.3f}",
    }
    if summary.ttft_ms is not None:
        headers["Tollgate-Ttft-Ms"] = f"{summary.ttft_ms:.3f}"
    return headers


def _reply_too_large(size: int, limit: int) -> TollgateError:
    return TollgateError.invalid_request(
        f"the reply ({size} bytes) is larger than the NATS server's max_payload ({limit} bytes);"
        ' ask with "stream": true, whose messages are split to fit',
        code="reply_too_large",
        status=413,
    )


class _ReplyTooLargeError(Exception):
    def __init__(self, error: TollgateError) -> None:
        super().__init__(error.message)
        self.error = error


class _Replies:
    """The messages of one reply, numbered from 1, each checked against max_payload."""

    def __init__(self, client: Client, subject: str) -> None:
        self._client = client
        self._subject = subject
        self.seq = 0

    @property
    def limit(self) -> int:
        return self._client.max_payload

    async def publish(
        self, kind: str, body: bytes, headers: dict[str, str] | None = None, *, watch: str = ""
    ) -> None:
        """Raises :class:`_ReplyTooLargeError` (nothing sent) or nats-py's error."""
        full = {KIND: kind, SEQ: str(self.seq + 1), **(headers or {})}
        size = len(body) + _headers_size(full)
        if size > self.limit:
            raise _ReplyTooLargeError(_reply_too_large(size, self.limit))
        # No flush: nats-py's flusher task writes everything published in this turn of the
        # event loop together, so the messages of one upstream read leave in one write.
        await self._client.publish(self._subject, body, reply=watch, headers=full)
        self.seq += 1

    async def done(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            await self.publish("done", body, headers)
        except _ReplyTooLargeError as exc:
            log.warning("reply to request %s not sent: %s", headers.get("Tollgate-Request-Id"), exc)
            await self.error(exc.error, headers.get("Tollgate-Request-Id"))
        except nats.errors.Error as exc:
            log.info("reply not sent (%s): %r", headers.get("Tollgate-Request-Id"), exc)

    async def error(self, error: TollgateError, request_id: str | None = None) -> None:
        headers = {"Tollgate-Status": str(error.status), "Tollgate-Error-Type": error.type}
        if request_id:
            headers["Tollgate-Request-Id"] = request_id
        try:
            await self.publish("error", error_body(error), headers)
        except (_ReplyTooLargeError, nats.errors.Error) as exc:
            log.info("error reply not sent (%s): %r", request_id, exc)


class DeltaEncoder:
    """The bodies of a stream's ``delta`` messages: ``chat.completion.chunk`` JSON.

    The chunks of one upstream read go in one body (text concatenated, tool-call pieces merged
    per call), split only when it would pass ``limit`` bytes with its headers. A split keeps
    the pieces in order, so concatenating the deltas' text, and each call's arguments, gives the
    same answer. The first body has ``role``; the first piece of each tool call has its id,
    type and name, as OpenAI's streams do. Pure: no I/O, no clock.
    """

    def __init__(self, head: bytes, limit: int) -> None:
        # The chunk's JSON up to its delta: ``{"id":…,"choices":[{"index":0,"delta":``.
        self._head = head
        self._limit = limit
        self._role_sent = False
        self._calls_started: set[int] = set()

    def encode(self, chunks: Sequence[Chunk]) -> list[bytes]:
        """Raises :class:`_ReplyTooLargeError` if one character can't fit in ``limit``."""
        return self._fit(list(chunks))

    def _fit(self, chunks: list[Chunk]) -> list[bytes]:
        body, started = self._delta(chunks)
        size = len(body) + _headers_size(_DELTA_HEADERS)
        if size <= self._limit:
            self._calls_started |= started
            self._role_sent = True
            return [body]
        if len(chunks) > 1:
            middle = len(chunks) // 2
            return self._fit(chunks[:middle]) + self._fit(chunks[middle:])
        halves = _halve(chunks[0])
        if halves is None:
            raise _ReplyTooLargeError(_reply_too_large(size, self._limit))
        return self._fit([halves[0]]) + self._fit([halves[1]])

    def _delta(self, chunks: list[Chunk]) -> tuple[bytes, set[int]]:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        started: set[int] = set()
        for chunk in chunks:
            if isinstance(chunk, TextDelta):
                text.append(chunk.text)
                continue
            call = calls.get(chunk.index)
            if call is not None:
                call["function"]["arguments"] += chunk.arguments
                continue
            first = chunk.index not in self._calls_started
            if first:
                started.add(chunk.index)
            calls[chunk.index] = tool_call_piece(chunk, first=first)
        delta: dict[str, Any] = {} if self._role_sent else {"role": "assistant"}
        if text or not calls:
            delta["content"] = "".join(text)
        if calls:
            delta["tool_calls"] = list(calls.values())
        return self._head + _encode(delta) + b',"finish_reason":null}]}', started


def _halve(chunk: Chunk) -> tuple[Chunk, Chunk] | None:
    """Two pieces that concatenate to ``chunk``; None if it can't be split."""
    if isinstance(chunk, TextDelta):
        if len(chunk.text) < 2:
            return None
        middle = len(chunk.text) // 2
        return TextDelta(chunk.text[:middle]), TextDelta(chunk.text[middle:])
    if len(chunk.arguments) < 2:
        return None
    middle = len(chunk.arguments) // 2
    first = ToolCallDelta(chunk.index, chunk.arguments[:middle], chunk.id, chunk.name)
    return first, ToolCallDelta(chunk.index, chunk.arguments[middle:])


class _StreamSink:
    """Streams the answer as ``delta`` messages, then ``done`` (the executor's sink)."""

    def __init__(self, replies: _Replies, watch: str) -> None:
        self._replies = replies
        self._watch = watch
        self._head = b""
        self._encoder: DeltaEncoder | None = None
        # Set when the server reports that nobody listens on the caller's inbox any more.
        self.gone = False
        self.too_large: TollgateError | None = None

    async def begin(self, served: Served) -> None:
        self._head = chunk_head(served)
        self._encoder = DeltaEncoder(self._head, self._replies.limit)

    async def send(self, chunks: Sequence[Chunk]) -> None:
        if self.gone:
            raise ClientDisconnectedError
        assert self._encoder is not None
        try:
            for body in self._encoder.encode(chunks):
                await self._replies.publish("delta", body, watch=self._watch)
        except _ReplyTooLargeError as exc:
            # Only when max_payload can't hold one character of text: stop, and say why.
            self.too_large = exc.error
            raise ClientDisconnectedError from exc
        except nats.errors.Error as exc:
            # The connection is closed or its buffer is full: the caller can't get the rest.
            raise ClientDisconnectedError from exc

    async def finish(self, outcome: Outcome) -> None:
        summary = _summary(outcome)
        body = b"".join(
            (
                self._head,
                b'{},"finish_reason":',
                _encode(openai_finish(outcome.finish_reason)),
                b'}],"usage":',
                _encode(openai_usage(outcome)),
                b',"tollgate":',
                _encode(summary),
                b"}",
            )
        )
        await self._replies.done(body, _summary_headers(summary, outcome.cost_micros))


_SHUTTING_DOWN = TollgateError("cancelled", "the sidecar is shutting down", status=503)


class NatsTransport:
    """Serves ``<subject_prefix>.chat`` in a queue group, each request in its own task."""

    def __init__(
        self,
        executor: Executor,
        *,
        subject: str,
        queue: str,
        max_body_bytes: int,
        default_tenant: str,
    ) -> None:
        self.subject = subject
        self.queue = queue
        self._executor = executor
        self._max_body_bytes = max_body_bytes
        self._default_tenant = default_tenant
        self._client: Client | None = None
        self._requests: Subscription | None = None
        self._watch_prefix = ""
        self._watched: dict[str, _StreamSink] = {}
        self._tasks: TaskGroup | None = None
        self._inflight = 0
        self._all_done: anyio.Event | None = None
        self._closing = False
        # Set once the subscription is registered with the server.
        self.serving = anyio.Event()

    async def _subscribe(self, client: Client) -> None:
        if self._closing:
            return
        self._client = client
        # One wildcard subscription for the whole sidecar receives the "no responders" statuses
        # about callers' inboxes, one token per streamed request.
        self._watch_prefix = client.new_inbox()
        await client.subscribe(f"{self._watch_prefix}.*", cb=self._on_no_interest)
        self._requests = await client.subscribe(self.subject, queue=self.queue, cb=self._on_request)
        # Once a round trip is back, the server routes requests to us. Two of them: nats-py
        # (2.16) writes flush()'s PING straight to the socket, ahead of the SUBs still waiting
        # in its buffer for the flusher task; that task has run by the first PONG.
        await client.flush()
        await client.flush()
        log.info("serving NATS requests on %s (queue group %s)", self.subject, self.queue)
        self.serving.set()

    async def _subscribe_when_connected(self, link: NatsLink) -> None:
        await self._subscribe(await link.wait())

    async def _on_request(self, msg: Msg) -> None:
        # nats-py awaits this callback before taking the next message: start a task and return.
        if self._tasks is None:
            return  # stopped: a message delivered after the subscription could be dropped
        self._inflight += 1
        self._tasks.start_soon(self._serve, msg, time.perf_counter_ns())

    async def _on_no_interest(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            sink = self._watched.get(msg.subject.rpartition(".")[2])
            if sink is not None:
                sink.gone = True

    async def _serve(self, msg: Msg, received_ns: int) -> None:
        try:
            if not msg.reply:
                # Nobody to answer: serving it would pay a provider for nothing.
                log.info("ignored a NATS request without a reply subject on %s", msg.subject)
                return
            assert self._client is not None
            replies = _Replies(self._client, msg.reply)
            try:
                call = self._decode(msg, received_ns)
            except TollgateError as error:
                await replies.error(error)
                return
            try:
                if call.request.stream:
                    await self._stream(call, replies)
                else:
                    await self._unary(call, replies)
            except TollgateError as error:
                await replies.error(error, call.request_id)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await replies.error(_SHUTTING_DOWN, call.request_id)
                raise
            except Exception as exc:
                log.exception("unhandled error serving NATS request %s", call.request_id)
                await replies.error(unexpected_error(exc), call.request_id)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._all_done is not None:
                self._all_done.set()

    def _decode(self, msg: Msg, received_ns: int) -> Call:
        headers = {k.lower(): v for k, v in (msg.headers or {}).items()}
        return decode_call(
            msg.data,
            max_body_bytes=self._max_body_bytes,
            tenant_header=headers.get("tollgate-tenant"),
            task_header=headers.get("tollgate-task"),
            default_tenant=self._default_tenant,
            transport="nats",
            received_ns=received_ns,
        )

    async def _unary(self, call: Call, replies: _Replies) -> None:
        """Raises the executor's TollgateError, and cancellation: :meth:`_serve` answers them."""
        collector = Collector()
        outcome = await self._executor.execute(call, collector)
        summary = _summary(outcome)
        # The completion is one JSON object: the summary joins it as one more member.
        body = collector.completion(outcome)[:-1] + b',"tollgate":' + _encode(summary) + b"}"
        await replies.done(body, _summary_headers(summary, outcome.cost_micros))

    async def _stream(self, call: Call, replies: _Replies) -> None:
        """Raises the executor's TollgateError, and cancellation: :meth:`_serve` answers them."""
        token = new_id()
        sink = _StreamSink(replies, f"{self._watch_prefix}.{token}")
        self._watched[token] = sink
        try:
            outcome = await self._executor.execute(call, sink)
        except ClientDisconnectedError:
            if sink.too_large is not None:
                await replies.error(sink.too_large, call.request_id)
            else:
                log.info("the caller of NATS request %s went away; stopped", call.request_id)
            return
        finally:
            del self._watched[token]
        await sink.finish(outcome)

    async def _stop(self, grace_s: float) -> None:
        """Stop taking requests (the queue group's other members get them), then give those
        in flight the rest of ``grace_s`` to finish."""
        self._closing = True
        with anyio.move_on_after(grace_s):
            if self._requests is not None and self._client is not None:
                try:
                    if self._client.is_connected:
                        # Unsubscribes, and serves what was already delivered to us.
                        await self._requests.drain()  # type: ignore[no-untyped-call]
                    else:
                        # Reconnecting: forget the subscription so it is not made again.
                        await self._requests.unsubscribe()
                except nats.errors.Error as exc:
                    log.info("NATS subscription not drained (%r)", exc)
            if self._inflight:
                self._all_done = anyio.Event()
                await self._all_done.wait()


@contextlib.asynccontextmanager
async def serve_nats(
    link: NatsLink | None, executor: Executor, config: Config
) -> AsyncIterator[NatsTransport | None]:
    """Serve chat requests over NATS until exit (None: ``nats.enabled`` is off); then drain.

    With the connection already up, the subscription is in place when this yields; otherwise it
    is made as soon as the link connects. On exit, requests in flight get
    ``server.shutdown_grace_s`` to finish; those still running are cancelled and answered with
    a typed ``cancelled`` error.
    """
    nats_config = config.nats
    if link is None or not nats_config.enabled:
        yield None
        return
    transport = NatsTransport(
        executor,
        subject=f"{nats_config.subject_prefix}.chat",
        queue=nats_config.queue_group,
        max_body_bytes=config.server.max_body_bytes,
        default_tenant=config.server.default_tenant,
    )
    async with anyio.create_task_group() as tasks:
        transport._tasks = tasks
        if link.client is not None:
            await transport._subscribe(link.client)
        else:
            tasks.start_soon(transport._subscribe_when_connected, link)
        try:
            yield transport
        finally:
            with anyio.CancelScope(shield=True):
                await transport._stop(config.server.shutdown_grace_s)
            transport._tasks = None
            tasks.cancel_scope.cancel()
