"""NATS against the Unix socket, in one run; and JetStream appends.

    python bench/nats.py [--quick] [--requests N] [--rounds R] [--events N] [--output PATH]

One run starts a nats-server (JetStream on, loopback, a temporary store), the fake provider
(``tollgate fakes``) and one sidecar (``tollgate serve``) that serves both its Unix socket and
``tollgate.v1.chat`` over NATS, each in its own process, as ``bench/overhead.py`` does (with the
same helpers, ``bench/_common.py``). The fake answers 20 tokens in 20 chunks with no delays, so
what is measured is the transports and the sidecar. Eight cells: unix and nats, non-streaming
and streaming, concurrency 1 and 50, with the two transports interleaved in rounds (U N, N U,
...). Per cell: p50/p99 latency to the last message (the ``done`` message over NATS, ``[DONE]``
over HTTP), time to the first content (streams), requests/s, and the CPU time per request of the
sidecar and of nats-server. Every reply is checked.

Then JetStream: bench/jetstream.py's measurements of ``events.open_jetstream_store`` on the
same server (streams of their own): appends by 1, 16 and 256 producers each awaiting its
acknowledgement, batches of 10/100/1000, submits, budget holds and reads, in events/s.

Results: a table on stdout and bench/results/nats.json. Exit status 0 when every request
succeeded, 1 otherwise: a measurement, not a test.
"""

# ruff: noqa: E402 (the imports that follow the import path's fix)
from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the nats package. Before anything imports nats, the repository's root
# goes first on the import path (bench._common, bench.jetstream and the project's packages) and
# bench/ comes off it.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import nats
import nats.errors
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench import _common as common
from bench import jetstream as jetstream_bench

RESULTS = common.RESULTS_DIR / "nats.json"
SUBJECT = "tollgate.v1.chat"
Side = Literal["unix", "nats"]
SIDES: tuple[Side, ...] = ("unix", "nats")
# A NATS request can also fail with the client's own errors.
NATS_REQUEST_ERRORS = (*common.REQUEST_ERRORS, nats.errors.Error)

NATS_TOML = """
[nats]
enabled = true
servers = ["{url}"]
"""


@dataclass(frozen=True)
class NatsPlan(common.Plan):
    events: int
    repeat: int


@dataclass(frozen=True)
class Servers:
    nats_pid: int
    nats_url: str
    fake_pid: int
    sidecar_pid: int
    socket_path: str


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """nats-server, the fake, and a sidecar serving its socket and NATS; stopped on the way
    out whatever happens."""
    with common.Children() as children:
        nats_pid, nats_url = common.start_nats_server(children, workdir / "jetstream")
        fake_pid, fake_url = common.start_fake(children, workdir)
        extra = NATS_TOML.format(url=nats_url)
        sidecar = common.start_sidecar(children, workdir / "sidecar", fake_url, extra)
        socket_path = common.wait_for_sidecar(sidecar, workdir / "sidecar")
        yield Servers(nats_pid, nats_url, fake_pid, sidecar.pid, socket_path)


# --- Requests ----------------------------------------------------------------------------------


