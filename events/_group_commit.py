"""What both event stores share between their callers and their one writer task.

Callers hand the writer commands (:class:`Command`, one per append or submit call) through a
:class:`CommandQueue`: bounded, so that a writer falling behind makes callers wait
(back-pressure) rather than dropping events. The writer takes one command, drains whatever else
is already queued into one batch (group commit), stores the batch its own way, and hands each
command its share of the sequence numbers. When storing fails for good, the queue fails every
command it still holds and takes no more.

How a batch is stored (a SQLite transaction, a JetStream atomic batch) stays in each store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio

from ._store import StoreClosedError, StoreError

__all__ = ["Command", "CommandQueue", "complete", "joined_rows", "running_writer"]

R = TypeVar("R")
C = TypeVar("C", bound="Command[Any]")


class Command(Generic[R]):
    """One append or submit: its encoded events and, when someone waits, where its outcome goes.

    A submit (``wait=False``) has no ``done`` event: nobody is told its outcome.
    """

    __slots__ = ("done", "error", "rows", "seqs")

    def __init__(self, rows: list[R], *, wait: bool) -> None:
        self.rows = rows
        self.done: anyio.Event | None = anyio.Event() if wait else None
        self.seqs: list[int] = []
        self.error: StoreError | None = None

    def complete(self, seqs: list[int]) -> None:
        self.seqs = seqs
        if self.done is not None:
            self.done.set()

    def fail(self, error: StoreError) -> None:
        self.error = error
        if self.done is not None:
            self.done.set()

    async def outcome(self) -> list[int]:
        """The seqs of this (waited-for) command once stored; raises its StoreError."""
        assert self.done is not None, "a submit has no outcome to wait for"
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.seqs


def joined_rows(batch: Sequence[Command[R]]) -> list[R]:
    """The rows of every command in ``batch``, in order."""
    return batch[0].rows if len(batch) == 1 else [row for c in batch for row in c.rows]


def complete(batch: Sequence[Command[Any]], seqs: list[int]) -> None:
    """Hand each command of ``batch`` its share of ``seqs`` (one seq per row, in order)."""
    start = 0
    for command in batch:
        end = start + len(command.rows)
        command.complete(seqs[start:end])
        start = end


class CommandQueue(Generic[C]):
    """The bounded queue from a store's callers to its writer task.

    Calls keep their order (FIFO). Once :meth:`close` or :meth:`fail` was called, :meth:`put`
    and :meth:`check_open` raise :class:`StoreClosedError`.
    """

    def __init__(self, size: int) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[C](size)
        # A command the writer took but left for the next batch (see drain).
        self._held: C | None = None
        # Calls waiting for room; close lets them in before ending the stream.
        self._blocked_senders = 0
        self._senders_gone = anyio.Event()
        self._writer_stopped = anyio.Event()
        self._closing = False
        self._failure: BaseException | None = None

    @property
    def closing(self) -> bool:
        """Closed (or closing): no more calls are taken."""
        return self._closing

    # -- the callers' side -------------------------------------------------------------------

    async def put(self, command: C) -> None:
        """Queue ``command``, waiting while the queue is full."""
        self.check_open()
        try:
            # Skip send()'s checkpoint when there is room: one loop iteration less per call on
            # the request path. FIFO order holds either way.
            self._send.send_nowait(command)
            return
        except anyio.WouldBlock:
            pass
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise self.closed_error() from exc
        self._blocked_senders += 1
        try:
            await self._send.send(command)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise self.closed_error() from exc
        finally:
            self._blocked_senders -= 1
            if self._closing and self._blocked_senders == 0:
                self._senders_gone.set()

    def check_open(self) -> None:
        if self._failure is not None or self._closing:
            raise self.closed_error()

    def closed_error(self) -> StoreClosedError:
        if self._failure is not None:
            error = StoreClosedError("the event store failed and takes no more events")
            error.__cause__ = self._failure
            return error
        return StoreClosedError("the event store is closed")

    async def close(self) -> None:
        """Take no more calls, let in those waiting for room, end the queue, and return once
        the writer has stopped (:meth:`stop`).

        The writer still gets everything queued, then ``None`` from :meth:`get`. ``closing``
        is set before the first await, so a concurrent close can tell.
        """
        self._closing = True
        if self._blocked_senders:
            await self._senders_gone.wait()
        self._send.close()
        await self._writer_stopped.wait()

    # -- the writer's side -------------------------------------------------------------------

    async def get(self) -> C | None:
        """The next command (a held one first); None once the queue is closed and empty."""
        if (command := self._held) is not None:
            self._held = None
            return command
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return None

    def drain(
        self,
        batch: list[C],
        max_events: int,
        joins: Callable[[C, int], bool] | None = None,
    ) -> list[C]:
        """``batch`` plus whatever is already queued, while it holds fewer than ``max_events``
        events (one command's events are never split, so a batch may end up larger).

        ``joins(command, events so far)``, if given, says whether the next command may join;
        the first that may not ends the batch and is held for the next :meth:`get`.
        """
        size = sum(len(c.rows) for c in batch)
        while size < max_events:
            try:
                command = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if joins is not None and not joins(command, size):
                self._held = command
                break
            batch.append(command)
            size += len(command.rows)
        return batch

    def fail(self, batch: Sequence[C], exc: BaseException, reason: str) -> int:
        """The writer could not store ``batch`` and stops: take no more calls, ever.

        ``batch``'s waiters get a StoreError (``reason``, caused by ``exc``); every command
        still queued or held, and every blocked or later call, gets StoreClosedError. Returns
        how many events were only submitted (nobody waits on them) and so are lost.
        """
        self._failure = exc
        for command in batch:
            error = StoreError(f"{reason}: {exc}")
            error.__cause__ = exc
            command.fail(error)
        lost = sum(len(c.rows) for c in batch if c.done is None)
        pending = [self._held] if self._held is not None else []
        self._held = None
        # Nothing awaits from here to closing the stream, so no command can slip past.
        while True:
            try:
                pending.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        for command in pending:
            command.fail(self.closed_error())
            if command.done is None:
                lost += len(command.rows)
        self._receive.close()
        return lost

    def stop(self) -> None:
        """Called by the writer as it ends, however it ends: blocked and later calls get
        StoreClosedError, and :meth:`close` returns."""
        self._receive.close()
        self._writer_stopped.set()


@asynccontextmanager
async def running_writer(
    writer: Callable[[], Coroutine[Any, Any, None]], aclose: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """Run a store's ``writer`` task around the body, then ``aclose`` the store (which stops
    the writer), however the body ends."""
    body_error: BaseException | None = None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(writer)
        try:
            yield
        except BaseException as exc:
            # Raised again below, outside the task group, so that the caller sees its own
            # exception rather than an ExceptionGroup around it.
            body_error = exc
        finally:
            await aclose()
    if body_error is not None:
        raise body_error
