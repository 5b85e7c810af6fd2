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

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
import uvloop

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"

MODEL = "bench-model"
ANSWER_TOKENS = 20
ANSWER_CHUNKS = 20
MAX_TOKENS = 64
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets from the issue.
CPU_NON_STREAM_MS = 0.5
CPU_STREAM_MS = 1.0
ADDED_P50_C1_MS = 1.0
# "The reservation adds no more than 0.2 ms of sidecar CPU per request": budget - sidecar.
RESERVATION_CPU_MS = 0.2

MACHINE_NOTE = (
    "The fake provider, the sidecar and the load generator run on the same machine and compete "
    "for its cores; on a 2-core machine the concurrency-50 cells are CPU-bound, so their latency "
    "and throughput describe the machine as much as the sidecar. CPU time per request is the "
    "figure that carries over; compare each sidecar cell with the direct cell of the same run."
)

CONFIG_TOML = """\
default_route = "chat"

[server]
socket = "tollgate.sock"

[store]
path = "events.db"

[providers.fake]
kind = "openai"
base_url = "{base_url}"

[models.{model}]
provider = "fake"
context_window = 128000
max_output_tokens = 4096
price = {{ input = 1.0, output = 4.0 }}

[classes.bench]
members = ["{model}"]

[routes.chat]
class = "bench"
"""

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


class BenchError(Exception):
    """The bench could not run (a process failed to start) or a reply was invalid."""


# --- Child processes ---------------------------------------------------------------------------


