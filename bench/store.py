"""Throughput of the SQLite event store: group-commit appends, fire-and-forget submits, replay.

    python bench/store.py [--events 20000] [--producers 1,16,256] [--repeat 3]

Each run uses a fresh file in a temporary directory. "append" runs have P producers, each
appending one event at a time and awaiting its commit (the request path). "submit" has one
producer queueing one event per call, timed until the store has closed (everything committed).
"replay" reads the whole log back in keyset pages of 1000 and decodes it. CPU is process time
(event loop plus SQLite threads) per event. Results are medians over the repeats and are written
to bench/results/store.json.
"""

# ruff: noqa: E402 (the imports that follow the import path's fix)
from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout: the repository's root first on the import path (bench._common and the
# project's packages), bench/ off it (bench/nats.py would shadow the nats package).
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import sqlite3
import tempfile
from typing import Any

import anyio

from bench import _common as common
from events import Event, open_sqlite_store

RESULTS = common.RESULTS_DIR / "store.json"


async def run_append(path: Path, events: list[Event], producers: int) -> dict[str, float]:
    async with open_sqlite_store(path) as store:
        return await common.timed_appends(store, events, producers)


async def run_submit(path: Path, events: list[Event]) -> dict[str, float]:
    # Timed until the store has closed: everything committed.
    with common.Stopwatch() as watch:
        async with open_sqlite_store(path) as store:
            for event in events:
                await store.submit([event])
    return watch.rates(len(events))


async def run_replay(path: Path) -> dict[str, float]:
    async with open_sqlite_store(path) as store:
        return await common.timed_read(store)


async def main() -> None:
    args = common.throughput_parser(__doc__, events=20_000).parse_args()
    events = common.make_events(args.events)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = (Path(tmp) / f"events-{n}.db" for n in range(10**6))
        for producers in common.producer_counts(args.producers):
            runs = [await run_append(next(files), events, producers) for _ in range(args.repeat)]
            common.keep_median(results, f"append_{producers}_producers", runs)
        submit_runs, replay_runs = [], []
        for _ in range(args.repeat):
            # Replay reads back the log that the submit run wrote.
            path = next(files)
            submit_runs.append(await run_submit(path, events))
            replay_runs.append(await run_replay(path))
        common.keep_median(results, "submit_1_producer", submit_runs)
        common.keep_median(results, "replay_pages_of_1000", replay_runs)
    record = common.throughput_record(
        "bench/store.py",
        args,
        {"sqlite": sqlite3.sqlite_version},
        "WAL, synchronous=NORMAL, default queue_size/max_batch (1024/1024)",
        results,
    )
    common.write_results(RESULTS, record)


if __name__ == "__main__":
    anyio.run(main)
