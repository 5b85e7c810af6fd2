"""Throughput of the SQLite event store: group-commit appends, fire-and-forget submits, replay.

    python bench/store.py [--events 20000] [--producers 1,16,256] [--repeat 3]

Each run uses a fresh file in a temporary directory. "append" runs have P producers, each
appending one event at a time and awaiting its commit (the request path). "submit" has one
producer queueing one event per call, timed until the store has closed (everything committed).
"replay" reads the whole log back in keyset pages of 1000 and decodes it. CPU is process time
(event loop plus SQLite threads) per event. Results are medians over the repeats and are written
to bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

# Runnable from a checkout without an installed tollgate (`make` installs it editable).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events import AttemptSucceeded, Event, TokenUsage, new_id, open_sqlite_store

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"


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


async def run_append(path: Path, events: list[Event], producers: int) -> dict[str, float]:
    latencies: list[float] = []
    shares = [events[k::producers] for k in range(producers)]
    async with open_sqlite_store(path) as store:

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
    latencies.sort()
    return {
        "events_per_s": len(events) / wall,
        "cpu_us_per_event": cpu / len(events) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


async def run_submit(path: Path, events: list[Event]) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    async with open_sqlite_store(path) as store:
        for event in events:
            await store.submit([event])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"events_per_s": len(events) / wall, "cpu_us_per_event": cpu / len(events) * 1e6}


async def run_replay(path: Path) -> dict[str, float]:
    async with open_sqlite_store(path) as store:
        count, after = 0, 0
        wall = time.perf_counter()
        while page := await store.read(after, 1000):
            count += len(page)
            after = page[-1].seq
        wall = time.perf_counter() - wall
    return {"events_per_s": count / wall, "events": count}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--producers", default="1,16,256")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = (Path(tmp) / f"events-{n}.db" for n in range(10**6))
        for producers in [int(p) for p in args.producers.split(",")]:
            runs = [await run_append(next(files), events, producers) for _ in range(args.repeat)]
            results[f"append_{producers}_producers"] = median(runs)
            print(f"append, {producers:>3} producers: {results[f'append_{producers}_producers']}")
        submit_runs, replay_runs = [], []
        for _ in range(args.repeat):
            path = next(files)
            submit_runs.append(await run_submit(path, events))
            replay_runs.append(await run_replay(path))
        results["submit_1_producer"] = median(submit_runs)
        results["replay_pages_of_1000"] = median(replay_runs)
        print(f"submit, 1 producer: {results['submit_1_producer']}")
        print(f"replay: {results['replay_pages_of_1000']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "bench/store.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "events_per_run": args.events,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "settings": "WAL, synchronous=NORMAL, default queue_size/max_batch (1024/1024)",
        "results": results,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    anyio.run(main)
