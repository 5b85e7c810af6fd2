"""The SQLite event store: the shared conformance suite, then what is specific to SQLite."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from store_conformance import (
    NewLog,
    StoreConformance,
    StoreOpener,
    assert_log,
    fallback,
    one_of_each,
    read_all,
)

from events import (
    Event,
    EventStore,
    SQLiteEventStore,
    StoreClosedError,
    StoreError,
    encode_event,
    open_sqlite_store,
)


@pytest.fixture
def new_log(tmp_path: Path) -> NewLog:
    files = (tmp_path / f"events-{n}.db" for n in itertools.count())

    def new() -> StoreOpener:
        path = next(files)

        def opener(**options: Any) -> AbstractAsyncContextManager[EventStore]:
            return open_sqlite_store(path, **options)

        return opener

    return new


class TestSQLiteStoreConformance(StoreConformance):
    """Runs the shared suite with the ``new_log`` fixture above."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


def raw(path: Path) -> closing[sqlite3.Connection]:
    """A plain connection in autocommit mode: another process, as far as the store can tell."""
    return closing(sqlite3.connect(path, isolation_level=None))


async def test_file_has_the_schema_pragmas_and_columns(path: Path) -> None:
    events = one_of_each("req-9")
    async with open_sqlite_store(path) as store:
        assert isinstance(store, SQLiteEventStore)
        await store.append(events)
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [(c[1], c[2], c[3], c[5]) for c in db.execute("PRAGMA table_info(events)")]
        assert columns == [
            ("seq", "INTEGER", 0, 1),
            ("event_id", "TEXT", 1, 0),
            ("type", "TEXT", 1, 0),
            ("request_id", "TEXT", 1, 0),
            ("tenant", "TEXT", 1, 0),
            ("ts_ns", "INTEGER", 1, 0),
            ("data", "BLOB", 1, 0),
        ]
        index_columns = {
            name: [c[2] for c in db.execute(f"PRAGMA index_info({name})")]
            for _, name, *_ in db.execute("PRAGMA index_list(events)")
        }
        assert ["request_id"] in index_columns.values()
        assert ["event_id"] in index_columns.values()  # the UNIQUE constraint
        rows = db.execute(
            "SELECT seq, event_id, type, request_id, tenant, ts_ns, data FROM events ORDER BY seq"
        ).fetchall()
    assert rows == [
        (
            seq,
            e.event_id,
            type(e).__struct_config__.tag,
            e.request_id,
            e.tenant,
            e.ts_ns,
            encode_event(e),
        )
        for seq, e in enumerate(events, start=1)
    ]


async def test_group_commit_uses_few_immediate_transactions(path: Path) -> None:
    statements: list[str] = []
    async with open_sqlite_store(path) as store:
        # Private access on purpose: the transactions are what this test is about.
        writer = store._writer
        await writer.call(writer.connection.set_trace_callback, statements.append)
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(store.append, [fallback()])
        assert await store.last_seq() == 200
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins
    assert set(begins) == {"BEGIN IMMEDIATE"}
    # 200 concurrent appends share a handful of transactions, not one each.
    assert len(begins) == statements.count("COMMIT") <= 20


async def test_read_request_returns_one_requests_events_in_order(path: Path) -> None:
    a, b = one_of_each("req-a"), one_of_each("req-b")
    async with open_sqlite_store(path) as store:
        for pair in zip(a, b, strict=True):
            await store.append(list(pair))
        got = await store.read_request("req-a")
        assert [s.event for s in got] == a
        assert [s.seq for s in got] == list(range(1, 2 * len(a), 2))
        assert [s.event for s in await store.read_request("req-b")] == b
        assert await store.read_request("req-none") == []


async def test_failed_commit_fails_its_waiters_and_the_store(path: Path) -> None:
    good, later, poison = fallback(), fallback(), fallback(tenant="poison")
    async with open_sqlite_store(path) as store:
        assert await store.append([good]) == [1]
        store.check_writable()
        # A trigger that refuses one tenant's rows stands in for any write the database
        # refuses (disk full, I/O error): deterministic, and it hits the real commit path.
        with raw(path) as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.tenant = 'poison'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(StoreError, match="refused") as failed:
            await store.append([later, poison])
        assert not isinstance(failed.value, StoreClosedError)
        assert isinstance(failed.value.__cause__, sqlite3.IntegrityError)
        with pytest.raises(StoreClosedError) as closed:
            await store.append([later])
        assert closed.value.__cause__ is failed.value.__cause__
        with pytest.raises(StoreClosedError):
            await store.submit([later])
        with pytest.raises(StoreClosedError):
            store.check_writable()  # what health checks see
        # The batch was atomic: `later` did not land. What was committed before is intact.
        assert await store.last_seq() == 1
        assert_log(await store.read(), [good])
    with raw(path) as db:
        db.execute("DROP TRIGGER refuse")
    async with open_sqlite_store(path) as store:
        assert await store.append([later, poison]) == [2, 3]
        assert_log(await store.read(), [good, later, poison])


