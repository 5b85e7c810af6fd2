"""The sidecar's overhead: the same call made directly to the fake provider and through tollgate.

    python bench/overhead.py [--quick] [--requests N] [--rounds R] [--output PATH]

One run starts the fake provider (``tollgate fakes``) and two sidecars routing ``task:chat`` to
it (``tollgate serve``), each in its own process: one without a budget, and one with the same
config plus a huge global budget, so that every request reserves its worst-case price (a durable
SQLite append before the provider call) and settles after, and nothing is refused. It measures
twelve cells: direct, sidecar and budget (the sidecar with a budget), non-streaming and
streaming, at concurrency 1 and 50. The fake answers 20 tokens in 20 chunks with no delays, so
everything measured is overhead. For every cell: p50/p99 latency to the last byte, time to the
first content delta (streams), requests/s, and the CPU time per request of the sidecar, the fake
and this load generator (utime+stime from /proc); for sidecar cells also the sidecar's RSS. The
derived figures (added latency, sidecar CPU per request, and the reservation overhead: budget
minus sidecar CPU per request) are checked against the targets of the issues. Results: a table
on stdout and bench/results/overhead.json.

The three sides are interleaved in rounds (D S B, B S D, D S B, ...) so that drift on a noisy
machine falls on all of them alike. The exit status is 0 when every request succeeded, even if a
target is missed: this is a measurement, not a test. It is 1 on any error.
"""

# ruff: noqa: E402 (the imports that follow the import path's fix)
from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout: the repository's root first on the import path (bench._common and the
# project's packages), bench/ off it (bench/nats.py would shadow the nats package).
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import uvloop

from bench import _common as common

RESULTS = common.RESULTS_DIR / "overhead.json"

# Targets from the issue.
CPU_NON_STREAM_MS = 0.5
CPU_STREAM_MS = 1.0
ADDED_P50_C1_MS = 1.0
# "The reservation adds no more than 0.2 ms of sidecar CPU per request": budget - sidecar.
RESERVATION_CPU_MS = 0.2

# The budget sidecar's addition: one global budget that no run comes near (a request's worst
# case is about $0.0003), so every request is reserved and settled and none is refused.
BUDGET_TOML = """
[budgets.all]
scope = "global"
period = "day"
limit_usd = 1000000.0
"""
RESERVED_EVENT = "budget_reserved.v1"

Side = Literal["direct", "sidecar", "budget"]
SidecarSide = Literal["sidecar", "budget"]
SIDES: tuple[Side, ...] = ("direct", "sidecar", "budget")
SIDECARS: tuple[SidecarSide, ...] = ("sidecar", "budget")
# How a sidecar's own figures are named in the record (sidecar_rss_mib_idle, ...).
PREFIX: dict[SidecarSide, str] = {"sidecar": "sidecar", "budget": "budget_sidecar"}


@dataclass
class OverheadBatch(common.Batch):
    sidecar_loop_cpu_s: float = 0.0
    # The sidecar that this cell doesn't use (none for a direct cell): should be ~0.
    idle_sidecar_cpu_s: float = 0.0
    fake_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    rss_kib: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Sidecar:
    pid: int
    socket_path: str
    workdir: Path


@dataclass(frozen=True)
class Servers:
    fake_pid: int
    fake_url: str
    sidecars: dict[SidecarSide, Sidecar]


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """The fake and both sidecars, stopped on the way out whatever happens."""
    with common.Children() as children:
        fake_pid, fake_url = common.start_fake(children, workdir)
        started = {
            name: common.start_sidecar(
                children, workdir / name, fake_url, BUDGET_TOML if name == "budget" else ""
            )
            for name in SIDECARS
        }
        sidecars = {
            name: Sidecar(proc.pid, common.wait_for_sidecar(proc, workdir / name), workdir / name)
            for name, proc in started.items()
        }
        yield Servers(fake_pid, fake_url, sidecars)


# --- Measuring ---------------------------------------------------------------------------------