class NatsCaller:
    """Requests over one NATS connection. Streams share one wildcard inbox subscription, each
    request its own token, so the load generator's cost per request stays small."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._prefix = client.new_inbox()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._next = 0

    async def start(self) -> None:
        await self._client.subscribe(f"{self._prefix}.*", cb=self._route)

    async def _route(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rpartition(".")[2])
        if queue is not None:
            queue.put_nowait(msg)

    async def unary(self, body: bytes, full_check: bool) -> tuple[float, float | None]:
        start = time.perf_counter()
        reply = await self._client.request(SUBJECT, body, timeout=common.REQUEST_TIMEOUT_S)
        end = time.perf_counter()
        headers = reply.headers or {}
        if headers.get("Tollgate-Kind") != "done":
            raise common.BenchError(f"not done: {headers} {reply.data[:200]!r}")
        if full_check:
            common.check_completion(reply.data)
        return end - start, None

    async def stream(self, body: bytes, full_check: bool) -> tuple[float, float | None]:
        self._next += 1
        token = str(self._next)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._queues[token] = queue
        try:
            start = time.perf_counter()
            await self._client.publish(SUBJECT, body, reply=f"{self._prefix}.{token}")
            first: float | None = None
            text: list[str] = []
            seq = 0
            while True:
                msg = await asyncio.wait_for(queue.get(), common.REQUEST_TIMEOUT_S)
                now = time.perf_counter()
                headers = msg.headers or {}
                seq += 1
                if headers.get("Tollgate-Seq") != str(seq):
                    raise common.BenchError(f"message {seq} out of order: {headers}")
                kind = headers.get("Tollgate-Kind")
                if kind == "done":
                    if full_check:
                        usage = common.decode_chunk(msg.data).usage
                        words = len("".join(text).split())
                        if usage is None or usage.completion_tokens != common.ANSWER_TOKENS:
                            raise common.BenchError(f"unexpected usage: {usage}")
                        if words != common.ANSWER_TOKENS:
                            raise common.BenchError(f"unexpected answer: {words} words")
                    if first is None:
                        raise common.BenchError("a stream without content")
                    return now - start, first - start
                if kind != "delta":
                    raise common.BenchError(f"unexpected {kind}: {msg.data[:200]!r}")
                if first is None:
                    first = now
                if full_check:
                    text += [c.delta.content or "" for c in common.decode_chunk(msg.data).choices]
        finally:
            del self._queues[token]


@dataclass
class NatsBatch(common.Batch):
    nats_cpu_s: float = 0.0


async def wait_for_nats_serving(caller: NatsCaller) -> None:
    """The sidecar subscribes right after it starts: wait until a request is answered."""
    deadline = time.monotonic() + common.READY_TIMEOUT_S
    body = common.request_body("task:chat", False)
    while True:
        try:
            await caller.unary(body, True)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise common.BenchError("the sidecar does not answer over NATS") from None
            await asyncio.sleep(0.1)


async def measure_group(
    servers: Servers, caller: NatsCaller, plan: common.Plan, stream: bool, concurrency: int
) -> dict[Side, NatsBatch]:
    """Both transports for one (stream, concurrency) pair, interleaved U N, N U, ..."""
    body = common.request_body("task:chat", stream)
    connector = aiohttp.UnixConnector(path=servers.socket_path, limit=concurrency)
    async with common.http_session(connector) as session:

        async def over_nats(full_check: bool) -> tuple[float, float | None]:
            if stream:
                return await caller.stream(body, full_check)
            return await caller.unary(body, full_check)

        ones: dict[Side, common.OneRequest] = {
            "unix": common.http_request(session, common.SIDECAR_URL, body, stream),
            "nats": over_nats,
        }
        batches: dict[Side, NatsBatch] = {side: NatsBatch() for side in SIDES}
        await common.warm_up(ones, concurrency, plan.warmup, NATS_REQUEST_ERRORS)
        for side, count in common.schedule(SIDES, plan.requests[concurrency], plan.rounds):
            batch = batches[side]
            before, _ = await common.settled_cpu_seconds(servers.sidecar_pid)
            nats0 = common.cpu_seconds(servers.nats_pid)
            await common.run_requests(ones[side], concurrency, count, batch, NATS_REQUEST_ERRORS)
            after, _ = await common.settled_cpu_seconds(servers.sidecar_pid)
            batch.nats_cpu_s += common.cpu_seconds(servers.nats_pid) - nats0
            batch.add_sidecar_cpu(after - before, count)
    return batches


async def measure_transports(servers: Servers, plan: common.Plan) -> dict[str, dict[str, Any]]:
    client = await nats.connect(servers.nats_url)
    try:
        caller = NatsCaller(client)
        await caller.start()
        await wait_for_nats_serving(caller)
        cells: dict[str, dict[str, Any]] = {}
        for stream, concurrency in common.groups(plan):
            batches = await measure_group(servers, caller, plan, stream, concurrency)
            for side, batch in batches.items():
                cells[common.cell_name(side, stream, concurrency)] = {
                    "transport": side,
                    "stream": stream,
                    "concurrency": concurrency,
                    **common.batch_figures(batch),
                    "nats_server_cpu_ms_per_request": common.per_request_ms(
                        batch, batch.nats_cpu_s
                    ),
                }
        return cells
    finally:
        await client.close()


# --- JetStream appends ------------------------------------------------------------------------


async def measure_appends(nats_url: str, plan: NatsPlan) -> dict[str, Any]:
    """bench/jetstream.py's measurements (appends by P producers, batches, submits, budget
    holds, reads) against the run's nats-server, in streams of their own."""
    results: dict[str, Any] = await jetstream_bench.run_benchmarks(
        nats_url, events=plan.events, producers=(1, 16, 256), repeat=plan.repeat
    )
    return results