def tollgate_command() -> str:
    """The ``tollgate`` script of the running interpreter's environment (the venv)."""
    beside = Path(sys.executable).parent / "tollgate"
    found = str(beside) if beside.exists() else shutil.which("tollgate")
    if found is None:
        raise BenchError("cannot find the tollgate command; install the project (make test)")
    return found


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_fake(workdir: Path) -> subprocess.Popen[str]:
    with (workdir / "fake.log").open("w") as stderr:
        return subprocess.Popen(
            [tollgate_command(), "--log-level", "WARNING", "fakes"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def wait_for_fake(proc: subprocess.Popen[str], workdir: Path) -> str:
    """The fake's base URL (ending in /v1), which it prints once it listens."""
    assert proc.stdout is not None
    log = workdir / "fake.log"
    # Wait for the line without blocking forever on a fake that hangs.
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT_S):
            raise BenchError(f"the fake did not start in {READY_TIMEOUT_S} s\n{log_tail(log)}")
    line = proc.stdout.readline()
    match = re.match(r"openai\s+(http://\S+/v1)\s*$", line)
    if match is None:
        raise BenchError(f"unexpected output from the fake: {line!r}\n{log_tail(log)}")
    return match.group(1)


def start_sidecar(workdir: Path, base_url: str, budget: bool) -> subprocess.Popen[str]:
    """A sidecar routing ``task:chat`` to the fake's model, with its config, socket, event log
    and log in ``workdir``; with ``budget``, every request is reserved and settled."""
    workdir.mkdir(exist_ok=True)
    config = workdir / "tollgate.toml"
    text = CONFIG_TOML.format(base_url=base_url, model=MODEL)
    config.write_text(text + BUDGET_TOML if budget else text)
    with (workdir / "sidecar.log").open("w") as stderr:
        return subprocess.Popen(
            [tollgate_command(), "--log-level", "WARNING", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )


def wait_for_sidecar(proc: subprocess.Popen[str], workdir: Path) -> str:
    """The sidecar's socket path, once it answers /healthz."""
    socket_path = str(workdir / "tollgate.sock")
    log = workdir / "sidecar.log"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not healthy(socket_path):
        if proc.poll() is not None:
            raise BenchError(f"the sidecar exited with {proc.returncode}\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"the sidecar did not start in {READY_TIMEOUT_S} s\n{log_tail(log)}")
        time.sleep(0.05)
    return socket_path


def healthy(socket_path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(socket_path)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (both servers shut down gracefully on it), then SIGKILL if that takes too long."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def set_behaviour(base_url: str) -> None:
    """Every answer is 20 tokens in 20 chunks, with no delays: pure overhead."""
    root = base_url.removesuffix("/v1")
    body = {
        "answer_tokens": ANSWER_TOKENS,
        "chunks": ANSWER_CHUNKS,
        "header_delay_s": 0,
        "ttft_s": 0,
        "chunk_delay_s": 0,
    }
    request = urllib.request.Request(
        f"{root}/_fake/models/{MODEL}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise BenchError(f"the fake refused the behaviour: {response.status}")


# --- /proc -------------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of every thread of ``pid``, or of its thread ``tid`` alone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    stat = Path(path).read_text()
    # The command name may contain spaces; the fields after it start with the state (field 3),
    # so utime and stime (fields 14 and 15) are at offsets 11 and 12.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


async def settled_cpu_seconds(pid: int) -> tuple[float, float]:
    """(all threads, main thread) CPU time once the process is idle: the sidecar commits its
    events after the replies, and that work belongs to the requests just measured. The main
    thread runs the event loop; the others are SQLite's (aiosqlite runs each connection in a
    thread), which is how the event log's share is told apart."""
    last = cpu_seconds(pid)
    for _ in range(50):
        await asyncio.sleep(0.03)
        now = cpu_seconds(pid)
        if now == last:
            break
        last = now
    return last, cpu_seconds(pid, pid)


# --- Requests ----------------------------------------------------------------------------------


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta


class _Usage(msgspec.Struct):
    completion_tokens: int


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage


_chunk = msgspec.json.Decoder(_Chunk)
_completion = msgspec.json.Decoder(_Completion)
_DONE = b"data: [DONE]"


def request_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "In two sentences: why do connection pools matter?"},
        ],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


def content_event(event: bytes) -> bool:
    if not event.startswith(b"data: ") or event.startswith(_DONE):
        return False
    choices = _chunk.decode(event[6:]).choices
    return bool(choices and choices[0].delta.content)


def check_stream(body: bytes) -> None:
    """Full check, for the warm-up: 20 content chunks, usage, then [DONE]."""
    events = [e for e in body.split(b"\n\n") if e.strip()]
    if not events or events[-1] != _DONE:
        raise BenchError("the stream does not end with data: [DONE]")
    chunks = [_chunk.decode(e.removeprefix(b"data: ")) for e in events[:-1]]
    contents = sum(bool(c.choices and c.choices[0].delta.content) for c in chunks)
    usage = [c.usage for c in chunks if c.usage is not None]
    if contents != ANSWER_CHUNKS or not usage or usage[-1].completion_tokens != ANSWER_TOKENS:
        raise BenchError(f"unexpected stream: {contents} content chunks, usage {usage}")


def check_completion(body: bytes) -> None:
    completion = _completion.decode(body)
    content = completion.choices[0].message.content or ""
    if completion.usage.completion_tokens != ANSWER_TOKENS or not content:
        raise BenchError(f"unexpected completion: {body[:200]!r}")


@dataclass
class Batch:
    """Requests of one cell: accumulated over its rounds."""

    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    sidecar_cpu_s: float = 0.0
    sidecar_loop_cpu_s: float = 0.0
    # The sidecar that this cell doesn't use (none for a direct cell): should be ~0.
    idle_sidecar_cpu_s: float = 0.0
    # Per round: the sidecar's CPU per request, to see how much the figure varies.
    round_cpu_ms: list[float] = field(default_factory=list)
    fake_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    rss_kib: list[int] = field(default_factory=list)


async def one_request(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, full_check: bool
) -> tuple[float, float | None]:
    """Send one request; return its latency to the last byte and, for a stream, its TTFT."""
    start = time.perf_counter()
    async with session.post(
        url, data=body, headers={"content-type": "application/json"}
    ) as response:
        if response.status != 200:
            text = await response.text()
            raise BenchError(f"status {response.status}: {text[:200]}")
        if not stream:
            data = await response.read()
            end = time.perf_counter()
            if full_check:
                check_completion(data)
            elif not data.endswith(b"}"):
                raise BenchError("truncated completion")
            return end - start, None
        # Parse events only until the first content delta; after that only the tail matters,
        # which keeps the load generator's own cost (and its share of the CPUs) small.
        first: float | None = None
        pending = b""
        everything: list[bytes] = []
        tail = b""
        async for data in response.content.iter_any():
            now = time.perf_counter()
            if full_check:
                everything.append(data)
            if first is None:
                pending += data
                *events, pending = pending.split(b"\n\n")
                if any(content_event(e) for e in events):
                    first = now
            tail = (tail + data)[-64:]
        end = time.perf_counter()
    if first is None or not tail.rstrip().endswith(_DONE):
        raise BenchError("the stream has no content or does not end with data: [DONE]")
    if full_check:
        check_stream(b"".join(everything))
    return end - start, first - start


async def run_requests(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    concurrency: int,
    count: int,
    batch: Batch | None,
) -> None:
    """``count`` requests from ``concurrency`` workers; recorded into ``batch`` unless warm-up."""
    remaining = count
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latency, ttft = await one_request(session, url, body, stream, batch is None)
            except (aiohttp.ClientError, TimeoutError, BenchError, msgspec.DecodeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if batch is not None:
                batch.latencies_s.append(latency)
                if ttft is not None:
                    batch.ttfts_s.append(ttft)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if batch is None:
        if errors:
            # A failing warm-up means the setup is wrong; measuring it would be meaningless.
            raise BenchError(f"warm-up failed ({len(errors)} errors), e.g. {errors[0]}")
        return
    batch.requests += count
    batch.errors += len(errors)
    batch.error_samples += errors[: 5 - len(batch.error_samples)]


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


@dataclass(frozen=True)
class Plan:
    requests: dict[int, int]  # by concurrency
    warmup: int
    rounds: int


def round_sizes(total: int, rounds: int) -> list[int]:
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def round_order(r: int) -> tuple[Side, ...]:
    """D S B, then B S D, and so on: over each pair of rounds every side has the same mean
    position, so a linear drift falls on all of them alike (D S S D with two sides)."""
    return SIDES if r % 2 == 0 else SIDES[::-1]


async def settled_sidecars(servers: Servers) -> dict[SidecarSide, tuple[float, float]]:
    settled = await asyncio.gather(
        *(settled_cpu_seconds(servers.sidecars[name].pid) for name in SIDECARS)
    )
    return dict(zip(SIDECARS, settled, strict=True))


async def measure_group(
    servers: Servers, plan: Plan, stream: bool, concurrency: int
) -> dict[Side, Batch]:
    """The three sides of one (stream, concurrency) pair, interleaved D S B, B S D, ..."""
    bodies: dict[Side, bytes] = {
        "direct": request_body(MODEL, stream),
        "sidecar": request_body("task:chat", stream),
        "budget": request_body("task:chat", stream),
    }
    sidecar_url = "http://tollgate/v1/chat/completions"
    urls: dict[Side, str] = {
        "direct": f"{servers.fake_url}/chat/completions",
        "sidecar": sidecar_url,
        "budget": sidecar_url,
    }
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    # One keep-alive pool per side, as many connections as workers: no connection set-up
    # inside the measurements.
    sessions: dict[Side, aiohttp.ClientSession] = {
        "direct": aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout
        ),
    }
    for name in SIDECARS:
        sessions[name] = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(
                path=servers.sidecars[name].socket_path, limit=concurrency
            ),
            timeout=timeout,
        )
    batches: dict[Side, Batch] = {side: Batch() for side in SIDES}
    async with contextlib.AsyncExitStack() as stack:
        for session in sessions.values():
            await stack.enter_async_context(session)
        for side in SIDES:
            await run_requests(
                sessions[side], urls[side], bodies[side], stream, concurrency, plan.warmup, None
            )
        for r, count in enumerate(round_sizes(plan.requests[concurrency], plan.rounds)):
            for side in round_order(r):
                batch = batches[side]
                before = await settled_sidecars(servers)
                fake0 = cpu_seconds(servers.fake_pid)
                own0 = time.process_time()
                wall0 = time.perf_counter()
                await run_requests(
                    sessions[side], urls[side], bodies[side], stream, concurrency, count, batch
                )
                batch.wall_s += time.perf_counter() - wall0
                batch.loadgen_cpu_s += time.process_time() - own0
                batch.fake_cpu_s += cpu_seconds(servers.fake_pid) - fake0
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
                batch.sidecar_cpu_s += used
                batch.round_cpu_ms.append(used / count * 1e3)
                measured: SidecarSide = "sidecar" if side == "direct" else side
                batch.rss_kib.append(status_kib(servers.sidecars[measured].pid, "VmRSS"))
    return batches


# --- Figures -----------------------------------------------------------------------------------


def percentile_ms(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3


def cell_name(side: Side, stream: bool, concurrency: int) -> str:
    return f"{'stream' if stream else 'non_stream'}_c{concurrency}_{side}"


def cell_figures(batch: Batch, side: Side, stream: bool, concurrency: int) -> dict[str, Any]:
    done = max(1, batch.requests)

    def per_request_ms(seconds: float) -> float:
        return round(seconds / done * 1e3, 4)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "side": side,
        "stream": stream,
        "concurrency": concurrency,
        "requests": batch.requests,
        "errors": batch.errors,
        "error_samples": batch.error_samples,
        "p50_ms": rounded(percentile_ms(batch.latencies_s, 0.50)),
        "p99_ms": rounded(percentile_ms(batch.latencies_s, 0.99)),
        "ttft_p50_ms": rounded(percentile_ms(batch.ttfts_s, 0.50)),
        "ttft_p99_ms": rounded(percentile_ms(batch.ttfts_s, 0.99)),
        "requests_per_s": round(batch.requests / batch.wall_s, 1) if batch.wall_s else None,
        # For a direct cell the sidecar's CPU should be ~0: a check that nothing else runs.
        "sidecar_cpu_ms_per_request": per_request_ms(batch.sidecar_cpu_s),
        "sidecar_cpu_ms_per_request_by_round": [round(ms, 4) for ms in batch.round_cpu_ms],
        "sidecar_loop_thread_cpu_ms_per_request": per_request_ms(batch.sidecar_loop_cpu_s),
        "sidecar_other_threads_cpu_ms_per_request": per_request_ms(
            batch.sidecar_cpu_s - batch.sidecar_loop_cpu_s
        ),
        # The other sidecar, idle during this cell (none for direct cells): should be ~0.
        "idle_sidecar_cpu_ms_per_request": per_request_ms(batch.idle_sidecar_cpu_s),
        "fake_cpu_ms_per_request": per_request_ms(batch.fake_cpu_s),
        "loadgen_cpu_ms_per_request": per_request_ms(batch.loadgen_cpu_s),
        "sidecar_rss_mib_after": round(batch.rss_kib[-1] / 1024, 1) if batch.rss_kib else None,
    }


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def derive(cells: dict[str, dict[str, Any]], concurrencies: list[int]) -> dict[str, Any]:
    added: dict[str, dict[str, float | None]] = {}
    added_budget: dict[str, dict[str, float | None]] = {}
    cpu: dict[str, float] = {}
    cpu_budget: dict[str, float] = {}
    reservation: dict[str, dict[str, Any]] = {}
    for stream in (False, True):
        for c in concurrencies:
            direct = cells[cell_name("direct", stream, c)]
            sidecar = cells[cell_name("sidecar", stream, c)]
            budget = cells[cell_name("budget", stream, c)]
            key = f"{'stream' if stream else 'non_stream'}_c{c}"

            latencies = ("p50_ms", "p99_ms", "ttft_p50_ms")
            added[key] = {m: difference(sidecar[m], direct[m]) for m in latencies}
            added_budget[key] = {m: difference(budget[m], direct[m]) for m in latencies}
            cpu[key] = sidecar["sidecar_cpu_ms_per_request"]
            cpu_budget[key] = budget["sidecar_cpu_ms_per_request"]
            # What the budget costs: the same requests through the two sidecars, same rounds.
            reservation[key] = {
                "sidecar_cpu_ms_per_request": difference(
                    budget["sidecar_cpu_ms_per_request"], sidecar["sidecar_cpu_ms_per_request"]
                ),
                "loop_thread_cpu_ms_per_request": difference(
                    budget["sidecar_loop_thread_cpu_ms_per_request"],
                    sidecar["sidecar_loop_thread_cpu_ms_per_request"],
                ),
                "sqlite_threads_cpu_ms_per_request": difference(
                    budget["sidecar_other_threads_cpu_ms_per_request"],
                    sidecar["sidecar_other_threads_cpu_ms_per_request"],
                ),
                # Round r of both cells ran back to back: the spread of these differences
                # shows how far the figure above can be trusted.
                "sidecar_cpu_ms_per_request_by_round": [
                    difference(b, s)
                    for b, s in zip(
                        budget["sidecar_cpu_ms_per_request_by_round"],
                        sidecar["sidecar_cpu_ms_per_request_by_round"],
                        strict=True,
                    )
                ],
                "p50_ms": difference(budget["p50_ms"], sidecar["p50_ms"]),
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


def label(key: str) -> str:
    """``non_stream_c50_sidecar`` -> ``non-stream c=50 sidecar``."""
    return key.replace("non_stream", "non-stream").replace("_c", " c=").replace("_", " ")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(record: dict[str, Any]) -> None:
    cells, derived = record["cells"], record["derived"]
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
        "loop thread",
        "SQLite threads",
        "fake CPU",
        "loadgen CPU",
        "RSS MiB",
    ]
    rows = [header]
    for name, cell in cells.items():
        rows.append(
            [
                label(name),
                str(cell["requests"]),
                str(cell["errors"]),
                fmt(cell["p50_ms"], 3),
                fmt(cell["p99_ms"], 3),
                fmt(cell["ttft_p50_ms"], 3),
                fmt(cell["ttft_p99_ms"], 3),
                fmt(cell["requests_per_s"], 0),
                fmt(cell["sidecar_cpu_ms_per_request"], 3),
                fmt(cell["sidecar_loop_thread_cpu_ms_per_request"], 3),
                fmt(cell["sidecar_other_threads_cpu_ms_per_request"], 3),
                fmt(cell["fake_cpu_ms_per_request"], 3),
                fmt(cell["loadgen_cpu_ms_per_request"], 3),
                fmt(cell["sidecar_rss_mib_after"], 1) if cell["side"] != "direct" else "",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        cols = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cols))
        if i == 0:
            print("  ".join("-" * w for w in widths))
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


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "note": MACHINE_NOTE,
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# --- Main --------------------------------------------------------------------------------------


async def run(servers: Servers, plan: Plan) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for stream in (False, True):
        for concurrency in sorted(plan.requests):
            label = f"{'stream' if stream else 'non-stream'}, concurrency {concurrency}"
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            batches = await measure_group(servers, plan, stream, concurrency)
            for side in SIDES:
                name = cell_name(side, stream, concurrency)
                cells[name] = cell_figures(batches[side], side, stream, concurrency)
    return cells


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """The fake and both sidecars, stopped on the way out whatever happens."""
    procs: list[subprocess.Popen[str]] = []
    try:
        # Each process is registered before it is waited for, so that an error or ^C during
        # start-up stops it too.
        procs.append(fake := start_fake(workdir))
        fake_url = wait_for_fake(fake, workdir)
        set_behaviour(fake_url)
        started: dict[SidecarSide, subprocess.Popen[str]] = {}
        for name in SIDECARS:
            started[name] = start_sidecar(workdir / name, fake_url, budget=name == "budget")
            procs.append(started[name])
        sidecars = {
            name: Sidecar(proc.pid, wait_for_sidecar(proc, workdir / name), workdir / name)
            for name, proc in started.items()
        }
        yield Servers(fake.pid, fake_url, sidecars)
    finally:
        for proc in reversed(procs):
            stop(proc)


def logged_events(workdir: Path) -> dict[str, int]:
    """The number of events of each type in a sidecar's event log (read once it has stopped)."""
    path = workdir / "events.db"
    if not path.exists():
        raise BenchError(f"no event log at {path}")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
        return {str(kind): int(count) for kind, count in rows}


def check_reservations(events: dict[SidecarSide, dict[str, int]], requests: int) -> None:
    """The budget cells measure nothing unless the budget sidecar reserved for every request
    and the other sidecar for none."""
    reserved = {name: events[name].get(RESERVED_EVENT, 0) for name in SIDECARS}
    if reserved["budget"] < requests or reserved["sidecar"]:
        raise BenchError(
            f"expected {requests} reservations from the budget sidecar and none from the other,"
            f" found {reserved['budget']} and {reserved['sidecar']}"
        )


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--requests",
        type=positive,
        help="measured requests per cell (default: 2000 at concurrency 1, 5000 at 50)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a CI-sized run: 200/500 requests, 2 rounds"
    )
    parser.add_argument("--rounds", type=positive, help="direct/sidecar alternations per cell (4)")
    parser.add_argument("--warmup", type=positive, help="unmeasured requests per side first (200)")
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
    )