async def settled_sidecars(servers: Servers) -> dict[SidecarSide, tuple[float, float]]:
    settled = await asyncio.gather(
        *(common.settled_cpu_seconds(servers.sidecars[name].pid) for name in SIDECARS)
    )
    return dict(zip(SIDECARS, settled, strict=True))


async def measure_group(
    servers: Servers, plan: common.Plan, stream: bool, concurrency: int
) -> dict[Side, OverheadBatch]:
    """The three sides of one (stream, concurrency) pair, interleaved D S B, B S D, ..."""
    # One keep-alive pool per side, as many connections as workers: no connection set-up
    # inside the measurements.
    sessions: dict[Side, aiohttp.ClientSession] = {
        "direct": common.http_session(aiohttp.TCPConnector(limit=concurrency)),
    }
    for name in SIDECARS:
        socket_path = servers.sidecars[name].socket_path
        sessions[name] = common.http_session(
            aiohttp.UnixConnector(path=socket_path, limit=concurrency)
        )
    batches: dict[Side, OverheadBatch] = {side: OverheadBatch() for side in SIDES}
    async with contextlib.AsyncExitStack() as stack:
        ones: dict[Side, common.OneRequest] = {}
        for side, session in sessions.items():
            await stack.enter_async_context(session)
            # The fake's model straight from the fake, or the route to it through a sidecar.
            url, model = (
                (f"{servers.fake_url}/chat/completions", common.MODEL)
                if side == "direct"
                else (common.SIDECAR_URL, "task:chat")
            )
            ones[side] = common.http_request(
                session, url, common.request_body(model, stream), stream
            )
        await common.warm_up(ones, concurrency, plan.warmup)
        for side, count in common.schedule(SIDES, plan.requests[concurrency], plan.rounds):
            batch = batches[side]
            before = await settled_sidecars(servers)
            fake0 = common.cpu_seconds(servers.fake_pid)
            own0 = time.process_time()
            await common.run_requests(ones[side], concurrency, count, batch)
            batch.loadgen_cpu_s += time.process_time() - own0
            batch.fake_cpu_s += common.cpu_seconds(servers.fake_pid) - fake0
            after = await settled_sidecars(servers)
            used = 0.0
            for name in SIDECARS:
                total = after[name][0] - before[name][0]
                loop = after[name][1] - before[name][1]
                if side == "direct" or side == name:
                    # A direct cell counts both sidecars: a check that nothing else runs.
                    used += total
                    batch.sidecar_loop_cpu_s += loop
                else:
                    batch.idle_sidecar_cpu_s += total
            batch.add_sidecar_cpu(used, count)
            measured: SidecarSide = "sidecar" if side == "direct" else side
            batch.rss_kib.append(common.status_kib(servers.sidecars[measured].pid, "VmRSS"))
    return batches


async def measure_cells(servers: Servers, plan: common.Plan) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for stream, concurrency in common.groups(plan):
        batches = await measure_group(servers, plan, stream, concurrency)
        for side in SIDES:
            name = common.cell_name(side, stream, concurrency)
            cells[name] = cell_figures(batches[side], side, stream, concurrency)
    return cells


def cell_figures(
    batch: OverheadBatch, side: Side, stream: bool, concurrency: int
) -> dict[str, Any]:
    """The cell's figures. For a direct cell the sidecar's CPU (both sidecars') should be ~0: a
    check that nothing else runs."""
    return {
        "side": side,
        "stream": stream,
        "concurrency": concurrency,
        **common.batch_figures(batch),
        "sidecar_loop_thread_cpu_ms_per_request": common.per_request_ms(
            batch, batch.sidecar_loop_cpu_s
        ),
        "sidecar_other_threads_cpu_ms_per_request": common.per_request_ms(
            batch, batch.sidecar_cpu_s - batch.sidecar_loop_cpu_s
        ),
        # The other sidecar, idle during this cell (none for direct cells): should be ~0.
        "idle_sidecar_cpu_ms_per_request": common.per_request_ms(batch, batch.idle_sidecar_cpu_s),
        "fake_cpu_ms_per_request": common.per_request_ms(batch, batch.fake_cpu_s),
        "loadgen_cpu_ms_per_request": common.per_request_ms(batch, batch.loadgen_cpu_s),
        "sidecar_rss_mib_after": round(batch.rss_kib[-1] / 1024, 1) if batch.rss_kib else None,
    }


