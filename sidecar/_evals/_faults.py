"""``tollgate eval faults``: every fault of the fakes, against a real sidecar, cell by cell.

A cell is (the primary's provider protocol) x (a fault) x (streamed or not). Each cell runs a
fresh sidecar on its own Unix socket and SQLite log, whose route ``chat`` has two models: the
primary, on a provider of the cell's protocol with the fault scripted on its fake, and a
healthy fallback on another provider (OpenAI's protocol) with a larger context window. One
request goes through it, and the cell passes when:

* the outcome is the expected one: served by the primary, served by the fallback, or a typed
  error of the expected type (a non-streamed error body, or an error event ending a stream);
* nothing is untyped: no HTTP error without a typed body, no stream that stops without
  ``[DONE]`` or an error event;
* it ends within the cell's deadline (a hang fails the cell);
* the breaker agrees with the log: the primary's breaker opened exactly when its health
  failures in the log reached the threshold.

It also records the attempts, retries and fallbacks from the log, and the latency added over the
same protocol's healthy cell. Cells run concurrently (each on its own fake model names); the
eval config keeps every timeout short so that the matrix runs in seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec

from adapters.fakes import (
    ContentFilterFault,
    DropFault,
    Fault,
    HangBeforeFirstTokenFault,
    HangBeforeHeadersFault,
    MalformedSSEFault,
    MidStreamErrorFault,
    NoDoneFault,
    StatusFault,
)
from events import (
    AttemptFailed,
    AttemptStarted,
    CircuitOpened,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    StoredEvent,
)
from sidecar._breaker import HEALTH_CLASSES
from sidecar._config import parse_config
from sidecar._fakes import RunningFake, serve_all_fakes
from sidecar._service import open_sidecar

from ._report import table

__all__ = ["FAULTS", "PROTOCOLS", "CellResult", "FaultsReport", "run_fault_matrix"]

# Provider kinds, each as the primary; the fake of its protocol serves it.
PROTOCOLS = ("openai", "anthropic", "gemini", "xai", "openai_compatible")
_FAKE_OF = {"openai_compatible": "openai"}
BREAKER_THRESHOLD = 2
# Typed error types a client may receive (README: "Errors").
TYPED_ERRORS = frozenset(
    {
        "invalid_request",
        "content_filtered",
        "no_route",
        "all_candidates_failed",
        "deadline_exceeded",
        "upstream_stream_broken",
        "budget_exceeded",
    }
)
PRIMARY = "served:primary"
FALLBACK = "served:fallback"


def _error(kind: str) -> str:
    return f"error:{kind}"


class FaultCase(msgspec.Struct, frozen=True):
    name: str
    # The fault per protocol kind (they differ only where a provider has its own status).
    make: Callable[[str], Fault | None]
    # What should happen (PRIMARY, FALLBACK or "error:<type>"), not streamed / streamed.
    expect: tuple[str, str]
    why: str


def _overloaded(kind: str) -> Fault:
    return StatusFault(status=529 if kind == "anthropic" else 503)


FAULTS: tuple[FaultCase, ...] = (
    FaultCase("none", lambda k: None, (PRIMARY, PRIMARY), "healthy: the baseline"),
    FaultCase(
        "status 429",
        lambda k: StatusFault(status=429),
        (FALLBACK, FALLBACK),
        "rate limited: retried, then the fallback",
    ),
    FaultCase(
        "overloaded",
        _overloaded,
        (FALLBACK, FALLBACK),
        "overloaded (503, Anthropic 529): retried, then the fallback",
    ),
    FaultCase(
        "status 500",
        lambda k: StatusFault(status=500),
        (FALLBACK, FALLBACK),
        "server error: one retry, then the fallback",
    ),
    FaultCase(
        "auth 401",
        lambda k: StatusFault(status=401, error="invalid_api_key"),
        (FALLBACK, FALLBACK),
        "wrong key: the provider is skipped",
    ),
    FaultCase(
        "not found 404",
        lambda k: StatusFault(status=404, error="model_not_found"),
        (FALLBACK, FALLBACK),
        "model gone: the provider is skipped",
    ),
    FaultCase(
        "context overflow",
        lambda k: StatusFault(error="context_length_exceeded"),
        (FALLBACK, FALLBACK),
        "context overflow: only a larger window helps (the fallback's is larger)",
    ),
    FaultCase(
        "bad request 400",
        lambda k: StatusFault(status=400, error="invalid_request_error"),
        (_error("invalid_request"), _error("invalid_request")),
        "the request itself is bad: never retried or sent elsewhere",
    ),
    FaultCase(
        "mid-stream error before content",
        lambda k: MidStreamErrorFault(after_chunks=0),
        (PRIMARY, FALLBACK),
        "streams only; nothing was forwarded yet, so the fallback answers",
    ),
    FaultCase(
        "mid-stream error after 2 chunks",
        lambda k: MidStreamErrorFault(after_chunks=2),
        (PRIMARY, _error("upstream_stream_broken")),
        "streams only; committed to the answer, so the stream ends with a typed error",
    ),
    FaultCase(
        "connection dropped before content",
        lambda k: DropFault(after_chunks=0),
        (FALLBACK, FALLBACK),
        "cut before any content: the fallback answers",
    ),
    FaultCase(
        "connection dropped after 2 chunks",
        lambda k: DropFault(after_chunks=2),
        (FALLBACK, _error("upstream_stream_broken")),
        "a cut body is nothing forwarded; a cut stream after content is a typed error",
    ),
    FaultCase(
        "malformed SSE event",
        lambda k: MalformedSSEFault(after_chunks=2),
        (PRIMARY, _error("upstream_stream_broken")),
        "streams only; an undecodable event after content ends the stream, typed",
    ),
    FaultCase(
        "no stream terminator",
        lambda k: NoDoneFault(),
        (PRIMARY, _error("upstream_stream_broken")),
        "streams only; a stream without its end may be truncated: typed, never silent",
    ),
    FaultCase(
        "hang before headers",
        lambda k: HangBeforeHeadersFault(),
        (FALLBACK, FALLBACK),
        "header (stream) or answer (not streamed) timeout, one retry, then the fallback",
    ),
    FaultCase(
        "hang before first token",
        lambda k: HangBeforeFirstTokenFault(),
        (FALLBACK, FALLBACK),
        "first-token (stream) or answer timeout, one retry, then the fallback",
    ),
    FaultCase(
        "content filter",
        lambda k: ContentFilterFault(after_chunks=0),
        (PRIMARY, PRIMARY),
        "an answer stopped by the provider's filter is an answer (finish content_filter)",
    ),
)

_CONFIG = """
default_route = "chat"

