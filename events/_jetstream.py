"""The scale-out event store: one JetStream stream per deployment, shared by every sidecar.

See the design's "Events and the log" and the shared reference (section 2) for the server
behaviour relied on here; ``_jetstream_subjects`` has the subject layout.

* Sequence numbers are the stream's own. The stream denies deletes and purges and keeps every
  message (no limits), so they start at 1 and have no gaps, in every sidecar's view.
* One writer task per store publishes. It takes a command, drains whatever else is queued (up
  to ``max_batch`` events, never splitting one call) and appends them as one ADR-50 atomic batch
  (all or nothing; a single event is a plain publish). Only the commit message asks for a reply,
  the acknowledgement that the batch is stored (replicated to a quorum on a cluster). One batch
  is in flight at a time, so calls commit in the order they were queued.
* Idempotency: every message carries ``Nats-Msg-Id`` = the event id, and the stream's
  ``duplicate_window`` (5 minutes by default) must cover the longest retry. A plain publish of
  a stored id is acknowledged with its original seq. A batch holding a stored id is refused as a
  whole (err_code 10201): the writer then looks the ids up (a filtered read of the requests'
  subjects over the window) and publishes only the fresh ones. Repeats within a call are
  resolved before publishing.
* No answer (a timeout, a lost connection, no responders while the server restarts): the
  outcome is unknown, so the writer publishes the same messages again, with the same ids, until
  they are acknowledged. nats-py buffers what is published while it reconnects. If this lasts
  longer than ``outage_timeout_s`` the store fails like the SQLite store on a failed commit:
  waiters get StoreError, later calls StoreClosedError, and the events that were only
  submitted are reported lost in the log. Nothing acknowledged is ever affected.
* Budget holds (``append_holds``) are conditional: the batch is stored only if the newest
  message on the hold subject is the one the caller's budget book has seen
  (``Nats-Expected-Last-Subject-Sequence``). They go through the same queue, so they keep
  their order with the calls around them, but are published alone (a refusal must not take
  other calls' events with it). A refused hold raises HoldConflictError; after an unknown
  outcome the writer first checks whether its own hold is the one that landed (reference 2.3:
  on a single server a retried conditional publish is refused, not deduplicated).
* Reads use batched direct gets (``allow_direct``) with ``min_last_seq`` set to the newest seq
  this store has seen, so a replica that is behind defers to the leader (read-after-write).
  ``tail`` is a pull consumer that recreates itself after any gap or silence (``Follower``).

The store never closes the NATS connection it is given.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import anyio
from nats.aio.client import Client
from nats.js import api as js_api
from nats.js.errors import APIError

from ._codec import checked_tag, decode_event, encode_event
from ._group_commit import Command, CommandQueue, complete, joined_rows, running_writer
from ._ids import new_id
from ._jetstream_io import (
    Follower,
    Inbox,
    JetStreamUnavailableError,
    PublishError,
    RawMessage,
    direct_batch,
    direct_last,
    pub_ack,
    publish,
)
from ._jetstream_subjects import HOLD_TYPES, Subjects, msg_id, token
from ._store import StoreClosedError, StoredEvent, StoreError
from ._types import Event

__all__ = ["HoldConflictError", "JetStreamEventStore", "open_jetstream_store"]

_log = logging.getLogger(__name__)

# ADR-50: at most 1000 messages in one atomic batch.
MAX_ATOMIC_BATCH: Final = 1000
_PAGE: Final = 1000
_WRONG_LAST_SEQUENCE: Final = (10071, 10164)
_DUPLICATE_IN_BATCH: Final = 10201
_STREAM_NAME_IN_USE: Final = 10058
# Room for the headers of a message (ids, batch headers) within the server's max payload.
_HEADER_ROOM: Final = 512


class HoldConflictError(StoreError):
    """A conditional hold was refused: the hold subject moved past ``expected``.

    Nothing of the hold was stored. ``newest`` is the hold subject's newest seq as the server
    reported it (0 if it did not say).
    """

    def __init__(self, expected: int, newest: int) -> None:
        super().__init__(f"the budget moved on: expected hold seq {expected}, found {newest}")
        self.expected = expected
        self.newest = newest


class _Row:
    __slots__ = ("hold", "msg_id", "payload", "subject")

    def __init__(self, subject: str, payload: bytes, message_id: str, hold: bool) -> None:
        self.subject = subject
        self.payload = payload
        self.msg_id = message_id
        self.hold = hold


class _Command(Command[_Row]):
    """One append, submit or conditional hold, and, for the first and last, its outcome."""

    __slots__ = ("after_hold",)

    def __init__(self, rows: list[_Row], *, wait: bool, after_hold: int | None = None) -> None:
        super().__init__(rows, wait=wait)
        # A conditional hold: the seq the hold subject's newest message must have.
        self.after_hold = after_hold


class JetStreamEventStore:
    """An :class:`~events.EventStore` on a JetStream stream. Open it with
    :func:`open_jetstream_store`.

    Beyond the protocol it offers what a shared budget needs: :meth:`append_holds` (conditional
    on the hold subject), :meth:`read_holds`, :meth:`last_hold_seq` and :meth:`follow` (the
    budget events of every sidecar, as they commit).
    """

    def __init__(
        self,
        nc: Client,
        inbox: Inbox,
        stream: str,
        subjects: Subjects,
        *,
        queue_size: int,
        max_batch: int,
        ack_timeout_s: float,
        outage_timeout_s: float,
        duplicate_window_s: float,
    ) -> None:
        self._nc = nc
        self._inbox = inbox
        self._stream = stream
        self._subjects = subjects
        # Events in one atomic batch (and so in one call): never more than the server takes.
        self._max_batch = min(max_batch, MAX_ATOMIC_BATCH)
        self._ack_timeout_s = ack_timeout_s
        self._outage_timeout_s = outage_timeout_s
        self._duplicate_window_s = duplicate_window_s
        self._max_payload = max(1024, int(nc.max_payload) - _HEADER_ROOM)
        # The newest seq this store has seen acknowledged or read: reads ask for at least it.
        self._seen_seq = 0
        self._queue = CommandQueue[_Command](queue_size)
        self._closed_event = anyio.Event()
        self._closed = False
        # Tails blocked waiting for messages, and where they are: close ends each once it has
        # delivered what this store had acknowledged.
        self._tails: dict[anyio.CancelScope, Follower] = {}
        self._final_seq = 0
        self._tail_grace_s = 5.0
        # Set when the store closes: how long tails still behind may take to catch up.
        self._tail_deadline = 0.0

    @property
    def subjects(self) -> Subjects:
        return self._subjects

    @property
    def stream(self) -> str:
        return self._stream

    # -- appending ---------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` atomically, in order; return their seqs once stored.

        An event whose ``event_id`` was stored within the duplicate window is not stored again:
        its seq is the original one, so retrying an append whose outcome is unknown is harmless.
        """
        if not events:
            self._queue.check_open()
            return []
        command = _Command(self._rows(events), wait=True)
        await self._queue.put(command)
        return await command.outcome()

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue ``events`` for the next batch; wait only while the queue is full."""
        if not events:
            self._queue.check_open()
            return
        await self._queue.put(_Command(self._rows(events), wait=False))

    async def append_holds(self, events: Sequence[Event], *, after: int) -> list[int]:
        """Append budget holds atomically, only if the hold subject's newest seq is ``after``.

        Every event must be a hold (``BudgetReserved``, ``BudgetToppedUp``,
        ``BudgetLimitChanged``). Raises HoldConflictError, storing nothing, when another
        hold came first. Events queued before this call are stored before it.
        """
        rows = self._rows(events)
        if not rows or not all(row.hold for row in rows):
            raise ValueError("append_holds takes one or more budget holds and nothing else")
        command = _Command(rows, wait=True, after_hold=after)
        await self._queue.put(command)
        return await command.outcome()

    def _rows(self, events: Sequence[Event]) -> list[_Row]:
        """Encode ``events``; bad events fail here, in the caller, not in a batch."""
        most = self._max_batch
        if len(events) > most:
            raise ValueError(f"{len(events)} events in one call: at most {most} are atomic")
        rows: list[_Row] = []
        for event in events:
            checked_tag(event)  # TypeError for a type outside the union, ValueError for a bad ts_ns
            subject = self._subjects.of(event)
            payload = encode_event(event)
            if len(payload) > self._max_payload:
                raise ValueError(
                    f"an event of {len(payload)} bytes is larger than the server takes"
                    f" ({self._max_payload} bytes with room for headers)"
                )
            rows.append(_Row(subject, payload, msg_id(event.event_id), type(event) in HOLD_TYPES))
        return rows

    # -- reading -----------------------------------------------------------------------------

    async def read(self, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Stored events with ``seq > after_seq``, oldest first, at most ``limit``."""
        if limit < 0:
            raise ValueError(f"limit must not be negative: {limit}")
        self._check_readable()
        result: list[StoredEvent] = []
        position = after_seq
        while len(result) < limit:
            want = min(_PAGE, limit - len(result))
            page = await self._direct(seq=position + 1, limit=want)
            result.extend(self._decode(page))
            if len(page) < want:
                break
            position = page[-1].seq
        return result

    async def read_request(self, request_id: str) -> list[StoredEvent]:
        """The stored events of one request, oldest first.

        Its events outside the hold subject are found by a filtered read on its subject token.
        Its holds share one subject with every other request's, so they are looked for between
        its first and last other events (a request's reservation follows its
        ``RequestReceived`` and precedes its terminal event).
        """
        self._check_readable()
        own = [
            s
            for s in self._decode(await self._scan(self._subjects.of_request(request_id)))
            if s.event.request_id == request_id
        ]
        if not own:
            return []
        holds = [
            s
            for s in self._decode(
                await self._scan(self._subjects.hold, first=own[0].seq, last=own[-1].seq)
            )
            if s.event.request_id == request_id
        ]
        return sorted(own + holds, key=lambda s: s.seq)

    async def read_holds(self, after_seq: int, limit: int = _PAGE) -> list[StoredEvent]:
        """Holds (of every sidecar) with ``seq > after_seq``, oldest first, at most ``limit``."""
        self._check_readable()
        page = await self._direct(seq=after_seq + 1, limit=limit, next_by_subj=self._subjects.hold)
        return self._decode(page)

    async def last_hold_seq(self) -> int:
        """The seq of the newest hold in the stream (0 if there is none)."""
        self._check_readable()
        try:
            message = await direct_last(
                self._nc,
                self._inbox,
                self._stream,
                self._subjects.hold,
                timeout_s=self._ack_timeout_s,
                min_last_seq=self._seen_seq,
            )
        except JetStreamUnavailableError as exc:
            raise StoreError(f"cannot read the event stream: {exc}") from exc
        return 0 if message is None else message.seq

    def check_writable(self) -> None:
        """Raise :class:`StoreClosedError` if the store takes no more events (closed, or failed
        after an outage longer than ``outage_timeout_s``)."""
        self._queue.check_open()

    async def last_seq(self) -> int:
        """The seq of the newest stored event (0 for an empty log)."""
        self._check_readable()
        try:
            info = await self._nc.jetstream().stream_info(self._stream)
        except Exception as exc:
            raise StoreError(f"cannot read the stream's state: {exc!r}") from exc
        last = int(info.state.last_seq)
        self._seen_seq = max(self._seen_seq, last)
        return last

    async def tail(self, after_seq: int = 0) -> AsyncGenerator[StoredEvent, None]:
        """Every stored event after ``after_seq``, then each new one (any sidecar's) as it
        commits, in seq order, each once.

        When the store closes, the iteration first delivers what this store had acknowledged
        (for up to a few seconds), then ends.
        """
        follow = self.follow([], after_seq)
        try:
            async for stored in follow:
                yield stored
        finally:
            # Closed here and now, not whenever it is collected: it holds a consumer.
            await follow.aclose()

    async def follow(
        self, filters: Sequence[str], after_seq: int = 0, *, caught_up: anyio.Event | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
        """Like :meth:`tail`, for the events on ``filters`` (every subject if empty).

        ``caught_up`` is set once everything stored when the follower started was delivered.
        """
        if self._closed:
            return
        follower = Follower(self._nc, self._stream, filters, after_seq, caught_up=caught_up)
        messages = follower.messages()
        try:
            while not self._delivered_before_close(follower):
                with anyio.CancelScope() as scope:
                    self._tails[scope] = follower
                    try:
                        if self._tail_deadline:
                            # Closed meanwhile: what is left to deliver gets a grace period.
                            scope.deadline = min(scope.deadline, self._tail_deadline)
                        message = await anext(messages)
                    finally:
                        del self._tails[scope]
                if scope.cancelled_caught:
                    return
                self._seen_seq = max(self._seen_seq, message.seq)
                yield StoredEvent(message.seq, decode_event(message.data))
        finally:
            await messages.aclose()

    def _delivered_before_close(self, follower: Follower) -> bool:
        """Closed, and ``follower`` handed out everything this store had acknowledged."""
        return self._closed and follower.position >= self._final_seq

    def _check_readable(self) -> None:
        if self._closed:
            raise StoreClosedError("the event store is closed")

    def _decode(self, page: Iterable[RawMessage]) -> list[StoredEvent]:
        return [StoredEvent(m.seq, decode_event(m.data)) for m in page]

    async def _direct(
        self,
        *,
        seq: int,
        limit: int,
        next_by_subj: str | None = None,
        start_time: str | None = None,
    ) -> list[RawMessage]:
        if limit <= 0:
            return []
        # A read that meets a short outage (a server restarting, a leader election) waits for
        # it, like a write, but for less: a reader is usually someone waiting for an answer.
        deadline = time.monotonic() + 3 * self._ack_timeout_s
        delay = 0.02
        while True:
            try:
                page = await direct_batch(
                    self._nc,
                    self._inbox,
                    self._stream,
                    seq=seq,
                    limit=limit,
                    timeout_s=self._ack_timeout_s,
                    next_by_subj=next_by_subj,
                    min_last_seq=self._seen_seq,
                    start_time=start_time,
                )
                break
            except JetStreamUnavailableError as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(f"cannot read the event stream: {exc}") from exc
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if page:
            self._seen_seq = max(self._seen_seq, page[-1].seq)
        return page

    async def _scan(
        self,
        subject: str,
        *,
        first: int = 1,
        last: int | None = None,
        start_time: str | None = None,
    ) -> list[RawMessage]:
        """Every message on ``subject`` (a filter) from ``first`` (or ``start_time``) on, up
        to ``last``."""
        result: list[RawMessage] = []
        seq = first
        while True:
            page = await self._direct(
                seq=seq, limit=_PAGE, next_by_subj=subject, start_time=start_time
            )
            if last is not None and page and page[-1].seq > last:
                # A batched direct get has no upper bound of its own.
                result.extend(m for m in page if m.seq <= last)
                return result
            result.extend(page)
            if len(page) < _PAGE:
                return result
            seq, start_time = page[-1].seq + 1, None

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Store everything queued (including calls waiting for room), then close. Idempotent.

        Shielded from cancellation so that a cancelled owner still gets its events stored.
        """
        if self._queue.closing:
            await self._closed_event.wait()
            return
        with anyio.CancelScope(shield=True):
            try:
                # The writer drains the queue, sees its end and stops.
                await self._queue.close()
            finally:
                self._final_seq = self._seen_seq
                self._tail_deadline = anyio.current_time() + self._tail_grace_s
                self._closed = True
                for scope, follower in list(self._tails.items()):
                    if follower.position >= self._final_seq:
                        scope.cancel()
                    else:
                        scope.deadline = min(scope.deadline, self._tail_deadline)
                await self._inbox.close()
                self._closed_event.set()

    # -- the writer task ---------------------------------------------------------------------

    async def _run_writer(self) -> None:
        # Shielded: the writer stops only when aclose() closes the queue after draining it.
        with anyio.CancelScope(shield=True):
            try:
                while (command := await self._queue.get()) is not None:
                    if command.after_hold is not None:
                        ok = await self._commit_hold(command)
                    else:
                        ok = await self._commit(self._drain([command]))
                    if not ok:
                        break
            finally:
                self._queue.stop()

    def _drain(self, batch: list[_Command]) -> list[_Command]:
        """``batch`` plus whatever is queued, up to ``max_batch`` events (one atomic batch)
        and up to the next conditional hold (the queue holds it back for its own turn)."""
        limit = self._max_batch

        def joins(command: _Command, size: int) -> bool:
            return command.after_hold is None and size + len(command.rows) <= limit

        return self._queue.drain(batch, limit, joins)

    async def _commit(self, batch: list[_Command]) -> bool:
        try:
            seqs = await self._store(joined_rows(batch))
        except StoreError as exc:
            self._fail(batch, exc)
            return False
        complete(batch, seqs)
        return True

    async def _commit_hold(self, command: _Command) -> bool:
        try:
            seqs = await self._store(command.rows, after_hold=command.after_hold)
        except HoldConflictError as exc:
            command.fail(exc)
            return True
        except StoreError as exc:
            self._fail([command], exc)
            return False
        command.complete(seqs)
        return True

    async def _store(self, rows: list[_Row], *, after_hold: int | None = None) -> list[int]:
        """Store ``rows`` once each (by message id); return the seq of every row.

        Retries while the server does not answer, for up to ``outage_timeout_s``; raises
        StoreError after that or when the server refuses the batch for good.
        """
        unique: dict[str, _Row] = {}
        for row in rows:
            unique.setdefault(row.msg_id, row)
        known: dict[str, int] = {}
        outage_since: float | None = None
        unknown_outcome = False
        delay = 0.02
        while fresh := [row for msg_id, row in unique.items() if msg_id not in known]:
            try:
                known.update(await self._publish(fresh, after_hold))
            except _Duplicate:
                found = await self._find(fresh)
                if not found:
                    raise StoreError(
                        "the server reports a duplicate event id that is not in the stream"
                    ) from None
                known.update(found)
            except (PublishError, JetStreamUnavailableError) as exc:
                if (
                    isinstance(exc, PublishError)
                    and after_hold is not None
                    and exc.err_code in _WRONG_LAST_SEQUENCE
                ):
                    if unknown_outcome:
                        landed = await self._own_holds(fresh, after_hold)
                        if landed is not None:
                            known.update(landed)
                            continue
                    raise HoldConflictError(after_hold, _newest(exc.description)) from None
                # Any other refusal, or no answer: retried until the outage timeout.
                outage_since, unknown_outcome = self._retrying(outage_since, exc), True
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
        seqs = [known[row.msg_id] for row in rows]
        self._seen_seq = max(self._seen_seq, *seqs)
        return seqs

    def _retrying(self, since: float | None, exc: Exception) -> float:
        now = time.monotonic()
        if since is None:
            _log.warning("event stream %s did not take a batch, retrying: %s", self._stream, exc)
            return now
        if now - since > self._outage_timeout_s:
            raise StoreError(
                f"the event stream {self._stream} has not taken a batch for"
                f" {self._outage_timeout_s:.0f} s: {exc}"
            ) from exc
        return since

    async def _publish(self, rows: list[_Row], after_hold: int | None) -> dict[str, int]:
        """Publish ``rows`` (a plain publish for one, an atomic batch for more); their seqs."""
        reply, replies = self._inbox.expect(1)
        with replies:
            if len(rows) == 1:
                row = rows[0]
                headers = {"Nats-Msg-Id": row.msg_id}
                if after_hold is not None:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(after_hold)
                await publish(self._nc, row.subject, row.payload, reply, headers)
                ack = pub_ack(await replies.next(self._ack_timeout_s))
                return {row.msg_id: int(ack["seq"])}
            batch_id = new_id()
            last = len(rows)
            for number, row in enumerate(rows, start=1):
                headers = {
                    "Nats-Msg-Id": row.msg_id,
                    "Nats-Batch-Id": batch_id,
                    "Nats-Batch-Sequence": str(number),
                }
                if number == 1 and after_hold is not None:
                    # Only the first hold may carry the condition: the later ones write to the
                    # same subject (ADR-50), and the batch is atomic anyway.
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(after_hold)
                if number == last:
                    headers["Nats-Batch-Commit"] = "1"
                await publish(
                    self._nc, row.subject, row.payload, reply if number == last else "", headers
                )
            try:
                ack = pub_ack(await replies.next(self._ack_timeout_s))
            except PublishError as exc:
                if exc.err_code == _DUPLICATE_IN_BATCH:
                    raise _Duplicate from None
                raise
        end, count = int(ack["seq"]), int(ack.get("count", 0))
        if count != len(rows):
            raise StoreError(f"the server stored {count} of a batch of {len(rows)}")
        return {row.msg_id: end - last + i for i, row in enumerate(rows, start=1)}

    async def _find(self, rows: list[_Row]) -> dict[str, int]:
        """The seqs of those ``rows`` already stored, looked up by message id within the
        duplicate window (only there can the server have refused them as duplicates)."""
        wanted = {row.msg_id for row in rows}
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=self._duplicate_window_s + 60
        )
        start_time = since.isoformat().replace("+00:00", "Z")
        found: dict[str, int] = {}

        async def scan(subject: str) -> None:
            for message in await self._scan(subject, start_time=start_time):
                if message.msg_id in wanted:
                    found.setdefault(message.msg_id, message.seq)

        # Where a retry's copy would be: its own request's subjects (or the hold subject).
        for subject in dict.fromkeys(_lookup_filter(row.subject) for row in rows):
            await scan(subject)
        if not found:
            # An id reused for another request's event: like the SQLite store, the id is the
            # event's identity, so the stored one stands. Rare, and bounded by the window.
            await scan(self._subjects.stream_subjects)
        return found

    async def _own_holds(self, rows: list[_Row], after_hold: int) -> dict[str, int] | None:
        """After an unknown outcome: the seqs of ``rows`` if they are the holds that follow
        ``after_hold`` (our earlier try landed), else None (another sidecar's hold did)."""
        page = await self._direct(
            seq=after_hold + 1, limit=len(rows), next_by_subj=self._subjects.hold
        )
        if [m.msg_id for m in page] != [row.msg_id for row in rows]:
            return None
        return {m.msg_id or "": m.seq for m in page}

    def _fail(self, batch: list[_Command], exc: StoreError) -> None:
        """Stop taking events; tell every waiter. What was stored before stays."""
        lost = self._queue.fail(batch, exc, "the event store could not store a batch")
        _log.error(
            "event stream %s failed; the store takes no more events (%d submitted events lost)",
            self._stream,
            lost,
            exc_info=exc,
        )


class _Duplicate(Exception):
    """A batch was refused because one of its message ids is already stored."""


def _newest(description: str) -> int:
    """The seq in "wrong last sequence: 42" (0 if there is none)."""
    tail = description.rpartition(":")[2].strip()
    return int(tail) if tail.isdigit() else 0


def _lookup_filter(subject: str) -> str:
    """Where to look for a stored copy of a message on ``subject``: the hold subject itself, or
    every subject of the same tenant and request."""
    tokens = subject.split(".")
    if tokens[-1] == "hold":
        return subject
    # <prefix>.<area>.<tenant>.<request>.<type>: any area, any type.
    tokens[-4] = "*"
    tokens[-1] = "*"
    return ".".join(tokens)


async def _ensure_stream(
    nc: Client, stream: str, subjects: Subjects, *, replicas: int, duplicate_window_s: float
) -> None:
    config = js_api.StreamConfig(
        name=stream,
        subjects=[subjects.stream_subjects],
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        num_replicas=replicas,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        max_msgs_per_subject=-1,
        discard=js_api.DiscardPolicy.OLD,
        duplicate_window=duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )
    jsm = nc.jetstream()
    try:
        try:
            await jsm.add_stream(config)
        except APIError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            # The stream exists with another configuration: bring it to ours.
            await jsm.update_stream(config)
    except Exception as exc:
        raise StoreError(f"cannot create or update the stream {stream}: {exc!r}") from exc


@asynccontextmanager
async def open_jetstream_store(
    nc: Client,
    *,
    stream: str = "TOLLGATE",
    subject_prefix: str = "tollgate.ev",
    replicas: int = 1,
    queue_size: int = 1024,
    max_batch: int = MAX_ATOMIC_BATCH,
    duplicate_window_s: float = 300.0,
    ack_timeout_s: float = 5.0,
    outage_timeout_s: float = 60.0,
) -> AsyncIterator[JetStreamEventStore]:
    """Create or update the stream ``stream`` on ``nc`` (a connected client, which the store
    does not close) and run a store on it.

    ``queue_size`` bounds the queued calls (beyond it callers wait); ``max_batch`` bounds the
    events per atomic batch (at most 1000, one call's events are never split). The stream keeps
    every message in files, with ``replicas`` copies; ``duplicate_window_s`` is how long an
    event id is remembered for idempotent retries. ``ack_timeout_s`` is how long to wait for
    an acknowledgement before publishing again; ``outage_timeout_s`` how long the store retries
    before it fails. On exit everything queued is stored and the writer stops.
    """
    if queue_size < 1 or max_batch < 1:
        raise ValueError("queue_size and max_batch must be at least 1")
    if replicas not in (1, 3, 5):
        raise ValueError("replicas must be 1, 3 or 5")
    if not token(stream) == stream or "~" in stream:
        raise ValueError(f"stream name {stream!r} must be letters, digits, '_' or '-'")
    if duplicate_window_s <= 0 or ack_timeout_s <= 0 or outage_timeout_s <= 0:
        raise ValueError("duplicate_window_s, ack_timeout_s and outage_timeout_s must be positive")
    subjects = Subjects(subject_prefix)
    await _ensure_stream(
        nc, stream, subjects, replicas=replicas, duplicate_window_s=duplicate_window_s
    )
    inbox = Inbox(nc)
    await inbox.open()
    store = JetStreamEventStore(
        nc,
        inbox,
        stream,
        subjects,
        queue_size=queue_size,
        max_batch=max_batch,
        ack_timeout_s=ack_timeout_s,
        outage_timeout_s=outage_timeout_s,
        duplicate_window_s=duplicate_window_s,
    )
    async with running_writer(store._run_writer, store.aclose):
        yield store
