"""Replay speed and memory: a log of N events (1,000,000 by default) folded into the projections.

    python bench/replay.py [--events 1000000] [--keep PATH] [--repeat 3]

The log is written once through the SQLite store (request flows shaped like the executor's:
received, route, reservation, attempts with failures, retries and fallbacks, settlements,
completion), over 20 tenants, 8 tasks, 8 models on 4 providers and 30 days: up to ~38,000
usage rows, so most rows see several requests, as in a real deployment. Each replay then runs in
a fresh process, so its peak RSS is its own:

* ``usage``: the usage view alone, reading only the event types it folds (``tollgate replay
  --only-usage``); events/s counts every event in the log.
* ``all``: usage, alerts and budgets together, every event decoded (``tollgate replay``).

Baseline in the same run: ``decode``, reading and decoding every event without folding, the floor
any replay pays. Targets: ≥ 300,000 events/s and < 500 MB for the usage replay. Results go to
bench/results/replay.json.
"""

# ruff: noqa: E402 (the imports that follow the import path's fix)
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

# Runnable from a checkout: the repository's root first on the import path, bench/ off it
# (bench/nats.py would shadow the nats package).
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench import _common as common
from events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    DroppedCandidate,
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    TokenUsage,
    log_position,
    open_sqlite_store,
    read_log,
)
from projections import USAGE_EVENT_TYPES, AlertPolicy, Projections, UsageView

RESULTS = common.RESULTS_DIR / "replay.json"
DAY_NS = 86_400 * 10**9
START_NS = 1_793_577_600 * 10**9  # 2026-11-01T00:00:00Z
MODELS = [(f"model-{i}", f"provider-{i % 4}", f"class-{i % 3}") for i in range(8)]
TENANTS, TASKS, DAYS = 20, 8, 30


