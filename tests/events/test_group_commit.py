"""The queue both stores' writers share (``events._group_commit``), on its own: batching,
holding a command back for the next batch, back-pressure, closing and failing.

The stores' suites cover it through the real writers; this covers what they reach only by
timing (a held command when the store fails, a batch cut by ``joins``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import StoreClosedError, StoreError
from events._group_commit import Command, CommandQueue, complete, joined_rows


def command(size: int, *, wait: bool = True, tag: str = "c") -> Command[str]:
    return Command([f"{tag}{i}" for i in range(size)], wait=wait)


@asynccontextmanager
async def opened(size: int) -> AsyncIterator[CommandQueue[Command[str]]]:
    """A queue whose two ends are closed on exit, as a store closes them."""
    queue = CommandQueue[Command[str]](size)
    try:
        yield queue
    finally:
        queue.stop()
        await queue.close()


def may_join(command: Command[str], size: int) -> bool:
    """A ``joins`` rule: a command whose first row starts with "!" goes in a batch of its own
    (as a conditional hold does in the JetStream store)."""
    return not command.rows[0].startswith("!")


@given(
    sizes=st.lists(
        st.tuples(st.integers(min_value=1, max_value=5), st.booleans()), min_size=1, max_size=30
    ),
    max_events=st.integers(min_value=1, max_value=8),
)
async def test_batches_keep_order_and_respect_the_limit_and_joins(
    sizes: list[tuple[int, bool]], max_events: int
) -> None:
    commands = [command(n, tag="!" if solo else f"c{k}-") for k, (n, solo) in enumerate(sizes)]
    batches: list[list[Command[str]]] = []
    async with opened(len(sizes)) as queue:
        for c in commands:
            await queue.put(c)
        taken = 0
        while taken < len(commands):
            with anyio.fail_after(10):  # a lost command fails the test, not hangs it
                first = await queue.get()
            assert first is not None
            # As the JetStream writer does: a command that may not join goes alone.
            batch = queue.drain([first], max_events, may_join) if may_join(first, 0) else [first]
            batches.append(batch)
            taken += len(batch)
    # Everything comes out once, in order.
    assert [c for batch in batches for c in batch] == commands
    for batch in batches:
        if len(batch) > 1:
            # Only the last command may carry a batch past the limit; none is split.
            assert sum(len(c.rows) for c in batch[:-1]) < max_events
            assert all(may_join(c, 0) for c in batch)
    for batch, after in itertools.pairwise(batches):
        if may_join(batch[0], 0):
            # Everything was queued: a batch ends at the limit or at a command that may not join.
            assert sum(len(c.rows) for c in batch) >= max_events or not may_join(after[0], 0)


async def test_a_held_command_comes_out_before_the_rest() -> None:
    first, solo, later = command(1), command(1, tag="!"), command(1)
    async with opened(8) as queue:
        for c in (first, solo, later):
            await queue.put(c)
        assert await queue.get() is first
        assert queue.drain([first], 10, may_join) == [first]
        with anyio.fail_after(10):  # a lost command fails the test, not hangs it
            assert await queue.get() is solo
            assert await queue.get() is later


async def test_drain_takes_whole_commands_up_to_the_limit() -> None:
    a, b, c = command(2), command(3), command(1)
    async with opened(8) as queue:
        for x in (a, b, c):
            await queue.put(x)
        assert await queue.get() is a
        # 2 < 4, so b joins (making 5); then the limit is reached and c waits.
        assert queue.drain([a], 4) == [a, b]
        assert await queue.get() is c


async def test_failing_fails_the_batch_the_held_and_the_queued_and_counts_the_lost() -> None:
    batch = [command(2), command(3, wait=False)]
    solo, queued, submitted = command(1, tag="!"), command(1), command(4, wait=False)
    cause = OSError("disk full")
    async with opened(8) as queue:
        for c in (*batch, solo, queued, submitted):
            await queue.put(c)
        first = await queue.get()
        assert first is not None
        assert queue.drain([first], 10, may_join) == batch  # solo is held back
        lost = queue.fail(batch, cause, "could not commit")
        # Later calls are refused.
        with pytest.raises(StoreClosedError):
            await queue.put(command(1))
        with pytest.raises(StoreClosedError):
            queue.check_open()
    assert lost == 3 + 4  # the submits: nobody waits to be told
    # Every waiter has been told (checked first: awaiting one that was not would hang).
    for c in (batch[0], solo, queued):
        assert c.done is not None and c.done.is_set()
    with pytest.raises(StoreError, match="could not commit: disk full") as failed:
        await batch[0].outcome()
    assert not isinstance(failed.value, StoreClosedError)
    assert failed.value.__cause__ is cause
    for c in (solo, queued, submitted):
        assert isinstance(c.error, StoreClosedError)
        assert c.error.__cause__ is cause


async def test_close_lets_blocked_callers_in_then_waits_for_the_writer() -> None:
    commands = [command(1, tag=f"c{k}-") for k in range(5)]
    got: list[Command[str]] = []
    closed = anyio.Event()

    async def close(queue: CommandQueue[Command[str]]) -> None:
        await queue.close()
        closed.set()

    async with opened(1) as queue, anyio.create_task_group() as tg:
        for c in commands:
            tg.start_soon(queue.put, c)
        await anyio.wait_all_tasks_blocked()
        # Four callers wait for room; closing waits for them, so it runs beside the writer.
        tg.start_soon(close, queue)
        await anyio.wait_all_tasks_blocked()
        assert queue.closing
        with pytest.raises(StoreClosedError, match="closed"):
            await queue.put(command(1))
        with anyio.fail_after(10):  # a close that never ends the queue fails, not hangs
            while (c := await queue.get()) is not None:
                got.append(c)
        await anyio.wait_all_tasks_blocked()
        assert not closed.is_set()  # until the writer says it has stopped
        queue.stop()
    assert closed.is_set()
    # Every caller got in, in the order they came.
    assert got == commands


async def test_a_stopped_writer_refuses_blocked_callers() -> None:
    refused: list[StoreClosedError] = []

    async def put(queue: CommandQueue[Command[str]]) -> None:
        try:
            await queue.put(command(1))
        except StoreClosedError as exc:
            refused.append(exc)

    async with opened(1) as queue:
        await queue.put(command(1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(put, queue)
            await anyio.wait_all_tasks_blocked()
            assert not refused  # waiting for room
            queue.stop()
        assert len(refused) == 1
        with pytest.raises(StoreClosedError):
            await queue.put(command(1))


async def test_seqs_are_shared_out_in_order() -> None:
    batch = [command(2), command(1, wait=False), command(3)]
    rows = joined_rows(batch)
    assert rows == ["c0", "c1", "c0", "c0", "c1", "c2"]
    complete(batch, [10, 11, 12, 13, 14, 15])
    assert [c.seqs for c in batch] == [[10, 11], [12], [13, 14, 15]]
    assert await batch[2].outcome() == [13, 14, 15]
    assert joined_rows(batch[:1]) is batch[0].rows  # one command: no copy