async def test_failed_commit_fails_everything_queued_behind_it(path: Path) -> None:
    outcomes: list[BaseException | list[int]] = []

    async def append(events: Sequence[Event]) -> None:
        try:
            outcomes.append(await store.append(events))
        except StoreError as exc:
            outcomes.append(exc)

    async with open_sqlite_store(path, max_batch=1) as store:
        with raw(path) as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.tenant = 'poison'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(append, [fallback(tenant="poison")])
                for _ in range(10):
                    tg.start_soon(append, [fallback()])
        # max_batch=1: the first batch fails alone; the ten queued behind it never commit.
        assert len(outcomes) == 11
        assert all(isinstance(o, StoreError) for o in outcomes)
        assert sum(isinstance(o, StoreClosedError) for o in outcomes) == 10
        assert await store.read() == []


async def test_a_foreign_writer_fails_the_store_instead_of_misnumbering(path: Path) -> None:
    async with open_sqlite_store(path) as store:
        assert await store.append([fallback()]) == [1]
        with raw(path) as db:
            db.execute("INSERT INTO events VALUES (2, 'foreign', 't', 'r', 'acme', 0, x'00')")
        with pytest.raises(StoreError):
            await store.append([fallback()])


async def test_waits_for_another_process_holding_the_write_lock(path: Path) -> None:
    done: list[list[int]] = []

    async def append() -> None:
        done.append(await store.append([fallback()]))

    async with open_sqlite_store(path) as store:
        with raw(path) as db:
            db.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(append)
                await anyio.sleep(0.3)
                # Blocked on the lock (busy_timeout), neither committed nor failed.
                assert done == []
                db.execute("COMMIT")
        assert done == [[1]]


async def test_close_commits_calls_still_waiting_for_room(path: Path) -> None:
    events = [fallback() for _ in range(50)]
    async with open_sqlite_store(path, queue_size=1) as store:
        with raw(path) as db:
            # Stall the writer so the queue fills and the submits below have to wait.
            db.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                for event in events:
                    tg.start_soon(store.submit, [event])
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(store.aclose)
                await anyio.wait_all_tasks_blocked()
                db.execute("COMMIT")
    async with open_sqlite_store(path) as store:
        stored = await read_all(store)
    assert [s.seq for s in stored] == list(range(1, 51))
    assert {s.event.event_id for s in stored} == {e.event_id for e in events}


async def test_an_error_in_the_owner_propagates_as_is_after_a_flush(path: Path) -> None:
    events = [fallback() for _ in range(10)]

    async def submit_then_raise() -> None:
        async with open_sqlite_store(path) as store:
            await store.submit(events)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await submit_then_raise()
    async with open_sqlite_store(path) as store:
        assert_log(await store.read(), events)


async def test_a_cancelled_owner_still_commits_what_it_submitted(path: Path) -> None:
    events = [fallback() for _ in range(10)]
    with anyio.CancelScope() as scope:
        async with open_sqlite_store(path) as store:
            await store.submit(events)
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    async with open_sqlite_store(path) as store:
        assert_log(await store.read(), events)


@pytest.mark.parametrize(
    "setup",
    ["PRAGMA user_version = 7", "CREATE TABLE events (x)"],
    ids=["unknown-version", "foreign-table"],
)
async def test_refuses_a_file_it_does_not_understand(path: Path, setup: str) -> None:
    with raw(path) as db:
        db.execute(setup)
    with pytest.raises(StoreError):
        async with open_sqlite_store(path):
            pass


async def test_a_path_it_cannot_open_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        async with open_sqlite_store(tmp_path / "missing-dir" / "events.db"):
            pass


async def test_rejects_bad_options(path: Path) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        async with open_sqlite_store(path, queue_size=0):
            pass
    with pytest.raises(ValueError, match="max_batch"):
        async with open_sqlite_store(path, max_batch=0):
            pass


async def test_linger_lets_submits_share_a_commit(path: Path) -> None:
    for linger_s, expected in ((0.2, 1), (0.0, 2)):
        statements: list[str] = []
        async with open_sqlite_store(path, linger_s=linger_s) as store:
            writer = store._writer
            await writer.call(writer.connection.set_trace_callback, statements.append)
            await store.submit([fallback()])
            await anyio.sleep(0.02)  # well inside the linger, well past an immediate commit
            await store.submit([fallback()])
        assert statements.count("COMMIT") == expected, linger_s


async def test_an_append_is_not_held_by_the_linger(path: Path) -> None:
    async with open_sqlite_store(path, linger_s=1.0) as store:
        await store.submit([fallback()])
        # The writer is lingering on the submit; the append must end that, not wait it out.
        with anyio.fail_after(0.8):
            seqs = await store.append([fallback()])
        assert seqs == [2]


async def test_alternating_appends_and_submits_share_commits(path: Path) -> None:
    # The request pattern with a budget: a durable append (the reservation), then a submit
    # (the settlement). The submit lingers and rides with the next append's commit.
    statements: list[str] = []
    async with open_sqlite_store(path, linger_s=0.5) as store:
        writer = store._writer
        await writer.call(writer.connection.set_trace_callback, statements.append)
        for _ in range(10):
            await store.append([fallback()])
            await store.submit([fallback()])
    # One commit per append, none of its own for the submits (plus the final flush).
    assert statements.count("COMMIT") == 11
    async with open_sqlite_store(path) as store:
        assert await store.last_seq() == 20
