"""The JetStream event store: the shared conformance suite on a real nats-server, then what is
specific to JetStream (server restarts, reconnects, deduplication, subjects, holds)."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest
from jetstream_helpers import connect, reservation, settlement, stream_logs
from nats.aio.client import Client
from nats_server import NatsServer
from store_conformance import (
    NewLog,
    RestartServer,
    StoreConformance,
    assert_log,
    envelope,
    fallback,
    one_of_each,
    read_all,
    tailing,
)

from events import (
    BudgetLimitChanged,
    Event,
    HoldConflictError,
    JetStreamEventStore,
    StoreClosedError,
    StoreError,
    decode_event,
    encode_event,
    open_jetstream_store,
)
from events._jetstream_subjects import Subjects, token


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def new_log(nc: Client) -> NewLog:
    return stream_logs(nc)


class TestJetStreamStoreConformance(StoreConformance):
    """Runs the shared suite with the ``new_log`` fixture above."""

    @pytest.fixture
    def restart_server(self, nats_server: NatsServer) -> RestartServer:
        async def restart() -> None:
            # Same port and store directory; the client reconnects by itself.
            await anyio.to_thread.run_sync(nats_server.restart)

        return restart


# -- the stream and its subjects ----------------------------------------------------------------


async def test_stream_is_created_append_only_with_atomic_batches(nc: Client) -> None:
    async with open_jetstream_store(nc, stream="EV", replicas=1) as store:
        assert isinstance(store, JetStreamEventStore)
        await store.append(one_of_each("req-9"))
    info = await nc.jetstream().stream_info("EV")
    config = info.config
    assert config.subjects == ["tollgate.ev.>"]
    assert (config.storage, config.num_replicas) == ("file", 1)
    assert config.deny_delete and config.deny_purge and config.allow_direct
    assert config.allow_atomic
    assert config.duplicate_window == 300
    assert (config.max_msgs, config.max_bytes, config.max_age) == (-1, -1, 0)


async def test_reopening_brings_an_existing_stream_to_the_configuration(nc: Client) -> None:
    await nc.jetstream().add_stream(name="EV", subjects=["tollgate.ev.>"], duplicate_window=10)
    async with open_jetstream_store(nc, stream="EV") as store:
        assert await store.append([fallback()]) == [1]
    config = (await nc.jetstream().stream_info("EV")).config
    assert config.duplicate_window == 300
    assert config.deny_delete and config.allow_atomic


async def test_events_are_stored_under_their_subjects_with_their_ids(nc: Client) -> None:
    weird_tenant, weird_request = "acme.corp *>", ""
    events: list[Event] = [
        fallback("req-1", "acme"),
        reservation(request_id="req-1"),
        settlement("req-1"),
        fallback(weird_request, weird_tenant),
    ]
    async with open_jetstream_store(nc, stream="EV", subject_prefix="t.ev") as store:
        assert await store.append(events) == [1, 2, 3, 4]
    jsm = nc.jetstream()
    stored = [await jsm.get_msg("EV", seq) for seq in range(1, 5)]
    assert [m.subject for m in stored] == [
        "t.ev.req.acme.req-1.fallback_taken_v1",
        "t.ev.budget.hold",
        "t.ev.budget.acme.req-1.cost_settled_v1",
        f"t.ev.req.{token(weird_tenant)}.~.fallback_taken_v1",
    ]
    assert [m.headers and m.headers["Nats-Msg-Id"] for m in stored] == [e.event_id for e in events]
    assert [decode_event(m.data or b"") for m in stored] == events


def test_subject_tokens_are_safe_and_distinct() -> None:
    values = ["acme", "a.b", "a*b", "a>b", "a b", "", "~x", "é", "x" * 64, "x" * 65, "A-b_9"]
    tokens = [token(v) for v in values]
    assert len(set(tokens)) == len(values)
    for t in tokens:
        assert t and not any(c in t for c in ".*> \t\r\n")
    assert token("acme") == "acme"
    assert token("A-b_9") == "A-b_9"
    assert token("") == "~"
    with pytest.raises(ValueError, match="prefix"):
        Subjects("bad..prefix")
    with pytest.raises(ValueError, match="prefix"):
        Subjects("bad.>")


# -- reads ----------------------------------------------------------------------------------------


async def test_read_request_finds_its_events_and_its_holds(nc: Client) -> None:
    async with open_jetstream_store(nc, stream="EV") as store:
        a, b = one_of_each("req-a"), one_of_each("req-b")
        # Holds of both requests interleave on one subject between their other events.
        a.insert(3, reservation(request_id="req-a"))
        b.insert(3, reservation(request_id="req-b"))
        for pair in zip(a, b, strict=True):
            await store.append(list(pair))
        await store.append([BudgetLimitChanged(**envelope("req-a"), budget="g", limit_micros=5)])
        got = await store.read_request("req-a")
        assert [s.event for s in got] == a
        assert [s.seq for s in got] == list(range(1, 2 * len(a), 2))
        assert [s.event for s in await store.read_request("req-b")] == b
        assert await store.read_request("req-none") == []


async def test_read_request_tells_apart_ids_with_the_same_token(nc: Client) -> None:
    # Ids that are not safe tokens are hashed; the read compares the decoded ids anyway.
    async with open_jetstream_store(nc, stream="EV") as store:
        mine, other = fallback("req.1"), fallback("req 1")
        await store.append([mine, other])
        assert [s.event for s in await store.read_request("req.1")] == [mine]


async def test_reads_pages_larger_than_one_direct_get(nc: Client) -> None:
    events = [fallback() for _ in range(2500)]
    async with open_jetstream_store(nc, stream="EV") as store:
        for start in range(0, len(events), 500):
            await store.append(events[start : start + 500])
        got = await store.read(0, 2400)
        assert [s.seq for s in got] == list(range(1, 2401))
        assert_log(await read_all(store, page=5000), events)


# -- deduplication --------------------------------------------------------------------------------


async def test_a_retried_publish_is_deduplicated_by_the_server(nc: Client) -> None:
    # Another sidecar (or an earlier try whose acknowledgement was lost) already published
    # these ids: the store reports the stored seqs and stores nothing twice.
    a, b, c = fallback("req-1"), fallback("req-1"), fallback("req-2")
    async with open_jetstream_store(nc, stream="EV") as store:
        for event in (a, b):
            ack = await nc.jetstream().publish(
                store.subjects.of(event),
                encode_event(event),
                headers={"Nats-Msg-Id": event.event_id},
            )
            assert not ack.duplicate
        assert await store.append([b]) == [2]  # a plain publish, acknowledged as a duplicate
        assert await store.append([c, a, b]) == [3, 1, 2]  # a batch refused, then looked up
        assert_log(await store.read(), [a, b, c])


async def test_an_id_reused_for_another_requests_event_keeps_the_stored_one(
    nc: Client,
) -> None:
    # As in the SQLite store, the event id is the identity: the first event stored stands.
    first, fresh = fallback("req-1"), fallback("req-2")
    impostor = msgspec.structs.replace(fallback("req-2"), event_id=first.event_id)
    async with open_jetstream_store(nc, stream="EV") as store:
        await store.append([first])
        assert await store.append([fresh, impostor]) == [2, 1]
        assert_log(await store.read(), [first, fresh])


# -- server restarts and reconnects ---------------------------------------------------------------


async def test_appends_during_an_outage_wait_then_succeed(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url)
    results: list[list[int]] = []
    try:
        async with open_jetstream_store(nc, stream="EV", ack_timeout_s=0.5) as store:
            first = [fallback() for _ in range(10)]
            await store.append(first)
            nats_server.stop()
            during = [[fallback(f"req-{k}")] for k in range(20)]

            async def append(events: list[Event]) -> None:
                results.append(await store.append(events))

            async with anyio.create_task_group() as tg:
                for events in during:
                    tg.start_soon(append, events)
                await anyio.sleep(1.5)  # well past several acknowledgement timeouts
                assert results == []  # waiting, not failed and not lost
                await anyio.to_thread.run_sync(nats_server.start)
            stored = await read_all(store)
    finally:
        await nc.close()
    assert sorted(seq for r in results for seq in r) == list(range(11, 31))
    assert [s.event for s in stored[:10]] == first
    assert {s.event.event_id for s in stored[10:]} == {e[0].event_id for e in during}
    assert [s.seq for s in stored] == list(range(1, 31))


async def test_an_outage_longer_than_the_limit_fails_the_store(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url)
    try:
        async with open_jetstream_store(
            nc, stream="EV", ack_timeout_s=0.2, outage_timeout_s=1.0
        ) as store:
            acknowledged = [fallback() for _ in range(5)]
            await store.append(acknowledged)
            nats_server.stop()
            with anyio.fail_after(20), pytest.raises(StoreError) as failed:
                await store.append([fallback()])
            assert not isinstance(failed.value, StoreClosedError)
            with pytest.raises(StoreClosedError):
                await store.submit([fallback()])
            with pytest.raises(StoreClosedError):
                store.check_writable()  # what health checks see
            nats_server.start()
        async with open_jetstream_store(nc, stream="EV") as store:
            with anyio.fail_after(20):
                # Nothing acknowledged was lost; the failed append may or may not have landed.
                stored = await read_all(store)
            assert [s.event for s in stored[:5]] == acknowledged
    finally:
        await nc.close()


async def test_tail_follows_across_a_server_restart(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url)
    try:
        async with open_jetstream_store(nc, stream="EV") as store:
            before = [fallback() for _ in range(50)]
            after = [fallback() for _ in range(50)]
            await store.append(before)
            seen: list[int] = []
            async with tailing(store) as tail:
                with anyio.fail_after(30):
                    async for stored in tail:
                        seen.append(stored.seq)
                        if stored.seq == 50:
                            nats_server.restart()
                            await store.append(after)
                        if stored.seq == 100:
                            break
            assert seen == list(range(1, 101))
            assert_log(await read_all(store), [*before, *after])
    finally:
        await nc.close()


async def test_two_stores_on_one_stream_share_one_sequence(nats_server: NatsServer) -> None:
    nc1, nc2 = await connect(nats_server.url), await connect(nats_server.url)
    try:
        async with (
            open_jetstream_store(nc1, stream="EV") as one,
            open_jetstream_store(nc2, stream="EV") as two,
        ):
            seen: list[Event] = []

            async def watch() -> None:
                async with tailing(one) as tail:
                    async for stored in tail:
                        seen.append(stored.event)
                        if len(seen) == 200:
                            return

            async def write(store: JetStreamEventStore, k: int) -> None:
                for _ in range(20):
                    await store.append([fallback(f"req-{k}"), fallback(f"req-{k}")])

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    for k in range(5):
                        tg.start_soon(write, one if k % 2 else two, k)
            stored = await read_all(two)
        assert [s.seq for s in stored] == list(range(1, 201))
        assert seen == [s.event for s in stored]
        for k in range(5):
            mine = [s.seq for s in stored if s.event.request_id == f"req-{k}"]
            assert len(mine) == 40
    finally:
        await nc1.close()
        await nc2.close()


# -- conditional holds ----------------------------------------------------------------------------


async def test_holds_append_only_after_the_expected_hold(nc: Client) -> None:
    async with open_jetstream_store(nc, stream="EV") as store:
        assert await store.last_hold_seq() == 0
        await store.append([fallback()])
        assert await store.append_holds([reservation(request_id="r1")], after=0) == [2]
        await store.append([settlement("r1")])  # not a hold: the boundary does not move
        assert await store.last_hold_seq() == 2
        with pytest.raises(HoldConflictError) as conflict:
            await store.append_holds([reservation(request_id="r2")], after=0)
        assert (conflict.value.expected, conflict.value.newest) == (0, 2)
        two = [reservation(request_id="r3"), reservation(request_id="r4")]
        assert await store.append_holds(two, after=2) == [4, 5]
        with pytest.raises(HoldConflictError):
            await store.append_holds([reservation(request_id="r5")] * 1, after=2)
        assert [s.seq for s in await store.read_holds(0)] == [2, 4, 5]
        assert [s.event for s in await store.read_holds(2)] == two
        # A refused hold takes nothing else with it, and the store keeps working.
        assert await store.append([fallback()]) == [6]
        with pytest.raises(ValueError, match="budget holds"):
            await store.append_holds([fallback()], after=5)


async def test_a_hold_keeps_its_order_with_the_calls_queued_before_it(nc: Client) -> None:
    async with open_jetstream_store(nc, stream="EV") as store:
        received = fallback("r1")
        await store.submit([received])
        seqs = await store.append_holds([reservation(request_id="r1")], after=0)
        await store.submit([settlement("r1")])
        assert seqs == [2]
        stored = await read_all(store)
        assert [type(s.event).__name__ for s in stored] == [
            "FallbackTaken",
            "BudgetReserved",
            "CostSettled",
        ]


async def test_a_hold_whose_ack_was_lost_is_recognised_as_its_own(
    nats_server: NatsServer,
) -> None:
    # Reference 2.3: on a single server a retried conditional publish whose first try landed
    # is refused (10071), not deduplicated. Freeze the server so that the first try's
    # acknowledgement comes too late and the store publishes again; both tries then reach
    # the server, in order, when it resumes.
    nc = await connect(nats_server.url)
    process = nats_server._process
    assert process is not None
    try:
        async with open_jetstream_store(nc, stream="EV", ack_timeout_s=0.3) as store:
            hold = reservation(request_id="r1")
            results: list[list[int]] = []

            async def append() -> None:
                results.append(await store.append_holds([hold], after=0))

            async with anyio.create_task_group() as tg:
                process.send_signal(signal.SIGSTOP)
                try:
                    tg.start_soon(append)
                    await anyio.sleep(1.0)  # a few acknowledgement timeouts: retried
                finally:
                    process.send_signal(signal.SIGCONT)
            assert results == [[1]]
            assert [s.event for s in await read_all(store)] == [hold]
            with pytest.raises(HoldConflictError):
                await store.append_holds([reservation(request_id="r2")], after=0)
    finally:
        await nc.close()


async def test_follow_delivers_the_budget_events_of_every_writer(nats_server: NatsServer) -> None:
    nc1, nc2 = await connect(nats_server.url), await connect(nats_server.url)
    try:
        async with (
            open_jetstream_store(nc1, stream="EV") as one,
            open_jetstream_store(nc2, stream="EV") as two,
        ):
            await one.append([fallback("r0"), reservation(request_id="r0")])
            caught_up = anyio.Event()
            seen: list[tuple[int, str]] = []

            async def watch() -> None:
                follow = one.follow([one.subjects.budget], 0, caught_up=caught_up)
                async with contextlib.aclosing(follow):
                    async for stored in follow:
                        seen.append((stored.seq, type(stored.event).__name__))
                        if len(seen) == 3:
                            return

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    await caught_up.wait()
                    assert seen == [(2, "BudgetReserved")]
                    await two.append([fallback("r1"), settlement("r0")])
                    await two.append_holds([reservation(request_id="r1")], after=2)
            assert seen == [(2, "BudgetReserved"), (4, "CostSettled"), (5, "BudgetReserved")]
    finally:
        await nc1.close()
        await nc2.close()


# -- bad input ------------------------------------------------------------------------------------


async def test_refuses_what_the_server_could_not_take(nc: Client) -> None:
    # Beyond the bad input every store refuses (the conformance suite): the server's limits.
    async with open_jetstream_store(nc, stream="EV") as store:
        huge = msgspec.structs.replace(fallback(), from_model="x" * (nc.max_payload + 1))
        with pytest.raises(ValueError, match="larger than the server takes"):
            await store.append([huge])
        with pytest.raises(ValueError, match="atomic"):
            await store.append([fallback() for _ in range(1001)])
        # Bad input is refused before it reaches the writer: the store still works.
        assert await store.append([fallback()]) == [1]


async def test_rejects_bad_options(nc: Client) -> None:
    for options, match in [
        ({"queue_size": 0}, "queue_size"),
        ({"replicas": 2}, "replicas"),
        ({"stream": "a.b"}, "stream name"),
        ({"subject_prefix": "a.*"}, "prefix"),
        ({"ack_timeout_s": 0}, "ack_timeout_s"),
    ]:
        with pytest.raises(ValueError, match=match):
            async with open_jetstream_store(nc, **options):
                pass


async def test_the_log_holds_no_secrets_in_headers(nc: Client) -> None:
    # Only the message id and the batch headers travel with an event.
    async with open_jetstream_store(nc, stream="EV") as store:
        await store.append([fallback(), fallback()])
    message = await nc.jetstream().get_msg("EV", 1)
    headers = dict(message.headers or {})
    assert set(headers) <= {"Nats-Msg-Id", "Nats-Batch-Id", "Nats-Batch-Sequence"}
    assert json.dumps(headers)  # plain strings
