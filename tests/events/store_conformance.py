"""The behaviour every event store must show, whatever keeps the log (SQLite, JetStream, ...).

To run it against a store, subclass :class:`StoreConformance` in a test module and provide a
``new_log`` fixture: a callable that returns an opener for a fresh, empty log. The opener takes
keyword options (at least ``queue_size``) and returns an async context manager yielding an open
:class:`~events.EventStore`; calling the same opener again reopens the same log.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    DroppedCandidate,
    Event,
    EventBase,
    EventStore,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RouteDecided,
    StoreClosedError,
    StoredEvent,
    TaskUnrouted,
    TokenUsage,
    new_id,
)

StoreOpener: TypeAlias = Callable[..., AbstractAsyncContextManager[EventStore]]
NewLog: TypeAlias = Callable[[], StoreOpener]
RestartServer: TypeAlias = Callable[[], Awaitable[None]]

_counter = itertools.count()


def envelope(request_id: str = "req-1", tenant: str = "acme") -> dict[str, Any]:
    return {
        "event_id": new_id(),
        "ts_ns": time.time_ns(),
        "request_id": request_id,
        "tenant": tenant,
        "task": "summarize",
        "config_hash": "cfg-1",
    }


def fallback(request_id: str = "req-1", tenant: str = "acme") -> FallbackTaken:
    """A small event with a unique id; ``to_model`` carries a counter to tell events apart."""
    return FallbackTaken(
        **envelope(request_id, tenant),
        from_model="big",
        to_model=f"small-{next(_counter)}",
        error_class="overloaded",
    )


def one_of_each(request_id: str = "req-1") -> list[Event]:
    """One event of every type in the union, with optional fields both set and unset."""
    usage = TokenUsage(input_tokens=1200, cached_input_tokens=1000, output_tokens=80)
    env = envelope
    return [
        RequestReceived(
            **env(request_id),
            transport="unix",
            model_requested="auto",
            stream=True,
            message_count=3,
            prompt_chars=5400,
            prompt_sha256="ab" * 32,
            max_tokens=None,
            prompt="héllo ✓",
        ),
        RouteDecided(
            **env(request_id),
            route="summarize",
            model_class="fast",
            selector="task",
            chain=["m1", "m2"],
            dropped=[DroppedCandidate(model="m0", provider="p0", reason="context_window")],
            input_tokens_estimate=1300,
            max_tokens=512,
        ),
        TaskUnrouted(**env(request_id), requested_task="", default_route="general"),
        AttemptStarted(
            **env(request_id), attempt=1, model="m1", provider="openai", upstream_model="gpt-x"
        ),
        AttemptFailed(
            **env(request_id),
            attempt=1,
            model="m1",
            provider="openai",
            error_class="rate_limited",
            status=429,
            provider_code=None,
            retry_after_ms=1500,
            message="slow down",
            mid_stream=False,
            chunks_delivered=0,
            latency_ns=12_000_000,
        ),
        FallbackTaken(**env(request_id), from_model="m1", to_model="m2", error_class="overloaded"),
        AttemptSucceeded(
            **env(request_id),
            attempt=2,
            model="m2",
            provider="anthropic",
            status=200,
            latency_ns=900_000_000,
            ttft_ns=None,
            ttlt_ns=900_000_000,
            chunks=42,
            finish_reason="stop",
            usage=usage,
        ),
        RequestCompleted(
            **env(request_id),
            model="m2",
            provider="anthropic",
            attempts=2,
            fallbacks=1,
            finish_reason="stop",
            usage=usage,
            latency_ns=950_000_000,
            ttft_ns=300_000_000,
            ttlt_ns=950_000_000,
            completion_chars=800,
            completion_sha256="cd" * 32,
        ),
        RequestFailed(
            **env(request_id),
            error_type="all_candidates_failed",
            message="every candidate failed",
            attempts=2,
            latency_ns=2**63 - 1,
        ),
    ]


async def read_all(store: EventStore, page: int = 1000) -> list[StoredEvent]:
    """The whole log, read page by page."""
    result: list[StoredEvent] = []
    while batch := await store.read(result[-1].seq if result else 0, page):
        result.extend(batch)
    return result


@asynccontextmanager
async def tailing(
    store: EventStore, after_seq: int = 0
) -> AsyncIterator[AsyncIterator[StoredEvent]]:
    """``store.tail(after_seq)``, closed on exit rather than whenever it is garbage-collected."""
    tail = store.tail(after_seq)
    try:
        yield tail
    finally:
        # The protocol promises an AsyncIterator; async generators also have aclose().
        aclose = getattr(tail, "aclose", None)
        if aclose is not None:
            await aclose()


def assert_log(stored: Sequence[StoredEvent], expected: Sequence[Event]) -> None:
    """``stored`` is exactly ``expected``, numbered 1, 2, 3, ..."""
    assert [s.seq for s in stored] == list(range(1, len(expected) + 1))
    assert [s.event for s in stored] == list(expected)


_field_text = st.text(max_size=40)
_i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def _random_event(draw: st.DrawFn) -> Event:
    return AttemptFailed(
        event_id=new_id(),
        ts_ns=draw(_i64),
        request_id=draw(_field_text),
        tenant=draw(_field_text),
        task=draw(_field_text),
        config_hash=draw(_field_text),
        attempt=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        model=draw(_field_text),
        provider=draw(_field_text),
        error_class=draw(_field_text),
        status=draw(st.none() | st.integers(min_value=100, max_value=599)),
        provider_code=draw(st.none() | _field_text),
        retry_after_ms=draw(st.none() | _i64),
        message=draw(st.text(max_size=2000)),
        mid_stream=draw(st.booleans()),
        chunks_delivered=draw(_i64),
        latency_ns=draw(_i64),
    )


# A plan of appends: each item is either a new event or a back-reference to an earlier one
# (a retry of it), so duplicates happen across batches and within one batch.
_plan_item = st.one_of(_random_event(), st.integers(min_value=0, max_value=50))
_plan = st.lists(st.lists(_plan_item, min_size=1, max_size=6), min_size=1, max_size=8)


class StoreConformance:
    """Protocol-level tests. Subclasses provide the ``new_log`` fixture (see the module doc).

    A store backed by a server overrides ``restart_server`` (restart it, keeping its data,
    while a store is open on it); for an embedded store there is nothing to restart.
    """

    @pytest.fixture
    def open_store(self, new_log: NewLog) -> StoreOpener:
        return new_log()

    @pytest.fixture
    def restart_server(self) -> RestartServer:
        async def nothing_to_restart() -> None:
            pass

        return nothing_to_restart

    async def test_acknowledged_events_survive_a_server_restart(
        self, open_store: StoreOpener, restart_server: RestartServer
    ) -> None:
        before = [fallback() for _ in range(20)]
        submitted = [fallback() for _ in range(5)]
        after = fallback()
        async with open_store() as store:
            for start in range(0, 20, 5):
                await store.append(before[start : start + 5])
            await restart_server()
            # The store rides out the restart: calls made meanwhile wait, then land in order.
            await store.submit(submitted)
            with anyio.fail_after(30):
                assert await store.append([after]) == [26]
            assert_log(await read_all(store), [*before, *submitted, after])
        async with open_store() as store:
            assert_log(await read_all(store), [*before, *submitted, after])

    async def test_empty_log(self, open_store: StoreOpener) -> None:
        async with open_store() as store:
            assert await store.last_seq() == 0
            assert await store.read() == []
            assert await store.append([]) == []

    async def test_seqs_start_at_one_and_events_round_trip(self, open_store: StoreOpener) -> None:
        events = one_of_each()
        async with open_store() as store:
            assert await store.append(events) == list(range(1, len(events) + 1))
            assert await store.last_seq() == len(events)
            assert_log(await store.read(), events)

    async def test_concurrent_appenders_get_ordered_gap_free_contiguous_seqs(
        self, open_store: StoreOpener
    ) -> None:
        results: list[tuple[list[Event], list[int]]] = []

        async def appender(k: int) -> None:
            previous = 0
            for _ in range(2):
                batch: list[Event] = [fallback(f"req-{k}") for _ in range(1 + k % 4)]
                seqs = await store.append(batch)
                # One task's appends keep their order; one batch is contiguous.
                assert seqs[0] > previous
                assert seqs == list(range(seqs[0], seqs[0] + len(batch)))
                previous = seqs[-1]
                results.append((batch, seqs))

        async with open_store() as store, anyio.create_task_group() as tg:
            for k in range(200):
                tg.start_soon(appender, k)
        async with open_store() as store:
            stored = await read_all(store, page=97)
        by_seq = {seq: e for batch, seqs in results for e, seq in zip(batch, seqs, strict=True)}
        assert sorted(by_seq) == list(range(1, len(by_seq) + 1))
        assert len(by_seq) == sum(2 * (1 + k % 4) for k in range(200))
        assert_log(stored, [by_seq[seq] for seq in sorted(by_seq)])

    async def test_reopened_log_keeps_events_and_continues_the_sequence(
        self, open_store: StoreOpener
    ) -> None:
        first = [fallback() for _ in range(5)]
        later = fallback()
        async with open_store() as store:
            await store.append(first)
        async with open_store() as store:
            assert await store.last_seq() == 5
            assert await store.append([later]) == [6]
        async with open_store() as store:
            assert_log(await store.read(), [*first, later])

    async def test_reappending_an_event_id_returns_its_original_seq(
        self, open_store: StoreOpener
    ) -> None:
        a, b, c, d = (fallback() for _ in range(4))
        async with open_store() as store:
            assert await store.append([a, b]) == [1, 2]
            assert await store.append([b, c]) == [2, 3]
            assert await store.append([a]) == [1]
            # A duplicate inside one batch, after a new event: no gap is left behind.
            assert await store.append([d, d, a]) == [4, 4, 1]
            await store.submit([c, a])
            assert await store.last_seq() == 4
        async with open_store() as store:
            assert await store.append([c]) == [3]
            assert_log(await store.read(), [a, b, c, d])

    async def test_concurrent_retries_of_one_event_share_its_seq(
        self, open_store: StoreOpener
    ) -> None:
        event = fallback()
        others = [fallback() for _ in range(20)]
        retries: list[list[int]] = []

        async def retry() -> None:
            retries.append(await store.append([event]))

        async with open_store() as store:
            async with anyio.create_task_group() as tg:
                for other in others:
                    tg.start_soon(store.append, [other])
                    tg.start_soon(retry)
            stored = await store.read()
        assert [s.seq for s in stored] == list(range(1, 22))
        [original] = [s.seq for s in stored if s.event == event]
        assert retries == [[original]] * 20
        assert {s.event.event_id for s in stored} == {e.event_id for e in [event, *others]}

    async def test_one_tasks_submits_keep_order_and_append_waits_for_them(
        self, open_store: StoreOpener
    ) -> None:
        events = [fallback() for _ in range(30)]
        async with open_store() as store:
            for event in events[:-1]:
                await store.submit([event])
            # Submits queued earlier by this task commit no later than this append.
            assert await store.append(events[-1:]) == [30]
            assert_log(await store.read(), events)

    async def test_close_commits_everything_submitted(self, open_store: StoreOpener) -> None:
        batches = [[fallback() for _ in range(5)] for _ in range(100)]
        async with open_store() as store:
            for batch in batches:
                await store.submit(batch)
        async with open_store() as store:
            assert_log(await read_all(store), [e for batch in batches for e in batch])

    async def test_full_queue_makes_producers_wait_and_loses_nothing(
        self, open_store: StoreOpener
    ) -> None:
        produced: dict[int, list[Event]] = {}

        async def producer(k: int) -> None:
            produced[k] = []
            for i in range(25):
                events: list[Event] = [fallback(f"req-{k}"), fallback(f"req-{k}")]
                produced[k].extend(events)
                if i % 5 == 4:
                    await store.append(events)
                else:
                    await store.submit(events)

        async with open_store(queue_size=1) as store, anyio.create_task_group() as tg:
            for k in range(20):
                tg.start_soon(producer, k)
        async with open_store() as store:
            stored = await read_all(store)
        assert [s.seq for s in stored] == list(range(1, 1001))
        for k, events in produced.items():
            assert [s.event for s in stored if s.event.request_id == f"req-{k}"] == events

    async def test_read_pages_by_seq(self, open_store: StoreOpener) -> None:
        events = [fallback() for _ in range(25)]
        async with open_store() as store:
            await store.append(events)
            assert_log(await store.read(0, 10), events[:10])
            page = await store.read(10, 10)
            assert [s.seq for s in page] == list(range(11, 21))
            assert [s.event for s in page] == events[10:20]
            assert [s.seq for s in await store.read(20, 10)] == [21, 22, 23, 24, 25]
            assert await store.read(25) == []
            assert await store.read(0, 0) == []
            assert [s.seq for s in await store.read(3)] == list(range(4, 26))

    async def test_tail_catches_up_then_follows_commits_racing_it(
        self, open_store: StoreOpener
    ) -> None:
        backlog = [fallback() for _ in range(2500)]
        live = [[fallback() for _ in range(5)] for _ in range(100)]
        total = len(backlog) + 5 * len(live)
        seen: list[StoredEvent] = []

        async def consume() -> None:
            async with tailing(store) as tail:
                async for stored in tail:
                    seen.append(stored)
                    if len(seen) == total:
                        return

        async def produce() -> None:
            for batch in live:
                await store.append(batch)
                await anyio.lowlevel.checkpoint()

        async with open_store() as store:
            for start in range(0, len(backlog), 100):
                await store.append(backlog[start : start + 100])
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    # Live commits start together with the catch-up, so they race it.
                    tg.start_soon(consume)
                    tg.start_soon(produce)
            stored = await read_all(store)
        assert [s.seq for s in seen] == list(range(1, total + 1))
        assert seen == stored

    async def test_tail_starts_after_the_given_seq(self, open_store: StoreOpener) -> None:
        events = [fallback() for _ in range(10)]
        async with open_store() as store:
            await store.append(events)
            async with tailing(store, after_seq=7) as tail:
                got = [await anext(tail) for _ in range(3)]
        assert [s.seq for s in got] == [8, 9, 10]
        assert [s.event for s in got] == events[7:]

    async def test_tail_ends_when_the_store_closes(self, open_store: StoreOpener) -> None:
        seen: list[int] = []

        async def consume() -> None:
            async with tailing(store) as tail:
                async for stored in tail:
                    seen.append(stored.seq)

        with anyio.fail_after(10):
            async with open_store() as store, anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await store.append([fallback(), fallback()])
                await anyio.wait_all_tasks_blocked()
                await store.aclose()
        assert seen == [1, 2]

    async def test_append_and_submit_after_close_raise(self, open_store: StoreOpener) -> None:
        async with open_store() as store:
            await store.append([fallback()])
        with pytest.raises(StoreClosedError):
            await store.append([fallback()])
        with pytest.raises(StoreClosedError):
            await store.submit([fallback()])
        await store.aclose()  # idempotent

    async def test_reads_after_close_raise(self, open_store: StoreOpener) -> None:
        async with open_store() as store:
            await store.append([fallback()])
        with pytest.raises(StoreClosedError):
            await store.read()
        with pytest.raises(StoreClosedError):
            await store.read_request("req-1")
        with pytest.raises(StoreClosedError):
            await store.last_seq()
        assert [s async for s in store.tail()] == []

    async def test_refuses_bad_input_and_keeps_serving(self, open_store: StoreOpener) -> None:
        class Stray(EventBase, frozen=True, tag="stray.v1"):
            pass

        async with open_store() as store:
            # Only members of the union could be decoded again, so only they are stored.
            with pytest.raises(TypeError, match="Stray"):
                await store.append([Stray(**envelope())])  # type: ignore[list-item]
            with pytest.raises(ValueError, match="ts_ns"):
                await store.append([msgspec.structs.replace(fallback(), ts_ns=2**63)])
            with pytest.raises(ValueError, match="limit"):
                await store.read(0, -1)
            # Bad input is refused before it reaches the writer: the store still works.
            assert await store.append([fallback()]) == [1]

    async def test_retry_after_a_cancelled_append_stores_the_event_once(
        self, open_store: StoreOpener
    ) -> None:
        event = fallback()
        async with open_store() as store:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await store.append([event])
            # The outcome of the cancelled append is unknown; retrying it is harmless.
            seqs = await store.append([event])
            assert await store.read() == [StoredEvent(seqs[0], event)]

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(plan=_plan)
    async def test_matches_a_model_of_appends_with_retries(
        self, new_log: NewLog, plan: list[list[Event | int]]
    ) -> None:
        model: dict[str, int] = {}  # event_id -> seq
        log: list[Event] = []
        open_store = new_log()
        async with open_store() as store:
            for items in plan:
                events: list[Event] = []
                expected: list[int] = []
                for item in items:
                    if isinstance(item, int):
                        if not log:
                            continue
                        event = log[item % len(log)]
                    else:
                        event = item
                    if event.event_id not in model:
                        log.append(event)
                        model[event.event_id] = len(log)
                    events.append(event)
                    expected.append(model[event.event_id])
                assert await store.append(events) == expected
        async with open_store() as store:
            assert_log(await read_all(store, page=3), log)