def requests_per_sidecar(plan: Plan) -> int:
    """Requests each sidecar was sent, warm-ups included: both kinds, every concurrency."""
    return 2 * sum(plan.warmup + count for count in plan.requests.values())


def build_record(
    plan: Plan,
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
    return {
        "benchmark": "bench/overhead.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "parameters": {
            "requests_per_cell": {f"c{c}": n for c, n in plan.requests.items()},
            "warmup_per_side": plan.warmup,
            "rounds": plan.rounds,
            "answer": f"{ANSWER_TOKENS} tokens in {ANSWER_CHUNKS} chunks, no delays",
            "max_tokens": MAX_TOKENS,
            "cpu_clock_ticks_per_s": CLK_TCK,
            "latency": "to the last byte of the reply; TTFT: to the first content delta",
            "sidecar": "tollgate serve, one provider and model, SQLite event log (defaults)",
            "budget_sidecar": (
                "a second tollgate serve with the same config plus [budgets.all] (global, per"
                " day, limit $1,000,000): every request reserves its worst-case price (a durable"
                " append before the provider call) and settles after; nothing is refused"
            ),
            "git_commit": git_commit(),
        },
        "errors": sum(cell["errors"] for cell in cells.values()),
        "cells": cells,
        "derived": derived,
        "targets": check_targets(derived, concurrencies),
        "requests_per_sidecar": sent,
        "events_logged": events,
        "events_per_request": {
            name: round(sum(events[name].values()) / sent, 2) for name in SIDECARS
        },
    }


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    plan = make_plan(args)
    # SIGTERM (a CI timeout, kill) stops the servers like ^C does, instead of orphaning them.
    signal.signal(signal.SIGTERM, interrupt)
    # A short path: a Unix socket path is limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="tg-bench-", dir="/tmp"))
    keep = args.keep
    try:
        with running_servers(workdir) as servers:
            pids = {name: servers.sidecars[name].pid for name in SIDECARS}
            rss_idle = {name: status_kib(pid, "VmRSS") for name, pid in pids.items()}
            cells = uvloop.run(run(servers, plan))
            rss = {name: (rss_idle[name], status_kib(pid, "VmHWM")) for name, pid in pids.items()}
        # Counted once the sidecars have stopped and their event logs are complete.
        events = {name: logged_events(workdir / name) for name in SIDECARS}
        record = build_record(plan, cells, rss, events)
        if not record["errors"]:
            check_reservations(events, record["requests_per_sidecar"])
        print()
        print_report(record)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.output}")
        if record["errors"]:
            keep = True
            print(f"{record['errors']} requests failed; see error_samples", file=sys.stderr)
            return 1
        return 0
    except BenchError as exc:
        keep = True
        print(f"overhead bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"work directory (config, logs, event log): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