[server]
socket = "{socket}"
shutdown_grace_s = 1.0

[store]
path = "events.db"

[providers.primary]
kind = "{kind}"
base_url = "{primary_url}"
connect_timeout_s = 2.0

[providers.fallback]
kind = "openai"
base_url = "{fallback_url}"
connect_timeout_s = 2.0

[models.primary-model]
provider = "primary"
id = "{primary_id}"
context_window = 8000
max_output_tokens = 64
price = {{ input = 1.0, output = 2.0 }}

[models.fallback-model]
provider = "fallback"
id = "{fallback_id}"
context_window = 16000
max_output_tokens = 64
price = {{ input = 1.0, output = 2.0 }}

[classes.main]
members = ["primary-model", "fallback-model"]

[routes.chat]
class = "main"
max_tokens = 32
deadline_s = {deadline_s}
header_timeout_s = {timeout_s}
ttft_timeout_s = {timeout_s}
idle_timeout_s = {timeout_s}

[retry]
backoff_initial_s = 0.01
backoff_max_s = 0.02
max_wait_s = 0.1

[breaker]
threshold = {threshold}
window_s = 60
cooldown_s = 60
"""


class CellResult(msgspec.Struct, frozen=True, kw_only=True):
    protocol: str
    fault: str
    stream: bool
    expected: str
    actual: str
    passed: bool
    # Why it failed, or notes ("" when there is nothing to say).
    detail: str
    attempts: int
    retries: int
    fallbacks: int
    # "opened" or "closed": the primary's breaker after the request.
    breaker: str
    health_failures: int
    latency_ms: float
    added_latency_ms: float
    finish_reason: str


class FaultsReport(msgspec.Struct, frozen=True, kw_only=True):
    cells: int
    passed: int
    failed: int
    timeout_s: float
    cell_deadline_s: float
    breaker_threshold: int
    faults: dict[str, str]
    results: list[CellResult]


class _Response(msgspec.Struct):
    status: int
    outcome: str
    typed: bool
    request_id: str
    finish_reason: str
    detail: str


async def _post(socket: str, stream: bool) -> _Response:
    body = {
        "model": "task:chat",
        "messages": [{"role": "user", "content": "Fault matrix probe: say something."}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    connector = aiohttp.UnixConnector(path=socket)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tollgate/v1/chat/completions",
            data=msgspec.json.encode(body),
            headers={"content-type": "application/json"},
        ) as response,
    ):
        request_id = response.headers.get("x-tollgate-request-id", "")
        served = response.headers.get("x-tollgate-provider", "")
        raw = await response.read()
    if response.status != 200 or not stream:
        return _whole(response.status, raw, request_id, served)
    return _sse(raw, request_id, served)


def _error_type(payload: object) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        kind = payload["error"].get("type")
        return kind if isinstance(kind, str) else None
    return None


def _served(provider: str) -> str:
    return PRIMARY if provider == "primary" else FALLBACK if provider == "fallback" else "?"


def _whole(status: int, raw: bytes, request_id: str, served: str) -> _Response:
    try:
        payload = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _Response(status, f"http_{status}", False, request_id, "", "a body that is not JSON")
    if status == 200:
        choices = payload.get("choices") if isinstance(payload, dict) else None
        finish = choices[0].get("finish_reason", "") if choices else ""
        return _Response(status, _served(served), True, request_id, str(finish), "")
    kind = _error_type(payload)
    typed = kind in TYPED_ERRORS
    detail = "" if typed else f"untyped error body: {raw[:200]!r}"
    return _Response(status, _error(kind or f"http_{status}"), typed, request_id, "", detail)


def _sse(raw: bytes, request_id: str, served: str) -> _Response:
    finish = ""
    for line in raw.decode(errors="replace").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return _Response(200, _served(served), True, request_id, finish, "")
        try:
            event = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return _Response(200, "malformed", False, request_id, "", "an undecodable event")
        kind = _error_type(event)
        if kind is not None:
            typed = kind in TYPED_ERRORS
            detail = "" if typed else f"untyped stream error {kind!r}"
            return _Response(200, _error(kind), typed, request_id, "", detail)
        for choice in event.get("choices") or ():
            finish = choice.get("finish_reason") or finish
    return _Response(200, "truncated", False, request_id, "", "the stream stopped silently")


async def _events(store: Any, request_id: str) -> list[StoredEvent]:
    with anyio.fail_after(5):
        while True:
            stored = await store.read_request(request_id)
            if stored and isinstance(stored[-1].event, RequestCompleted | RequestFailed):
                return list(stored)
            await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def _workdir() -> AsyncIterator[Path]:
    # Unix socket paths are short (~107 bytes): a directory right under /tmp.
    path = Path(tempfile.mkdtemp(prefix="tg-faults-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _cell(
    number: int,
    protocol: str,
    case: FaultCase,
    stream: bool,
    fakes: Mapping[str, RunningFake],
    workdir: Path,
    timeout_s: float,
    route_deadline_s: float,
    cell_deadline_s: float,
) -> CellResult:
    primary_id = f"cell-{number}-primary"
    fallback_id = f"cell-{number}-fallback"
    primary_fake = fakes[_FAKE_OF.get(protocol, protocol)]
    fault = case.make(protocol)
    behaviour: dict[str, object] = {"answer_tokens": 8, "chunks": 4}
    await primary_fake.control.set_model(
        primary_id, {**behaviour, "faults": [msgspec.to_builtins(fault)] if fault else []}
    )
    await fakes["openai"].control.set_model(fallback_id, behaviour)
    directory = workdir / f"c{number}"
    directory.mkdir()
    text = _CONFIG.format(
        socket="s.sock",
        kind=protocol,
        primary_url=primary_fake.base_url,
        fallback_url=fakes["openai"].base_url,
        primary_id=primary_id,
        fallback_id=fallback_id,
        timeout_s=timeout_s,
        deadline_s=route_deadline_s,
        threshold=BREAKER_THRESHOLD,
    )
    config = parse_config(text, base_dir=directory, source=f"<fault cell {number}>")
    expected = case.expect[stream]
    response: _Response | None = None
    events: list[StoredEvent] = []
    latency_ms = 0.0
    with anyio.move_on_after(cell_deadline_s) as scope:
        async with open_sidecar(config, environ={}) as sidecar:
            started = time.perf_counter()
            response = await _post(sidecar.socket_path, stream)
            latency_ms = (time.perf_counter() - started) * 1000
            if response.request_id:
                events = await _events(sidecar.store, response.request_id)
    # The sidecar's own measure, from receipt to the terminal event, where there is one.
    for stored in events:
        if isinstance(stored.event, RequestCompleted | RequestFailed):
            latency_ms = stored.event.latency_ns / 1e6
    if scope.cancelled_caught or response is None:
        hang = f"no end within {cell_deadline_s:g} s"
        return _result(
            protocol, case, stream, expected, "hang", [hang], [], cell_deadline_s * 1000, ""
        )
    actual = response.outcome
    problems = []
    if not response.typed:
        problems.append(response.detail or "untyped")
    if actual != expected:
        problems.append(f"expected {expected}, got {actual}")
    if case.name == "content filter" and response.finish_reason != "content_filter":
        problems.append(f"finish reason {response.finish_reason!r}, expected 'content_filter'")
    return _result(
        protocol, case, stream, expected, actual, problems, events, latency_ms,
        response.finish_reason,
    )  # fmt: skip


def _primary_opened(events: Sequence[StoredEvent]) -> bool:
    return any(isinstance(s.event, CircuitOpened) and s.event.provider == "primary" for s in events)


def _health_failures(events: Sequence[StoredEvent]) -> int:
    return sum(
        isinstance(s.event, AttemptFailed)
        and s.event.provider == "primary"
        and s.event.error_class in HEALTH_CLASSES
        for s in events
    )


def _result(
    protocol: str,
    case: FaultCase,
    stream: bool,
    expected: str,
    actual: str,
    problems: list[str],
    events: Sequence[StoredEvent],
    latency_ms: float,
    finish_reason: str,
) -> CellResult:
    """The cell's figures from its log; it fails on ``problems`` or a breaker that disagrees
    with the log (the breaker opens exactly when the health failures reach the threshold)."""
    health = _health_failures(events)
    opened = _primary_opened(events)
    if opened != (health >= BREAKER_THRESHOLD):
        problems = [
            *problems,
            f"breaker {'opened' if opened else 'stayed closed'} after {health} health failures "
            f"(threshold {BREAKER_THRESHOLD})",
        ]
    return CellResult(
        protocol=protocol,
        fault=case.name,
        stream=stream,
        expected=expected,
        actual=actual,
        passed=not problems,
        detail="; ".join(problems),
        attempts=sum(isinstance(s.event, AttemptStarted) for s in events),
        retries=sum(isinstance(s.event, RetryScheduled) for s in events),
        fallbacks=sum(isinstance(s.event, FallbackTaken) for s in events),
        breaker="opened" if opened else "closed",
        health_failures=health,
        latency_ms=round(latency_ms, 1),
        added_latency_ms=0.0,
        finish_reason=finish_reason,
    )


async def run_fault_matrix(
    *,
    protocols: Sequence[str] = PROTOCOLS,
    faults: Sequence[FaultCase] = FAULTS,
    timeout_s: float = 0.3,
    route_deadline_s: float = 6.0,
    cell_deadline_s: float = 10.0,
    concurrency: int = 8,
) -> FaultsReport:
    """Run every cell. ``timeout_s`` is each route timeout (headers, first token, idle),
    ``route_deadline_s`` the route's whole-request deadline, and a cell still running after
    ``cell_deadline_s`` (the sidecar started and stopped included) has hung."""
    cells = [
        (protocol, case, stream)
        for protocol in protocols
        for case in faults
        for stream in (False, True)
    ]
    results: dict[int, CellResult] = {}
    limiter = anyio.CapacityLimiter(concurrency)
    async with _workdir() as workdir, serve_all_fakes() as fakes:

        async def run(number: int, protocol: str, case: FaultCase, stream: bool) -> None:
            async with limiter:
                results[number] = await _cell(
                    number,
                    protocol,
                    case,
                    stream,
                    fakes,
                    workdir,
                    timeout_s,
                    route_deadline_s,
                    cell_deadline_s,
                )

        async with anyio.create_task_group() as tasks:
            for number, (protocol, case, stream) in enumerate(cells):
                tasks.start_soon(run, number, protocol, case, stream)
    ordered = [results[i] for i in range(len(cells))]
    baseline = {
        (r.protocol, r.stream): r.latency_ms for r in ordered if r.fault == "none" and r.passed
    }
    ordered = [
        msgspec.structs.replace(
            r, added_latency_ms=round(r.latency_ms - baseline.get((r.protocol, r.stream), 0.0), 1)
        )
        for r in ordered
    ]
    passed = sum(r.passed for r in ordered)
    return FaultsReport(
        cells=len(ordered),
        passed=passed,
        failed=len(ordered) - passed,
        timeout_s=timeout_s,
        cell_deadline_s=cell_deadline_s,
        breaker_threshold=BREAKER_THRESHOLD,
        faults={case.name: case.why for case in faults},
        results=ordered,
    )


def faults_markdown(report: FaultsReport) -> str:
    rows = [
        [
            r.protocol,
            r.fault,
            "yes" if r.stream else "no",
            r.expected,
            r.actual,
            "pass" if r.passed else "FAIL",
            r.attempts,
            r.retries,
            r.fallbacks,
            r.breaker,
            f"{r.added_latency_ms:+.0f}",
            r.detail,
        ]
        for r in report.results
    ]
    return "\n".join(
        [
            "# Fault matrix\n",
            f"{report.cells} cells: {report.passed} passed, {report.failed} failed. Route "
            f"timeouts {report.timeout_s:g} s, per-cell deadline {report.cell_deadline_s:g} s, "
            f"breaker threshold {report.breaker_threshold} health failures. Latency is added "
            "over the same protocol's healthy cell, in ms (measured, not asserted).\n",
            table(["fault", "what should happen"], list(report.faults.items())),
            table(
                [
                    "primary",
                    "fault",
                    "stream",
                    "expected",
                    "actual",
                    "result",
                    "attempts",
                    "retries",
                    "fallbacks",
                    "breaker",
                    "added ms",
                    "detail",
                ],
                rows,
            ),
        ]
    )