def logged_events(workdir: Path) -> dict[str, int]:
    """The number of events of each type in a sidecar's event log (read once it has stopped)."""
    path = workdir / "events.db"
    if not path.exists():
        raise common.BenchError(f"no event log at {path}")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
        return {str(kind): int(count) for kind, count in rows}


def check_reservations(events: dict[SidecarSide, dict[str, int]], requests: int) -> None:
    """The budget cells measure nothing unless the budget sidecar reserved for every request
    and the other sidecar for none."""
    reserved = {name: events[name].get(RESERVED_EVENT, 0) for name in SIDECARS}
    if reserved["budget"] < requests or reserved["sidecar"]:
        raise common.BenchError(
            f"expected {requests} reservations from the budget sidecar and none from the other,"
            f" found {reserved['budget']} and {reserved['sidecar']}"
        )


# --- Figures -----------------------------------------------------------------------------------


def derive(cells: dict[str, dict[str, Any]], concurrencies: list[int]) -> dict[str, Any]:
    added: dict[str, dict[str, float | None]] = {}
    added_budget: dict[str, dict[str, float | None]] = {}
    cpu: dict[str, float] = {}
    cpu_budget: dict[str, float] = {}
    reservation: dict[str, dict[str, Any]] = {}
    for stream in (False, True):
        for c in concurrencies:
            direct = cells[common.cell_name("direct", stream, c)]
            sidecar = cells[common.cell_name("sidecar", stream, c)]
            budget = cells[common.cell_name("budget", stream, c)]
            key = common.group_key(stream, c)

            latencies = ("p50_ms", "p99_ms", "ttft_p50_ms")
            added[key] = {m: common.difference(sidecar[m], direct[m]) for m in latencies}
            added_budget[key] = {m: common.difference(budget[m], direct[m]) for m in latencies}
            cpu[key] = sidecar["sidecar_cpu_ms_per_request"]
            cpu_budget[key] = budget["sidecar_cpu_ms_per_request"]
            # What the budget costs: the same requests through the two sidecars, same rounds.
            reservation[key] = {
                "sidecar_cpu_ms_per_request": common.difference(
                    budget["sidecar_cpu_ms_per_request"], sidecar["sidecar_cpu_ms_per_request"]
                ),
                "loop_thread_cpu_ms_per_request": common.difference(
                    budget["sidecar_loop_thread_cpu_ms_per_request"],
                    sidecar["sidecar_loop_thread_cpu_ms_per_request"],
                ),
                "sqlite_threads_cpu_ms_per_request": common.difference(
                    budget["sidecar_other_threads_cpu_ms_per_request"],
                    sidecar["sidecar_other_threads_cpu_ms_per_request"],
                ),
                # Round r of both cells ran back to back: the spread of these differences
                # shows how far the figure above can be trusted.
                "sidecar_cpu_ms_per_request_by_round": [
                    common.difference(b, s)
                    for b, s in zip(
                        budget["sidecar_cpu_ms_per_request_by_round"],
                        sidecar["sidecar_cpu_ms_per_request_by_round"],
                        strict=True,
                    )
                ],
                "p50_ms": common.difference(budget["p50_ms"], sidecar["p50_ms"]),
            }
    return {
        "added_latency_ms": added,
        "sidecar_cpu_ms_per_request": cpu,
        "budget_added_latency_ms": added_budget,
        "budget_sidecar_cpu_ms_per_request": cpu_budget,
        "reservation_overhead_ms": reservation,
    }


