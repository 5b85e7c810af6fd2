"""The shared budget ledger, in process: several ledgers (each with its own NATS connection and
store, as in separate sidecars) deciding holds on one JetStream stream of a real nats-server."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.lowlevel
import nats
from nats.aio.client import Client
from nats_server import NatsServer

from events import (
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    Event,
    FallbackTaken,
    JetStreamEventStore,
    StoredEvent,
    TokenUsage,
    new_id,
    open_jetstream_store,
)
from projections import BudgetBook, BudgetSpec
from sidecar._ledger import SharedLedger, expiry_event_id

KEY = "all/*/total"
SPECS = [BudgetSpec(name="all", scope="global", period="total", limit_micros=1000)]


def envelope(request_id: str) -> dict[str, object]:
    return {
        "event_id": new_id(),
        "ts_ns": time.time_ns(),
        "request_id": request_id,
        "tenant": "acme",
        "task": "chat",
        "config_hash": "cfg",
    }


def reserved(request_id: str, amount: int, expires_at_ns: int = 2**62) -> BudgetReserved:
    return BudgetReserved(
        **envelope(request_id),  # type: ignore[arg-type]
        reservation_id=request_id,
        budgets=[KEY],
        amount_micros=amount,
        expires_at_ns=expires_at_ns,
        model="m",
        provider="p",
    )


def settled(request_id: str, cost: int) -> CostSettled:
    return CostSettled(
        **envelope(request_id),  # type: ignore[arg-type]
        reservation_id=request_id,
        attempt=1,
        model="m",
        provider="p",
        usage=TokenUsage(),
        cost_micros=cost,
        final=True,
    )


async def connect(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.05)


@asynccontextmanager
async def sidecars(url: str, count: int) -> AsyncIterator[list[SharedLedger]]:
    """``count`` ledgers, each on its own connection and store, rebuilt and running."""
    async with AsyncExitStack() as stack:
        ledgers: list[SharedLedger] = []
        for _ in range(count):
            nc = await connect(url)
            stack.push_async_callback(nc.close)
            store = await stack.enter_async_context(open_jetstream_store(nc))
            ledger = SharedLedger(BudgetBook(SPECS), store)
            await ledger.rebuild()
            ledgers.append(ledger)
        # Entered last, left first: the followers stop before the stores close.
        tasks = await stack.enter_async_context(anyio.create_task_group())
        for ledger in ledgers:
            tasks.start_soon(ledger.run)
        try:
            yield ledgers
        finally:
            tasks.cancel_scope.cancel()


def store_of(ledger: SharedLedger) -> JetStreamEventStore:
    return ledger._store


async def whole_log(ledger: SharedLedger) -> list[StoredEvent]:
    store = store_of(ledger)
    log: list[StoredEvent] = []
    while page := await store.read(log[-1].seq if log else 0, 1000):
        log.extend(page)
    return log


def fold(log: list[StoredEvent]) -> BudgetBook:
    book = BudgetBook(SPECS)
    for stored in log:
        book.apply(stored.event)
        state = book.state(KEY)
        assert state.spent_micros + state.reserved_micros <= 1000, (stored.seq, state)
    return book


def test_check_counts_pending_holds_as_reserved() -> None:
    book = BudgetBook(SPECS)
    book.apply(reserved("r1", 600))
    assert book.check([KEY], 400) is None
    refusal = book.check([KEY], 400, {KEY: 1})
    assert refusal is not None
    assert (refusal.reserved_micros, refusal.needed_micros) == (601, 400)
    assert book.check([KEY], 300, {"other/*/total": 500}) is None


async def test_concurrent_sidecars_never_overrun_and_fill_the_budget(
    nats_server: NatsServer,
) -> None:
    rng = random.Random(7)
    amounts = [rng.randint(1, 40) for _ in range(150)]
    outcomes: list[tuple[int, bool]] = []
    async with sidecars(nats_server.url, 3) as ledgers:

        async def request(k: int, amount: int) -> None:
            ledger = ledgers[k % 3]
            refusal = await ledger.hold([KEY], amount, reserved(f"r{k}", amount), [])
            outcomes.append((amount, refusal is None))

        async with anyio.create_task_group() as tg:
            for k, amount in enumerate(amounts):
                tg.start_soon(request, k, amount)
        log = await whole_log(ledgers[0])
        conflicts = sum(ledger.conflicts for ledger in ledgers)
    book = fold(log)
    admitted = sum(amount for amount, ok in outcomes if ok)
    assert book.state(KEY).reserved_micros == admitted <= 1000
    # The budget was contended (sidecars met each other's holds) and is full: every refused
    # amount was more than what was left when it was refused, so at least the smallest
    # refused one no longer fits at the end.
    assert conflicts > 0
    refused = [amount for amount, ok in outcomes if not ok]
    assert refused
    assert min(refused) > 1000 - admitted
    # The holds in the log are exactly the admitted ones, each once.
    holds = [s.event for s in log if isinstance(s.event, BudgetReserved)]
    assert len(holds) == len({h.reservation_id for h in holds}) == sum(ok for _, ok in outcomes)


async def test_a_stale_book_catches_up_before_it_decides(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 1) as [fresh]:
        # A second ledger that never follows: it only learns of holds by conflict.
        nc = await connect(nats_server.url)
        try:
            async with open_jetstream_store(nc) as store:
                stale = SharedLedger(BudgetBook(SPECS), store)
                assert await fresh.hold([KEY], 700, reserved("a", 700), []) is None
                refusal = await stale.hold([KEY], 400, reserved("b", 400), [])
                assert refusal is not None
                assert refusal.reserved_micros == 700
                assert stale.conflicts == 1
                assert stale.hold_seq == fresh.hold_seq
                assert await stale.hold([KEY], 300, reserved("c", 300), []) is None
        finally:
            await nc.close()
        assert fold(await whole_log(fresh)).state(KEY).reserved_micros == 1000


async def test_releases_from_other_sidecars_reach_the_book(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 2) as [one, two]:
        assert await one.hold([KEY], 900, reserved("a", 900), []) is None
        assert await two.hold([KEY], 200, reserved("b", 200), []) is not None
        # The first sidecar settles its call for less than it held; the second learns of it
        # from the stream (settlements carry no condition).
        await store_of(one).append([settled("a", 100)])
        with anyio.fail_after(10):
            while two.book.state(KEY).reserved_micros:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert two.book.state(KEY).spent_micros == 100
        assert await two.hold([KEY], 900, reserved("c", 900), []) is None


async def test_events_before_a_hold_land_before_it(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 1) as [ledger]:
        before: list[Event] = [
            FallbackTaken(**envelope("a"), from_model="x", to_model="y", error_class="e")  # type: ignore[arg-type]
        ]
        assert await ledger.hold([KEY], 10, reserved("a", 10), before) is None
        assert before == []  # logged by the ledger
        topped = BudgetToppedUp(
            **envelope("a"),  # type: ignore[arg-type]
            reservation_id="a",
            amount_micros=5,
            model="m",
            provider="p",
        )
        assert await ledger.hold([KEY], 5, topped, []) is None
        log = await whole_log(ledger)
    assert [type(s.event).__name__ for s in log] == [
        "FallbackTaken",
        "BudgetReserved",
        "BudgetToppedUp",
    ]
    assert ledger.book.reservation("a") is not None
    assert ledger.book.state(KEY).reserved_micros == 15


async def test_a_cancelled_caller_still_gets_its_hold_recorded(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 1) as [ledger]:
        outcomes: list[object] = []
        with anyio.CancelScope() as scope:
            scope.cancel()
            # Cancelled before it could even wait: the hold is decided, stored and applied
            # anyway, so the caller's tab, the book and the log agree (the caller's close then
            # releases it). The cancellation reaches the caller at its next checkpoint.
            outcomes.append(await ledger.hold([KEY], 10, reserved("a", 10), []))
            await anyio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert outcomes == [None]
        assert ledger.book.state(KEY).reserved_micros == 10
        log = await whole_log(ledger)
    assert [type(s.event).__name__ for s in log] == ["BudgetReserved"]


async def test_two_sweepers_store_one_expiry(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 2) as [one, two]:
        assert await one.hold([KEY], 50, reserved("a", 50, expires_at_ns=1), []) is None
        with anyio.fail_after(10):
            while two.book.reservation("a") is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)

        def sweep(ledger: SharedLedger) -> list[Event]:
            due = [(rid, 50) for rid in ledger.book.expired(time.time_ns())]
            return ledger.expire(due, expiry(time.time_ns()))

        first, second = sweep(one), sweep(two)
        assert [e.event_id for e in first] == [e.event_id for e in second]
        assert first[0].event_id == expiry_event_id("a")
        await store_of(one).append(first)
        await store_of(two).append(second)
        # Not sent again: it is either on its way (resends wait) or applied (no longer due).
        assert sweep(one) == []
        with anyio.fail_after(10):
            while one.book.state(KEY).spent_micros != 50:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        log = await whole_log(one)
    expiries = [s for s in log if isinstance(s.event, BudgetReservationExpired)]
    assert len(expiries) == 1
    assert fold(log).state(KEY).spent_micros == 50


def expiry(now_ns: int) -> Callable[[str, int], Event]:
    def make(rid: str, held: int) -> Event:
        return BudgetReservationExpired(
            event_id=expiry_event_id(rid),
            ts_ns=now_ns,
            request_id=rid,
            tenant="",
            task="",
            config_hash="cfg",
            reservation_id=rid,
            counted_micros=held,
        )

    return make


async def test_a_new_sidecar_rebuilds_the_book_from_the_stream(nats_server: NatsServer) -> None:
    async with sidecars(nats_server.url, 1) as [ledger]:
        for k in range(30):
            assert await ledger.hold([KEY], 10, reserved(f"r{k}", 10), []) is None
            if k % 2:
                await store_of(ledger).append([settled(f"r{k}", 3)])
        log = await whole_log(ledger)
        async with sidecars(nats_server.url, 1) as [late]:
            assert late.book.snapshot() == fold(log).snapshot()
            assert late.hold_seq == ledger.hold_seq
            # ... and decides on it without a conflict.
            assert await late.hold([KEY], 10, reserved("new", 10), []) is None
            assert late.conflicts == 0