def request_flow(rng: random.Random, n: int) -> list[Event]:
    """One request's events, as the executor writes them."""
    request_id = f"req-{n:09d}"
    ts = START_NS + (n * 2_591_000_000_000) % (DAYS * DAY_NS)
    env = {
        "request_id": request_id,
        "tenant": f"tenant-{rng.randrange(TENANTS)}",
        "task": f"task-{rng.randrange(TASKS)}",
        "config_hash": "9f2c1e07aa31",
    }
    seq = iter(range(100))

    def e(offset_ms: int) -> dict[str, Any]:
        return {**env, "event_id": f"{request_id}-{next(seq)}", "ts_ns": ts + offset_ms * 10**6}

    first, second = rng.sample(MODELS, 2)
    usage = TokenUsage(input_tokens=rng.randrange(50, 4000), output_tokens=rng.randrange(1, 800))
    events: list[Event] = [
        RequestReceived(
            **e(0),
            transport="unix",
            model_requested="tollgate",
            stream=True,
            message_count=3,
            prompt_chars=2400,
            prompt_sha256="ab" * 32,
            max_tokens=1024,
        ),
        RouteDecided(
            **e(0),
            route="chat",
            model_class=first[2],
            selector="task",
            chain=[first[0], second[0]],
            dropped=[DroppedCandidate("model-7", "provider-3", "context_window")],
            input_tokens_estimate=600,
            max_tokens=1024,
        ),
        BudgetReserved(
            **e(1),
            reservation_id=request_id,
            budgets=["global/-/2026-11", f"tenant/{env['tenant']}/2026-11"],
            amount_micros=25_000,
            expires_at_ns=ts + 90 * 10**9,
            model=first[0],
            provider=first[1],
        ),
        AttemptStarted(**e(1), attempt=1, model=first[0], provider=first[1], upstream_model="x"),
    ]
    served, attempt = first, 1
    roll = rng.random()
    if roll < 0.15:  # a failure: retried on the same model, or a fallback
        events.append(
            AttemptFailed(
                **e(300),
                attempt=1,
                model=first[0],
                provider=first[1],
                error_class="overloaded" if roll < 0.08 else "rate_limited",
                status=503,
                provider_code=None,
                retry_after_ms=None,
                message="overloaded",
                mid_stream=False,
                chunks_delivered=0,
                latency_ns=300_000_000,
            )
        )
        attempt = 2
        if roll < 0.08:
            events.append(
                RetryScheduled(
                    **e(300),
                    attempt=1,
                    model=first[0],
                    provider=first[1],
                    error_class="overloaded",
                    wait_ms=50,
                )
            )
        else:
            served = second
            events.append(
                FallbackTaken(
                    **e(300), from_model=first[0], to_model=second[0], error_class="rate_limited"
                )
            )
            events.append(
                BudgetToppedUp(
                    **e(301),
                    reservation_id=request_id,
                    amount_micros=5_000,
                    model=second[0],
                    provider=second[1],
                )
            )
        events.append(
            AttemptStarted(
                **e(350), attempt=2, model=served[0], provider=served[1], upstream_model="x"
            )
        )
    if rng.random() < 0.02:
        events.append(
            RequestFailed(
                **e(900),
                error_type="all_candidates_failed",
                message="every candidate failed",
                attempts=attempt,
                latency_ns=900_000_000,
            )
        )
        return events
    latency = rng.randrange(200, 5000) * 10**6
    events += [
        AttemptSucceeded(
            **e(latency // 10**6),
            attempt=attempt,
            model=served[0],
            provider=served[1],
            status=200,
            latency_ns=latency,
            ttft_ns=latency // 5,
            ttlt_ns=latency,
            chunks=40,
            finish_reason="stop",
            usage=usage,
        ),
        CostSettled(
            **e(latency // 10**6),
            reservation_id=request_id,
            attempt=attempt,
            model=served[0],
            provider=served[1],
            usage=usage,
            cost_micros=rng.randrange(10, 20_000),
            final=True,
        ),
        RequestCompleted(
            **e(latency // 10**6),
            model=served[0],
            provider=served[1],
            attempts=attempt,
            fallbacks=int(served is second),
            finish_reason="stop",
            usage=usage,
            latency_ns=latency,
            ttft_ns=latency // 5,
            ttlt_ns=latency,
            completion_chars=1800,
            completion_sha256="cd" * 32,
            cost_micros=1000,
        ),
    ]
    return events


async def write_log(path: str, target: int) -> int:
    rng = random.Random(2026)
    written = n = 0
    async with open_sqlite_store(path, queue_size=64) as store:
        batch: list[Event] = []
        while written < target:
            flow = request_flow(rng, n)
            n += 1
            batch += flow
            written += len(flow)
            if len(batch) >= 2000:
                await store.append(batch)
                batch = []
        if batch:
            await store.append(batch)
    return written


def replay(path: str, mode: str) -> dict[str, Any]:
    """Runs in its own process (``--replay``): fold the log, report rate and peak RSS."""
    total = log_position(path)
    started = time.perf_counter()
    folded = 0
    if mode == "decode":
        for _ in read_log(path):
            folded += 1
    elif mode == "usage":
        view = UsageView()
        for stored in read_log(path, types=USAGE_EVENT_TYPES):
            view.apply(stored.event)
            folded += 1
    else:
        projections = Projections(budget_specs=[], alert_policy=AlertPolicy(), primary_models={})
        for stored in read_log(path):
            projections.apply(stored)
            folded += 1
    elapsed = time.perf_counter() - started
    return {
        "mode": mode,
        "events": total,
        "folded": folded,
        "seconds": round(elapsed, 3),
        "events_per_s": round(total / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=common.positive, default=1_000_000)
    parser.add_argument("--keep", help="write (or reuse) the log at this path")
    parser.add_argument(
        "--repeat", type=common.positive, default=3, help="rounds of replays (median)"
    )
    parser.add_argument("--replay", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(replay(*args.replay)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "replay.db")
        if not os.path.exists(path):
            started = time.perf_counter()
            written = anyio.run(write_log, path, args.events, backend="asyncio")
            print(f"wrote {written:,} events in {time.perf_counter() - started:.1f} s")
        # Rounds alternate the modes, so drift on a noisy machine hits them alike; each mode's
        # figure is its median round.
        rounds: dict[str, list[dict[str, Any]]] = {"decode": [], "usage": [], "all": []}
        for _ in range(args.repeat):
            for mode, results in rounds.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--replay", path, mode],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results.append(json.loads(out))
    runs = []
    for mode, results in rounds.items():
        run = sorted(results, key=lambda r: r["events_per_s"])[len(results) // 2]
        run["events_per_s_rounds"] = [r["events_per_s"] for r in results]
        runs.append(run)
        print(
            f"{mode:<7} {run['events']:>10,} events ({run['folded']:,} folded) "
            f"in {run['seconds']:6.2f} s: {run['events_per_s']:>9,} events/s (median of "
            f"{len(results)}: {', '.join(f'{r:,}' for r in run['events_per_s_rounds'])}), "
            f"peak RSS {run['peak_rss_mb']} MB"
        )
    usage = next(r for r in runs if r["mode"] == "usage")
    verdict = {
        "events_per_s_target": 300_000,
        "peak_rss_mb_target": 500,
        "met": usage["events_per_s"] >= 300_000 and usage["peak_rss_mb"] < 500,
    }
    met = "met" if verdict["met"] else "NOT met"
    print(f"usage replay target (>= 300,000 events/s, < 500 MB): {met}")
    common.write_results(
        RESULTS,
        {
            "when": common.utc_now(),
            "git_commit": common.git_commit(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "runs": runs,
            "target": verdict,
        },
    )


if __name__ == "__main__":
    main()
