"""The embedded event store: one SQLite file in WAL mode, written by one task with group commit.

See the design's "Events and the log" and the shared reference (sections 3.4 and 4) for the
figures behind these choices.

* One writer task owns the write connection; nothing else writes through it. Appenders hand it
  commands over a bounded queue (``_group_commit``, shared with the JetStream store). It takes
  one, drains whatever else is already queued (up to ``max_batch`` events, never splitting one
  call's events) and commits them in one transaction (group commit). The transaction itself
  runs on the write connection's own thread, in one call (``_sqlite_writer``); readers use
  aiosqlite.
* When a batch holds only submits (nobody waits on them), the writer lingers ``linger_s`` (2 ms)
  for more before committing, so that at low load one commit carries a whole request instead of
  one commit per phase. An append arriving meanwhile ends the linger: durability waits never
  pay for it. A submitted event is thus committed within about ``linger_s`` plus a commit.
* The writer numbers the events itself (``last + 1, last + 2, ...``) and inserts the numbers
  explicitly. It is meant to be the only writer of the file; if another process appends anyway,
  the insert fails on the primary key and the store fails loudly rather than reporting wrong
  sequence numbers.
* Idempotency by ``event_id``: the insert skips ids already stored
  (``ON CONFLICT (event_id) DO NOTHING``). When the row count shows that something was skipped,
  the writer rolls back and redoes the batch, this time looking the ids up first, so the log keeps
  no gaps and a retried event reports its original sequence number. Only that rare path pays for
  a lookup.
* Readers share one read-only connection. WAL lets it read beside the writer, and each query sees
  a committed prefix of the log.
* ``synchronous=NORMAL``: a commit survives a crash of the process. A power loss may roll back the
  newest commits, but what survives is always a prefix of the log, so it stays gap-free.

aiosqlite resolves asyncio futures, so this store runs on anyio's asyncio backend only.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite
import anyio

from ._codec import EVENT_TAGS, checked_tag, decode_event, encode_event
from ._group_commit import Command, CommandQueue, complete, joined_rows, running_writer
from ._sqlite_writer import BUSY_TIMEOUT_MS, Row, SQLiteWriter
from ._store import StoreClosedError, StoredEvent, StoreError
from ._types import Event

__all__ = ["SQLiteEventStore", "log_position", "open_sqlite_store", "read_log"]

_log = logging.getLogger(__name__)

_READ: Final = "SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
_READ_REQUEST: Final = "SELECT seq, data FROM events WHERE request_id = ? ORDER BY seq"
_TAIL_PAGE: Final = 1000
_REPLAY_PAGE: Final = 10_000


def _row(event: Event) -> Row:
    """Encode ``event`` for the writer; bad events fail here, in the caller, not in a batch."""
    tag = checked_tag(event)
    return (event.event_id, tag, event.request_id, event.tenant, event.ts_ns, encode_event(event))


class SQLiteEventStore:
    """An :class:`~events.EventStore` on one SQLite file. Open it with :func:`open_sqlite_store`.

    Besides the protocol it offers :meth:`read_request`. After the store is closed every method
    except :meth:`aclose` raises :class:`StoreClosedError`, and :meth:`tail` ends.
    """

    def __init__(
        self,
        writer: SQLiteWriter,
        reader: aiosqlite.Connection,
        last_seq: int,
        *,
        queue_size: int,
        max_batch: int,
        linger_s: float,
    ) -> None:
        self._writer = writer
        self._reader_db = reader
        # The newest committed seq. Only the writer task changes it, after each COMMIT.
        self._last_seq = last_seq
        self._max_batch = max_batch
        self._linger_s = linger_s
        # Set when an append (someone waiting for durability) arrives while the writer lingers.
        self._append_waiting = anyio.Event()
        self._lingering = False
        self._queue = CommandQueue[Command[Row]](queue_size)
        # Set, then replaced by a fresh one, after every commit (and at close): tailers wait on it.
        self._committed = anyio.Event()
        self._closed_event = anyio.Event()
        self._closed = False

    # -- appending ---------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` atomically, in order; return their seqs once committed.

        An event whose ``event_id`` is already in the log is not stored again: its seq is the
        original one, so retrying an append whose outcome is unknown is harmless.
        """
        if not events:
            self._queue.check_open()
            return []
        command = Command([_row(event) for event in events], wait=True)
        await self._queue.put(command)
        if self._lingering:
            self._append_waiting.set()
        return await command.outcome()

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue ``events`` for the next group commit; wait only while the queue is full."""
        if not events:
            self._queue.check_open()
            return
        await self._queue.put(Command([_row(event) for event in events], wait=False))

    # -- reading -----------------------------------------------------------------------------

    async def read(self, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Committed events with ``seq > after_seq``, oldest first, at most ``limit``."""
        if limit < 0:
            raise ValueError(f"limit must not be negative: {limit}")
        return await self._query(_READ, (after_seq, limit))

    async def read_request(self, request_id: str) -> list[StoredEvent]:
        """The committed events of one request, oldest first."""
        return await self._query(_READ_REQUEST, (request_id,))

    async def tail(self, after_seq: int = 0) -> AsyncGenerator[StoredEvent, None]:
        """Every committed event after ``after_seq``, then each new one as it commits.

        Each event is yielded exactly once, in seq order, even when commits race the catch-up.
        The iteration ends when the store closes; it may end before yielding the events of the
        final flush, so a consumer resumes with ``tail(last seq it saw)``.
        """
        position = after_seq
        while not self._closed:
            # Take the signal before reading: a commit the read does not see sets this very
            # object, so the wait below cannot miss it.
            committed = self._committed
            try:
                page = await self.read(position, _TAIL_PAGE)
            except StoreClosedError:
                return
            for stored in page:
                position = stored.seq
                yield stored
            if len(page) < _TAIL_PAGE:
                await committed.wait()

    async def last_seq(self) -> int:
        """The seq of the newest committed event (0 for an empty log)."""
        if self._closed:
            raise StoreClosedError("the event store is closed")
        return self._last_seq

    def check_writable(self) -> None:
        """Raise :class:`StoreClosedError` if the store takes no more events."""
        self._queue.check_open()

    async def _query(self, sql: str, parameters: tuple[Any, ...]) -> list[StoredEvent]:
        # aiosqlite runs calls in submission order, so a query that passes this check runs
        # before the reader connection closes.
        if self._closed:
            raise StoreClosedError("the event store is closed")
        rows = await self._reader_db.execute_fetchall(sql, parameters)
        return [StoredEvent(seq, decode_event(data)) for seq, data in rows]

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Commit everything queued (including calls waiting for room), then close. Idempotent.

        Shielded from cancellation so that a cancelled owner still gets its events committed.
        """
        if self._queue.closing:
            await self._closed_event.wait()
            return
        with anyio.CancelScope(shield=True):
            try:
                # The writer drains the queue, sees its end and stops.
                await self._queue.close()
            finally:
                self._closed = True
                self._signal_commit()
                try:
                    await self._writer.close()
                finally:
                    await self._reader_db.close()
                    self._closed_event.set()

    # -- the writer task ---------------------------------------------------------------------

    async def _run_writer(self) -> None:
        # Shielded: the writer stops only when aclose() closes the queue after draining it, so
        # cancelling the owner cannot abandon acknowledged submits.
        with anyio.CancelScope(shield=True):
            try:
                while (command := await self._queue.get()) is not None:
                    batch = self._queue.drain([command], self._max_batch)
                    if self._linger_s and all(c.done is None for c in batch):
                        # Nobody waits on these: let more gather for one commit (a request's
                        # phases, or several requests), unless an append arrives meanwhile.
                        # No await between the drain and raising the flag, so an append is
                        # either in this batch or sees the flag and ends the wait.
                        self._append_waiting = anyio.Event()
                        self._lingering = True
                        with anyio.move_on_after(self._linger_s):
                            await self._append_waiting.wait()
                        self._lingering = False
                        batch = self._queue.drain(batch, self._max_batch)
                    if not await self._commit(batch):
                        break
            finally:
                self._queue.stop()

    async def _commit(self, batch: list[Command[Row]]) -> bool:
        """Commit ``batch`` in one transaction and tell its waiters. False if the store failed."""
        try:
            # One transaction, committed; the seq of each row.
            seqs, self._last_seq = await self._writer.insert(joined_rows(batch), self._last_seq + 1)
        except Exception as exc:
            # The transaction was rolled back on the writer thread.
            self._fail(batch, exc)
            return False
        complete(batch, seqs)
        self._signal_commit()
        return True

    def _fail(self, batch: list[Command[Row]], exc: Exception) -> None:
        """Stop taking events after a failed commit; tell every waiter, committed data stays."""
        lost = self._queue.fail(batch, exc, "the event store could not commit")
        _log.error(
            "event store commit failed; it takes no more events (%d submitted events lost)",
            lost,
            exc_info=exc,
        )

    def _signal_commit(self) -> None:
        self._committed.set()
        self._committed = anyio.Event()


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    queue_size: int = 1024,
    max_batch: int = 1024,
    linger_s: float = 0.002,
) -> AsyncIterator[SQLiteEventStore]:
    """Open (creating if needed) the event log at ``path`` and run its writer task.

    ``queue_size`` bounds the number of queued append/submit calls (beyond it callers wait);
    ``max_batch`` bounds the events per group commit (one call's events are never split).
    ``linger_s``: when a batch holds only submits, the writer waits this long for more before
    committing, so that one commit carries more events (an append cuts the wait short). On
    exit everything queued is committed, the writer stops and the connections close.
    """
    if queue_size < 1 or max_batch < 1:
        raise ValueError("queue_size and max_batch must be at least 1")
    if not 0 <= linger_s <= 1:
        raise ValueError("linger_s must be between 0 and 1 second")
    file = Path(path)
    writer, last_seq = await SQLiteWriter.open(file)
    try:
        # Read-only: readers can never take the write lock by accident.
        uri = (await anyio.Path(file).resolve()).as_uri()
        reader = await _connect(f"{uri}?mode=ro", uri=True)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.close()
        raise
    store = SQLiteEventStore(
        writer, reader, last_seq, queue_size=queue_size, max_batch=max_batch, linger_s=linger_s
    )
    async with running_writer(store._run_writer, store.aclose):
        yield store


async def _connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    try:
        db = await aiosqlite.connect(database, **kwargs)
    except sqlite3.Error as exc:
        raise StoreError(f"{database}: cannot open the event store: {exc}") from exc
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await db.close()
        raise
    return db


def read_log(
    path: str | os.PathLike[str],
    *,
    after_seq: int = 0,
    types: Iterable[type[Event]] | None = None,
    request_id: str | None = None,
) -> Iterator[StoredEvent]:
    """The events in the log file after ``after_seq``, oldest first, read-only: safe beside a
    running writer (WAL lets a reader see a committed prefix) and for tools that must not write.

    With ``types``, only events of those types: the others are skipped in SQLite, never decoded
    (a replay that folds a few types reads the log several times faster). With ``request_id``,
    only that request's events (by index).
    """
    where = ["seq > ?"]
    parameters: list[object] = []
    if types is not None:
        tags = sorted({EVENT_TAGS[t] for t in types})
        where.append(f"type IN ({', '.join('?' * len(tags))})")
        parameters += tags
    if request_id is not None:
        where.append("request_id = ?")
        parameters.append(request_id)
    sql = f"SELECT seq, data FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the event log: {exc}") from exc
    try:
        after = after_seq
        while rows := db.execute(sql, (after, *parameters, _REPLAY_PAGE)).fetchall():
            for seq, data in rows:
                yield StoredEvent(seq, decode_event(data))
            after = rows[-1][0]
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the event log: {exc}") from exc
    finally:
        db.close()


def log_position(path: str | os.PathLike[str]) -> int:
    """The newest sequence number in the log file (0 when empty), read-only."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the event log: {exc}") from exc
    return int(last)
