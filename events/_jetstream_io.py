"""Raw JetStream traffic the store needs and nats-py 2.16 lacks: batched direct gets, replies
routed by token, and a follower (a pull consumer that survives restarts, in order, without gaps).

Everything here speaks core NATS messages with JetStream headers, so nothing depends on client
helpers that wait for one reply per message.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._ids import new_id

__all__ = [
    "Follower",
    "Inbox",
    "JetStreamUnavailableError",
    "PublishError",
    "RawMessage",
    "direct_batch",
    "direct_last",
    "pub_ack",
    "publish",
    "status",
]

_log = logging.getLogger(__name__)

_API: Final = "$JS.API"
# Direct gets answer a batch with its messages and then an "end of batch" status.
_EOB: Final = "204"
_NOT_FOUND: Final = "404"
_NO_RESPONDERS: Final = "503"
_MIN_LAST_SEQ: Final = "412"
_HEARTBEAT: Final = "100"
_RECONNECT_CHECK_S: Final = 0.1


class RawMessage(msgspec.Struct, frozen=True):
    """A stored message as a reader sees it."""

    seq: int
    subject: str
    data: bytes
    msg_id: str | None


class JetStreamUnavailableError(Exception):
    """No answer (a timeout, no responders, a lost connection): the outcome is unknown."""


class PublishError(Exception):
    """The server refused a publish; ``err_code`` is JetStream's error code."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