def check_targets(derived: dict[str, Any], concurrencies: list[int]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, limit: float) -> None:
        met = value is not None and value <= limit
        targets.append({"target": name, "value_ms": value, "limit_ms": limit, "met": met})

    cpu = derived["sidecar_cpu_ms_per_request"]
    for c in concurrencies:
        target(
            f"sidecar CPU per non-streaming request, c={c}",
            cpu[f"non_stream_c{c}"],
            CPU_NON_STREAM_MS,
        )
    for c in concurrencies:
        target(f"sidecar CPU per 20-chunk stream, c={c}", cpu[f"stream_c{c}"], CPU_STREAM_MS)
    if 1 in concurrencies:
        added = derived["added_latency_ms"]
        for kind in ("non_stream", "stream"):
            label = kind.replace("_", "-")
            target(
                f"added p50 latency, {label}, c=1", added[f"{kind}_c1"]["p50_ms"], ADDED_P50_C1_MS
            )
    reservation = derived["reservation_overhead_ms"]
    for kind in ("non_stream", "stream"):
        for c in concurrencies:
            label = kind.replace("_", "-")
            target(
                f"reservation CPU (budget - sidecar), {label}, c={c}",
                reservation[f"{kind}_c{c}"]["sidecar_cpu_ms_per_request"],
                RESERVATION_CPU_MS,
            )
    if 1 in concurrencies:
        added = derived["budget_added_latency_ms"]
        for kind in ("non_stream", "stream"):
            label = kind.replace("_", "-")
            target(
                f"added p50 latency with a budget, {label}, c=1",
                added[f"{kind}_c1"]["p50_ms"],
                ADDED_P50_C1_MS,
            )
    return targets


def print_report(record: dict[str, Any]) -> None:
    fmt, label = common.fmt, common.label
    cells, derived = record["cells"], record["derived"]
    header = [
        *common.LATENCY_HEADER,
        "loop thread",
        "SQLite threads",
        "fake CPU",
        "loadgen CPU",
        "RSS MiB",
    ]
    rows = [
        [
            *common.latency_columns(name, cell),
            fmt(cell["sidecar_loop_thread_cpu_ms_per_request"], 3),
            fmt(cell["sidecar_other_threads_cpu_ms_per_request"], 3),
            fmt(cell["fake_cpu_ms_per_request"], 3),
            fmt(cell["loadgen_cpu_ms_per_request"], 3),
            fmt(cell["sidecar_rss_mib_after"], 1) if cell["side"] != "direct" else "",
        ]
        for name, cell in cells.items()
    ]
    common.print_table(header, rows)
    for title, figures in (
        ("added by the sidecar (sidecar - direct, same run):", derived["added_latency_ms"]),
        (
            "added by the sidecar with a budget (budget - direct, same run):",
            derived["budget_added_latency_ms"],
        ),
    ):
        print(f"\n{title}")
        for key, added in figures.items():
            ttft = (
                f", TTFT p50 {fmt(added['ttft_p50_ms'], 3)} ms" if key.startswith("stream") else ""
            )
            print(
                f"  {label(key):<16} p50 {fmt(added['p50_ms'], 3)} ms,"
                f" p99 {fmt(added['p99_ms'], 3)} ms{ttft}"
            )
    print("\nreservation overhead (budget - sidecar, same run):")
    for key, extra in derived["reservation_overhead_ms"].items():
        print(
            f"  {label(key):<16} sidecar CPU {fmt(extra['sidecar_cpu_ms_per_request'], 3)} ms/req"
            f" (loop thread {fmt(extra['loop_thread_cpu_ms_per_request'], 3)},"
            f" SQLite threads {fmt(extra['sqlite_threads_cpu_ms_per_request'], 3)}),"
            f" p50 {fmt(extra['p50_ms'], 3)} ms"
        )
        rounds = " ".join(fmt(v, 3) for v in extra["sidecar_cpu_ms_per_request_by_round"])
        print(f"  {'':<16} CPU by round: {rounds}")
    print("\ntargets:")
    width = max(len(t["target"]) for t in record["targets"])
    for t in record["targets"]:
        verdict = "met" if t["met"] else "NOT MET"
        print(
            f"  {t['target']:<{width}} {fmt(t['value_ms'], 3):>8} ms"
            f"  <= {t['limit_ms']} ms  {verdict}"
        )
    print()
    for name, prefix in PREFIX.items():
        print(
            f"{name} RSS: {derived[f'{prefix}_rss_mib_idle']} MiB idle,"
            f" {derived[f'{prefix}_rss_mib_peak']} MiB peak (VmHWM)"
        )
    events = record["events_per_request"]
    print(
        "\nevents logged per request (warm-ups included):"
        f" sidecar {fmt(events['sidecar'], 2)}, budget {fmt(events['budget'], 2)}"
    )