# --- Report ------------------------------------------------------------------------------------


def derive(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """NATS minus Unix socket, per kind and concurrency (same run, interleaved rounds)."""
    out: dict[str, Any] = {}
    for key in sorted({name.rsplit("_", 1)[0] for name in cells}):
        unix, over_nats = cells[f"{key}_unix"], cells[f"{key}_nats"]
        out[key] = {
            metric: common.difference(over_nats[metric], unix[metric])
            for metric in ("p50_ms", "p99_ms", "ttft_p50_ms", "sidecar_cpu_ms_per_request")
        }
        if unix["requests_per_s"] and over_nats["requests_per_s"]:
            out[key]["requests_per_s_ratio"] = round(
                over_nats["requests_per_s"] / unix["requests_per_s"], 3
            )
    return out


def print_report(record: dict[str, Any]) -> None:
    fmt, label = common.fmt, common.label
    header = [*common.LATENCY_HEADER, "nats-server CPU ms/req"]
    rows = [
        [*common.latency_columns(name, cell), fmt(cell["nats_server_cpu_ms_per_request"], 3)]
        for name, cell in record["cells"].items()
    ]
    common.print_table(header, rows)
    print("\nNATS - Unix socket (same run):")
    for key, d in record["derived"].items():
        print(
            f"  {label(key):<16} p50 {fmt(d['p50_ms'], 3)} ms,"
            f" p99 {fmt(d['p99_ms'], 3)} ms,"
            f" sidecar CPU {fmt(d['sidecar_cpu_ms_per_request'], 3)} ms/req,"
            f" req/s x{fmt(d.get('requests_per_s_ratio'), 2)}"
        )
    print("\nJetStream (bench/jetstream.py: open_jetstream_store, file storage, R1):")
    for name, figures in record["jetstream"].items():
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
        print(f"  {name.replace('_', ' '):<24} {shown}")


# --- Main --------------------------------------------------------------------------------------


def measure(workdir: Path, plan: NatsPlan) -> dict[str, Any]:
    with running_servers(workdir) as servers:
        cells = uvloop.run(measure_transports(servers, plan))
        appends = uvloop.run(measure_appends(servers.nats_url, plan))
    parameters = {
        "latency": "to the last message (done / [DONE]); TTFT: to the first content",
        "nats": "one nats-server (JetStream, loopback); callers share one connection",
        "jetstream_events_per_run": plan.events,
        "jetstream_repeats": plan.repeat,
    }
    return {
        **common.load_record("bench/nats.py", plan, cells, parameters),
        "derived": derive(cells),
        "jetstream": appends,
    }


def main() -> int:
    parser = common.load_parser(
        __doc__, RESULTS, sides="unix/nats", quick="200/500 requests, 2 rounds, 2000 events"
    )
    parser.add_argument(
        "--events", type=common.positive, help="events per JetStream append run (10000)"
    )
    args = parser.parse_args()
    load = common.load_plan(args)
    plan = NatsPlan(
        requests=load.requests,
        warmup=load.warmup,
        rounds=load.rounds,
        events=args.events or (2000 if args.quick else 10000),
        repeat=1 if args.quick else 3,
    )
    return common.run_load_bench(
        "nats", lambda workdir: measure(workdir, plan), print_report, args.output, keep=args.keep
    )


if __name__ == "__main__":
    sys.exit(main())