class Inbox:
    """One wildcard subscription whose replies are routed to waiters by their last token.

    Cheaper than a subscription per request, and unlike ``nc.request`` it takes many replies
    per request (a batched direct get).
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._counter = itertools.count()
        self._waiters: dict[str, MemoryObjectSendStream[Msg]] = {}
        self._sub: Subscription | None = None

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._route)

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            # The connection may be gone already, and the subscription with it.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for send in self._waiters.values():
            send.close()
        self._waiters.clear()

    async def _route(self, msg: Msg) -> None:
        send = self._waiters.get(msg.subject.rpartition(".")[2])
        if send is not None:
            # More replies than promised, or a waiter that gave up: nobody wants this one.
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                send.send_nowait(msg)

    def expect(self, max_replies: int) -> tuple[str, _Replies]:
        """A reply subject and the stream its replies arrive on (close it when done)."""
        key = str(next(self._counter))
        send, receive = anyio.create_memory_object_stream[Msg](max_replies)
        self._waiters[key] = send
        return f"{self._prefix}.{key}", _Replies(self, key, receive)

    def _forget(self, key: str) -> None:
        send = self._waiters.pop(key, None)
        if send is not None:
            send.close()


class _Replies:
    __slots__ = ("_inbox", "_key", "_receive")

    def __init__(self, inbox: Inbox, key: str, receive: MemoryObjectReceiveStream[Msg]) -> None:
        self._inbox = inbox
        self._key = key
        self._receive = receive

    async def next(self, timeout_s: float) -> Msg:
        """The next reply; JetStreamUnavailableError if none comes in time, or if the client
        reconnected meanwhile (what was published on the lost connection may never have
        arrived, so waiting out the timeout would only delay the retry)."""
        stats = self._inbox._nc.stats
        reconnects = stats["reconnects"]
        deadline = anyio.current_time() + timeout_s
        while (left := deadline - anyio.current_time()) > 0:
            with anyio.move_on_after(min(left, _RECONNECT_CHECK_S)):
                try:
                    return await self._receive.receive()
                except anyio.EndOfStream:
                    raise JetStreamUnavailableError("the inbox closed") from None
            if stats["reconnects"] != reconnects:
                raise JetStreamUnavailableError("the client reconnected while waiting")
        raise JetStreamUnavailableError(f"no reply within {timeout_s} s")

    def close(self) -> None:
        self._inbox._forget(self._key)
        self._receive.close()

    def __enter__(self) -> _Replies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status(msg: Msg) -> str | None:
    """The status code of a status message (no payload, a ``Status`` header), else None."""
    if msg.data or not msg.headers:
        return None
    return msg.headers.get("Status")


def pub_ack(msg: Msg) -> dict[str, Any]:
    """The parsed publish acknowledgement; raises PublishError or JetStreamUnavailableError."""
    code = status(msg)
    if code is not None:
        if code == _NO_RESPONDERS:
            raise JetStreamUnavailableError("no responders: the stream is not available")
        raise JetStreamUnavailableError(f"unexpected status {code} on a publish")
    if not msg.data:
        raise JetStreamUnavailableError("an empty reply where an acknowledgement was due")
    try:
        ack = json.loads(msg.data)
    except ValueError as exc:
        raise JetStreamUnavailableError(f"an acknowledgement that is not JSON: {exc}") from None
    if not isinstance(ack, dict):
        raise JetStreamUnavailableError("an acknowledgement that is not an object")
    error = ack.get("error")
    if error is not None:
        raise PublishError(
            int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description"))
        )
    return ack


async def direct_batch(
    nc: Client,
    inbox: Inbox,
    stream: str,
    *,
    seq: int,
    limit: int,
    timeout_s: float,
    next_by_subj: str | None = None,
    start_time: str | None = None,
    min_last_seq: int = 0,
) -> list[RawMessage]:
    """Up to ``limit`` stored messages from ``seq`` (or from ``start_time``, RFC 3339) on,
    matching ``next_by_subj``, by one batched direct get. Fewer than ``limit`` means there were
    no more."""
    request: dict[str, Any] = {"batch": limit}
    if start_time is not None:
        request["start_time"] = start_time
    else:
        request["seq"] = max(seq, 1)
    if next_by_subj is not None:
        request["next_by_subj"] = next_by_subj
    if min_last_seq > 0:
        # Read-after-write on replicas: a follower that is behind defers to the leader.
        request["min_last_seq"] = min_last_seq
    for _ in range(20):
        reply, replies = inbox.expect(limit + 1)
        with replies:
            await publish(nc, f"{_API}.DIRECT.GET.{stream}", json.dumps(request).encode(), reply)
            result: list[RawMessage] = []
            while True:
                msg = await replies.next(timeout_s)
                code = status(msg)
                if code is None:
                    result.append(_raw(msg))
                    if len(result) >= limit:
                        return result
                    continue
                if code in (_EOB, _NOT_FOUND):
                    return result
                if code == _MIN_LAST_SEQ:
                    break  # not up to date yet: ask again (the server already waited a bit)
                if code == _NO_RESPONDERS:
                    raise JetStreamUnavailableError("no responders: the stream is not available")
                description = (msg.headers or {}).get("Description", "")
                raise JetStreamUnavailableError(f"direct get failed: {code} {description}")
    raise JetStreamUnavailableError("no server could read at the requested position")


async def direct_last(
    nc: Client, inbox: Inbox, stream: str, subject: str, *, timeout_s: float, min_last_seq: int = 0
) -> RawMessage | None:
    """The newest message on ``subject`` (a literal subject or a filter), or None."""
    request: dict[str, Any] = {"last_by_subj": subject}
    if min_last_seq > 0:
        request["min_last_seq"] = min_last_seq
    for _ in range(20):
        reply, replies = inbox.expect(1)
        with replies:
            await publish(nc, f"{_API}.DIRECT.GET.{stream}", json.dumps(request).encode(), reply)
            msg = await replies.next(timeout_s)
        code = status(msg)
        if code is None:
            return _raw(msg)
        if code == _NOT_FOUND:
            return None
        if code == _MIN_LAST_SEQ:
            continue
        if code == _NO_RESPONDERS:
            raise JetStreamUnavailableError("no responders: the stream is not available")
        description = (msg.headers or {}).get("Description", "")
        raise JetStreamUnavailableError(f"direct get failed: {code} {description}")
    raise JetStreamUnavailableError("no server could read at the requested position")


def _raw(msg: Msg) -> RawMessage:
    headers = msg.headers or {}
    return RawMessage(
        seq=int(headers["Nats-Sequence"]),
        subject=headers.get("Nats-Subject", ""),
        data=msg.data,
        msg_id=headers.get("Nats-Msg-Id"),
    )


async def publish(
    nc: Client, subject: str, payload: bytes, reply: str, headers: dict[str, str] | None = None
) -> None:
    """``nc.publish``, with its failures (a closed connection, a full reconnect buffer) as
    JetStreamUnavailableError: no answer will come."""
    try:
        await nc.publish(subject, payload, reply=reply, headers=headers)
    except Exception as exc:
        raise JetStreamUnavailableError(f"cannot publish: {exc!r}") from exc


class Follower:
    """Every message matching ``filters`` after ``after_seq``, in stream order, forever.

    A pull consumer of our own (acknowledgements off, in memory, one replica), asked for
    ``batch`` messages at a time. Its delivery sequence must advance by one per message: any
    gap (a consumer lost in a server restart, a redelivery, a reset) recreates it at the
    position after the last message handed out, so nothing is skipped or repeated. Missing
    heartbeats mean the same. The consumer is removed on close and, should that fail, by the
    server after ``inactive_threshold``.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        filters: Sequence[str],
        after_seq: int,
        *,
        batch: int = 512,
        heartbeat_s: float = 1.0,
        timeout_s: float = 5.0,
        caught_up: anyio.Event | None = None,
    ) -> None:
        self._nc = nc
        self._stream = stream
        self._filters = list(filters)
        self.position = after_seq
        self._batch = batch
        self._heartbeat_s = heartbeat_s
        self._timeout_s = timeout_s
        self._consumer: str | None = None
        # Set once everything stored when the first consumer was created has been handed out.
        self.caught_up = caught_up or anyio.Event()

    async def messages(self) -> AsyncGenerator[RawMessage, None]:
        backoff = 0.05
        while True:
            try:
                await self._create()
            except Exception as exc:
                _log.debug("cannot create a consumer on %s yet: %r", self._stream, exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            # Room for a whole pull and the status messages around it; a message that finds
            # no room is dropped, which the delivery sequence then shows as a gap.
            mailbox = _Mailbox(self._batch + 64)
            inbox = self._nc.new_inbox()
            sub = await self._nc.subscribe(inbox, cb=mailbox.deliver)
            pull = self._pull(mailbox, inbox)
            try:
                async for message in pull:
                    yield message
            finally:
                await pull.aclose()
                with anyio.CancelScope(shield=True):
                    await self._discard(sub)

    async def _create(self) -> None:
        name = "tg-" + new_id().replace("-", "")
        config: dict[str, Any] = {
            "name": name,
            "ack_policy": "none",
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(max(30.0, 10 * self._heartbeat_s) * 1e9),
        }
        if self.position > 0:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = self.position + 1
        else:
            config["deliver_policy"] = "all"
        if len(self._filters) == 1:
            config["filter_subject"] = self._filters[0]
        elif self._filters:
            config["filter_subjects"] = self._filters
        request = json.dumps({"stream_name": self._stream, "config": config}).encode()
        subject = f"{_API}.CONSUMER.CREATE.{self._stream}.{name}"
        response = await self._nc.request(subject, request, timeout=self._timeout_s)
        body = json.loads(response.data) if response.data else {}
        if "error" in body or "name" not in body:
            raise JetStreamUnavailableError(f"consumer not created: {body or response.headers}")
        self._consumer = name
        if body.get("num_pending") == 0:
            self.caught_up.set()

    async def _pull(self, mailbox: _Mailbox, inbox: str) -> AsyncGenerator[RawMessage, None]:
        assert self._consumer is not None
        next_subject = f"{_API}.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}"
        expected_dseq = 1
        expires_s = max(5.0, 10 * self._heartbeat_s)
        pull = json.dumps(
            {
                "batch": self._batch,
                "expires": int(expires_s * 1e9),
                "idle_heartbeat": int(self._heartbeat_s * 1e9),
            }
        ).encode()
        # Two heartbeats missed: the consumer or the connection is gone. A reconnect means the
        # same (the pull may have been lost with the old connection).
        silence_s = 2 * self._heartbeat_s + 0.5
        stats = self._nc.stats
        reconnects = stats["reconnects"]
        while True:
            try:
                await self._nc.publish(next_subject, pull, reply=inbox)
            except Exception:
                return
            remaining = self._batch
            while remaining:
                msg = None
                deadline = anyio.current_time() + silence_s
                while msg is None and stats["reconnects"] == reconnects:
                    if anyio.current_time() > deadline:
                        return
                    with anyio.move_on_after(_RECONNECT_CHECK_S):
                        msg = await mailbox.get()
                if msg is None:
                    return  # reconnected: start over
                code = status(msg)
                if code is not None:
                    if code == _HEARTBEAT:
                        continue
                    if code in ("404", "408"):
                        break  # this pull expired: ask again
                    # 409 (consumer deleted, leadership change, ...) and anything else.
                    return
                sseq, dseq, pending = _ack_sequences(msg.reply)
                if dseq != expected_dseq:
                    return  # a gap or a repeat: recreate from our position
                expected_dseq += 1
                remaining -= 1
                self.position = sseq
                headers = msg.headers or {}
                yield RawMessage(sseq, msg.subject, msg.data, headers.get("Nats-Msg-Id"))
                if pending == 0:
                    # Set once the consumer has taken the message (it asked for the next).
                    self.caught_up.set()
            # A pull that ended early found nothing more; the next one waits for new messages.

    async def _discard(self, sub: Subscription) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        name, self._consumer = self._consumer, None
        if name is None or self._nc.is_closed:
            return
        # Should this fail (or take long: the connection may be down), the server drops the
        # consumer after its inactive_threshold.
        with contextlib.suppress(Exception):
            await self._nc.request(
                f"{_API}.CONSUMER.DELETE.{self._stream}.{name}", b"", timeout=1.0
            )


class _Mailbox:
    """A follower's messages, bounded (what does not fit is dropped). Plain objects only: a
    follower abandoned without being closed leaves nothing that complains when collected."""

    __slots__ = ("_capacity", "_items", "_ready")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: collections.deque[Msg] = collections.deque()
        self._ready = anyio.Event()

    async def deliver(self, msg: Msg) -> None:
        if len(self._items) < self._capacity:
            self._items.append(msg)
            self._ready.set()

    async def get(self) -> Msg:
        while not self._items:
            self._ready = anyio.Event()
            await self._ready.wait()
        return self._items.popleft()


def _ack_sequences(reply: str) -> tuple[int, int, int]:
    """(stream seq, delivery seq, pending) from a JetStream message's reply subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    if len(tokens) >= 11:  # with a domain and an account hash
        return int(tokens[7]), int(tokens[8]), int(tokens[10])
    return -1, -1, -1
