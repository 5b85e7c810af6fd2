"""The projection runner on a real SQLite log: catch-up then tail, alerts appended once, and
checkpoints written, restored, and ignored when torn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from flows import T0, Flow

from events import (
    AlertRaised,
    CircuitOpened,
    EventStore,
    StoredEvent,
    open_sqlite_store,
    read_log,
)
from projections import (
    AlertPolicy,
    BudgetBook,
    BudgetSpec,
    ProjectionRunner,
    Projections,
    alert_events,
)


def make_projections() -> Projections:
    return Projections(
        budget_specs=[], alert_policy=AlertPolicy(), primary_models={"main": frozenset({"alpha"})}
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_sqlite_store(tmp_path / "events.db") as opened:
        yield opened


def breaker_trip(request_id: str) -> list:  # type: ignore[type-arg]
    flow = Flow(request_id).received().reserve("alpha")
    flow.events.append(
        CircuitOpened(**flow.env(), provider="primary", failures=3, window_s=30, cooldown_s=5)
    )
    return flow.succeed("alpha").events


async def test_the_runner_catches_up_tails_and_appends_alerts_once(
    store: EventStore, tmp_path: Path
) -> None:
    await store.append(Flow("before").received().reserve("alpha").succeed("alpha").events)
    checkpoint = str(tmp_path / "p.ckpt")
    # The flows' events are dated 2026-11-22: announce whatever their age.
    runner = ProjectionRunner(
        store, make_projections(), checkpoint_path=checkpoint, announce_horizon_s=10**10
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run)
        seqs = await store.append(breaker_trip("during"))
        with anyio.fail_after(5):
            await runner.wait_for(seqs[-1])
            await runner.wait_for(seqs[-1] + 1)  # the alert, appended after the fold
        tasks.cancel_scope.cancel()
    log = await store.read(0, 1000)
    [alert] = [s.event for s in log if isinstance(s.event, AlertRaised)]
    assert (alert.alert, alert.subject, alert.request_id) == ("breaker_open", "primary", "")
    # Replaying the same stretch (a restart) appends the same event: the store keeps one.
    trigger = next(s.event for s in log if isinstance(s.event, CircuitOpened))
    [change] = make_projections().alerts.apply(trigger)
    await store.append(alert_events(trigger, [change]))
    assert sum(isinstance(s.event, AlertRaised) for s in await store.read(0, 1000)) == 1
    # The checkpoint was written on exit, at the position the runner reached.
    restored = make_projections()
    restored.restore(await anyio.Path(checkpoint).read_bytes())
    assert restored.position == runner.position >= seqs[-1]
    assert msgspec.msgpack.encode(restored.state()) == msgspec.msgpack.encode(
        runner.projections.state()
    )


async def test_a_restart_continues_from_the_checkpoint_to_the_rebuilt_state(
    store: EventStore, tmp_path: Path
) -> None:
    checkpoint = str(tmp_path / "p.ckpt")
    for round_ in range(3):
        await store.append(Flow(f"r{round_}").received().reserve("alpha").succeed("beta").events)
        runner = ProjectionRunner(store, make_projections(), checkpoint_path=checkpoint)
        await runner.load_checkpoint()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runner.run)
            with anyio.fail_after(5):
                await runner.wait_for(await store.last_seq())
            tasks.cancel_scope.cancel()
    rebuilt = make_projections()
    for s in read_log(tmp_path / "events.db"):
        rebuilt.apply(s)
    assert msgspec.msgpack.encode(rebuilt.state()) == msgspec.msgpack.encode(
        runner.projections.state()
    )


async def test_a_torn_checkpoint_means_a_rebuild(store: EventStore, tmp_path: Path) -> None:
    await store.append(Flow("r").received().reserve("alpha").succeed("alpha").events)
    checkpoint = tmp_path / "p.ckpt"
    checkpoint.write_bytes(b"\x93not a checkpoint")
    runner = ProjectionRunner(store, make_projections(), checkpoint_path=str(checkpoint))
    await runner.load_checkpoint()
    assert runner.position == 0
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run)
        with anyio.fail_after(5):
            await runner.wait_for(await store.last_seq())
        tasks.cancel_scope.cancel()
    [(_, total)] = runner.projections.usage.query(by=())
    assert total.requests == 1


def test_an_event_seen_twice_is_folded_once() -> None:
    projections = make_projections()
    events = [StoredEvent(i, e) for i, e in enumerate(breaker_trip("r"), 1)]
    first = [projections.apply(s) for s in events]
    again = [projections.apply(s) for s in events]
    assert any(first) and not any(again)
    [(_, total)] = projections.usage.query(by=())
    assert total.requests == 1


async def test_old_alerts_are_folded_but_not_announced_again(store: EventStore) -> None:
    await store.append(breaker_trip("long-ago"))  # dated 2026-11-22 23:00
    runner = ProjectionRunner(
        store, make_projections(), checkpoint_path=None, announce_horizon_s=-(10**10)
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run)
        with anyio.fail_after(5):
            await runner.wait_for(await store.last_seq())
        tasks.cancel_scope.cancel()
    assert [a.alert for a in runner.projections.alerts.active()] == ["breaker_open"]
    assert not any(isinstance(s.event, AlertRaised) for s in await store.read(0, 1000))


async def test_a_checkpoint_of_another_log_is_not_continued(
    store: EventStore, tmp_path: Path
) -> None:
    other = make_projections()
    for i, e in enumerate(Flow("elsewhere").received().reserve("alpha").succeed("alpha").events):
        other.apply(StoredEvent(i + 1, e))
    checkpoint = tmp_path / "p.ckpt"
    checkpoint.write_bytes(other.checkpoint())
    await store.append(Flow("here").received().reserve("alpha").succeed("beta").events)
    runner = ProjectionRunner(store, make_projections(), checkpoint_path=str(checkpoint))
    await runner.load_checkpoint()
    assert runner.position == 0  # not continued: the rebuild starts from the first event
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run)
        with anyio.fail_after(5):
            await runner.wait_for(await store.last_seq())
        tasks.cancel_scope.cancel()
    rows = runner.projections.usage.query(by=("model",))
    assert [(g["model"], r.requests) for g, r in rows] == [("beta", 1)]


def test_a_restored_book_takes_its_limits_from_todays_config() -> None:
    before = [BudgetSpec(name="all", scope="global", period="day", limit_micros=1000)]
    after = [BudgetSpec(name="all", scope="global", period="day", limit_micros=5000)]
    book = BudgetBook(before)
    for e in Flow("r").received().reserve("alpha", amount=100).succeed("alpha", cost=60).events:
        book.apply(e)
    restored = BudgetBook.from_book_state(after, book.book_state())
    [state] = restored.snapshot().budgets
    assert (state.limit_micros, state.spent_micros) == (5000, 60)


def test_closed_reservations_are_forgotten_a_day_later_by_event_time() -> None:
    projections = make_projections()
    seq = 0
    for name in ("a", "b", "c"):
        for e in Flow(name).received().reserve("alpha").succeed("alpha").events:
            seq += 1
            projections.apply(StoredEvent(seq, e))
    assert len(projections.budgets.book_state().closed) == 3
    before = projections.budgets.snapshot()
    # Every 10,000th event, reservations closed over a day before it are dropped.
    later = Flow("d", ts_ns=T0 + 2 * 86_400 * 10**9).received().events[0]
    projections.apply(StoredEvent(10_000, later))
    assert projections.budgets.book_state().closed == []
    assert projections.budgets.snapshot() == before