def requests_per_sidecar(plan: common.Plan) -> int:
    """Requests each sidecar was sent, warm-ups included: both kinds, every concurrency."""
    return 2 * sum(plan.warmup + count for count in plan.requests.values())


def build_record(
    plan: common.Plan,
    cells: dict[str, dict[str, Any]],
    rss_kib: dict[SidecarSide, tuple[int, int]],
    events: dict[SidecarSide, dict[str, int]],
) -> dict[str, Any]:
    """``rss_kib``: (idle, peak) of each sidecar; ``events``: its event log, counted by type."""
    concurrencies = sorted(plan.requests)
    derived = derive(cells, concurrencies)
    for name, prefix in PREFIX.items():
        idle, peak = rss_kib[name]
        derived[f"{prefix}_rss_mib_idle"] = round(idle / 1024, 1)
        derived[f"{prefix}_rss_mib_peak"] = round(peak / 1024, 1)
    sent = requests_per_sidecar(plan)
    parameters = {
        "max_tokens": common.MAX_TOKENS,
        "cpu_clock_ticks_per_s": common.CLK_TCK,
        "latency": "to the last byte of the reply; TTFT: to the first content delta",
        "sidecar": "tollgate serve, one provider and model, SQLite event log (defaults)",
        "budget_sidecar": (
            "a second tollgate serve with the same config plus [budgets.all] (global, per"
            " day, limit $1,000,000): every request reserves its worst-case price (a durable"
            " append before the provider call) and settles after; nothing is refused"
        ),
    }
    return {
        **common.load_record("bench/overhead.py", plan, cells, parameters),
        "derived": derived,
        "targets": check_targets(derived, concurrencies),
        "requests_per_sidecar": sent,
        "events_logged": events,
        "events_per_request": {
            name: round(sum(events[name].values()) / sent, 2) for name in SIDECARS
        },
    }


# --- Main --------------------------------------------------------------------------------------


def measure(workdir: Path, plan: common.Plan) -> dict[str, Any]:
    with running_servers(workdir) as servers:
        pids = {name: servers.sidecars[name].pid for name in SIDECARS}
        rss_idle = {name: common.status_kib(pid, "VmRSS") for name, pid in pids.items()}
        cells = uvloop.run(measure_cells(servers, plan))
        rss = {
            name: (rss_idle[name], common.status_kib(pid, "VmHWM")) for name, pid in pids.items()
        }
    # Counted once the sidecars have stopped and their event logs are complete.
    events = {name: logged_events(workdir / name) for name in SIDECARS}
    record = build_record(plan, cells, rss, events)
    if not record["errors"]:
        check_reservations(events, record["requests_per_sidecar"])
    return record


def main() -> int:
    parser = common.load_parser(
        __doc__, RESULTS, sides="direct/sidecar/budget", quick="200/500 requests, 2 rounds"
    )
    args = parser.parse_args()
    plan = common.load_plan(args)
    return common.run_load_bench(
        "overhead",
        lambda workdir: measure(workdir, plan),
        print_report,
        args.output,
        keep=args.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
