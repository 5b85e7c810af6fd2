"""The audit timeline of one request: every event in log order, each in one line an operator can
read, plus a summary of the decisions — "why did the router do that?" in one command.

Pure: it takes the request's stored events (``EventStore.read_request``) and returns values.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events import (
    AlertCleared,
    AlertRaised,
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    BudgetLimitChanged,
    BudgetOverrun,
    BudgetRefused,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CandidateSkipped,
    CascadeEscalated,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CostSettled,
    DroppedCandidate,
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    StoredEvent,
    TaskMistyped,
    TaskUnrouted,
    encode_event_json,
)

__all__ = [
    "AttemptSummary",
    "AuditEntry",
    "AuditTimeline",
    "audit_timeline",
    "describe_event",
    "render_timeline",
]


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    # Milliseconds since the request's first event (wall clock of the events).
    at_ms: float
    type: str
    text: str
    event: msgspec.Raw


class AttemptSummary(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    model: str
    provider: str
    # "succeeded", or the error class of the failure.
    outcome: str
    status: int | None
    latency_ms: float | None
    ttft_ms: float | None = None


class AuditTimeline(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    tenant: str
    task: str
    config_hashes: list[str]
    route: str | None
    model_class: str | None
    chain: list[str]
    dropped: list[DroppedCandidate]
    attempts: list[AttemptSummary]
    # Breaker states the request met: "<provider>: open|half-open|closed" in order.
    breakers: list[str]
    reserved_micros: int
    cost_micros: int
    served_by: str | None
    # "completed", "failed: <error type>", or "in flight" (no terminal event yet).
    outcome: str
    entries: list[AuditEntry]


def audit_timeline(events: Sequence[StoredEvent]) -> AuditTimeline | None:
    """The timeline of the request whose events these are (None when there are none)."""
    if not events:
        return None
    first = events[0].event
    start_ns = first.ts_ns
    route: RouteDecided | None = None
    attempts: dict[int, AttemptSummary] = {}
    breakers: list[str] = []
    reserved = cost = 0
    served_by: str | None = None
    outcome = "in flight"
    hashes: list[str] = []
    entries: list[AuditEntry] = []
    for stored in events:
        e = stored.event
        if e.config_hash not in hashes:
            hashes.append(e.config_hash)
        match e:
            case RouteDecided():
                route = e
            case AttemptStarted():
                attempts[e.attempt] = AttemptSummary(
                    attempt=e.attempt,
                    model=e.model,
                    provider=e.provider,
                    outcome="started",
                    status=None,
                    latency_ms=None,
                )
            case AttemptSucceeded():
                attempts[e.attempt] = AttemptSummary(
                    attempt=e.attempt,
                    model=e.model,
                    provider=e.provider,
                    outcome="succeeded",
                    status=e.status,
                    latency_ms=_ms(e.latency_ns),
                    ttft_ms=None if e.ttft_ns is None else _ms(e.ttft_ns),
                )
            case AttemptFailed():
                attempts[e.attempt] = AttemptSummary(
                    attempt=e.attempt,
                    model=e.model,
                    provider=e.provider,
                    outcome=e.error_class,
                    status=e.status,
                    latency_ms=_ms(e.latency_ns),
                )
            case CircuitOpened():
                breakers.append(f"{e.provider}: open")
            case CircuitHalfOpened():
                breakers.append(f"{e.provider}: half-open")
            case CircuitClosed():
                breakers.append(f"{e.provider}: closed")
            case CandidateSkipped() if e.reason == "breaker_open":
                breakers.append(f"{e.provider}: open")
            case BudgetReserved() | BudgetToppedUp():
                reserved += e.amount_micros
            case CostSettled():
                cost += e.cost_micros
            case BudgetReservationExpired():
                cost += e.counted_micros
            case RequestCompleted():
                served_by = f"{e.model} ({e.provider})"
                outcome = "completed"
            case RequestFailed():
                outcome = f"failed: {e.error_type}"
            case _:
                pass
        entries.append(
            AuditEntry(
                seq=stored.seq,
                at_ms=_ms(e.ts_ns - start_ns),
                type=type(e).__struct_config__.tag,  # type: ignore[arg-type]
                text=describe_event(e),
                event=msgspec.Raw(encode_event_json(e)),
            )
        )
    return AuditTimeline(
        request_id=first.request_id,
        tenant=first.tenant,
        task=first.task,
        config_hashes=hashes,
        route=None if route is None else route.route,
        model_class=None if route is None else route.model_class,
        chain=[] if route is None else route.chain,
        dropped=[] if route is None else route.dropped,
        attempts=[attempts[n] for n in sorted(attempts)],
        breakers=breakers,
        reserved_micros=reserved,
        cost_micros=cost,
        served_by=served_by,
        outcome=outcome,
        entries=entries,
    )


def describe_event(e: Event) -> str:
    """One line saying what the event means."""
    match e:
        case RequestReceived():
            stream = "streamed" if e.stream else "not streamed"
            return (
                f"received over {e.transport}: model {e.model_requested!r}, {stream}, "
                f"{e.message_count} messages, {e.prompt_chars} chars, max_tokens {e.max_tokens}"
            )
        case RouteDecided():
            dropped = "; ".join(f"{d.model} ({d.reason})" for d in e.dropped) or "none"
            return (
                f"route {e.route!r} (by {e.selector}) → class {e.model_class}: "
                f"chain {' → '.join(e.chain) or '(empty)'}; dropped: {dropped}; "
                f"~{e.input_tokens_estimate} input tokens, max_tokens {e.max_tokens}"
            )
        case TaskUnrouted():
            return f"task {e.requested_task!r} has no route: default route {e.default_route!r}"
        case TaskMistyped():
            return (
                f"declared task {e.declared_task!r} looks like {e.inferred_task!r} "
                f"({', '.join(e.signals)})"
            )
        case AttemptStarted():
            return f"attempt {e.attempt}: {e.model} on {e.provider} ({e.upstream_model})"
        case AttemptSucceeded():
            ttft = "-" if e.ttft_ns is None else f"{_ms(e.ttft_ns):.1f} ms"
            return (
                f"attempt {e.attempt} succeeded: HTTP {e.status}, first token {ttft}, "
                f"last token {_ms(e.ttlt_ns):.1f} ms, {e.chunks} chunks, "
                f"finish {e.finish_reason}, {e.usage.input_tokens} in / "
                f"{e.usage.output_tokens} out tokens"
            )
        case AttemptFailed():
            status = "no response" if e.status is None else f"HTTP {e.status}"
            where = f", mid-stream after {e.chunks_delivered} chunks" if e.mid_stream else ""
            retry = "" if e.retry_after_ms is None else f", retry-after {e.retry_after_ms} ms"
            return (
                f"attempt {e.attempt} failed: {e.error_class} ({status}{where}{retry}) after "
                f"{_ms(e.latency_ns):.1f} ms: {e.message}"
            )
        case RetryScheduled():
            return f"retry {e.model} in {e.wait_ms} ms after {e.error_class}"
        case FallbackTaken():
            return f"fallback {e.from_model} → {e.to_model} after {e.error_class}"
        case CandidateSkipped():
            return f"skipped {e.model} on {e.provider}: {e.reason}"
        case CascadeEscalated():
            return (
                f"cascade: {e.from_model} ({e.from_class}) answer {e.reason}, "
                f"escalated to class {e.to_class}"
            )
        case CircuitOpened():
            return (
                f"breaker of {e.provider} opened: {e.failures} failures in {e.window_s:g} s, "
                f"cooldown {e.cooldown_s:g} s"
            )
        case CircuitHalfOpened():
            return f"breaker of {e.provider} half-open: this request is a probe"
        case CircuitClosed():
            return f"breaker of {e.provider} closed: the probe succeeded"
        case BudgetReserved():
            return (
                f"reserved {_usd(e.amount_micros)} for {e.model} against "
                f"{', '.join(e.budgets) or 'no budget'} (reservation {e.reservation_id})"
            )
        case BudgetToppedUp():
            return f"topped up the reservation by {_usd(e.amount_micros)} for {e.model}"
        case BudgetRefused():
            return (
                f"refused by budget {e.budget}: needs {_usd(e.needed_micros)}, limit "
                f"{_usd(e.limit_micros)}, spent {_usd(e.spent_micros)}, "
                f"reserved {_usd(e.reserved_micros)}"
            )
        case CostSettled():
            final = ", reservation released" if e.final else ""
            return f"attempt {e.attempt} on {e.model} cost {_usd(e.cost_micros)}{final}"
        case BudgetOverrun():
            return (
                f"overrun: billed {_usd(e.actual_micros)} against a reserved "
                f"{_usd(e.reserved_micros)}"
            )
        case BudgetReservationExpired():
            return f"reservation expired unsettled: {_usd(e.counted_micros)} counted as spent"
        case BudgetLimitChanged():
            return f"limit of {e.budget} set to {_usd(e.limit_micros)}"
        case AlertRaised():
            return f"alert {e.alert} on {e.subject}: {e.message}"
        case AlertCleared():
            return f"alert {e.alert} on {e.subject} cleared ({e.value:g} ≤ {e.threshold:g})"
        case RequestCompleted():
            return (
                f"completed by {e.model} on {e.provider} in {_ms(e.latency_ns):.1f} ms: "
                f"{e.attempts} attempts, {e.fallbacks} fallbacks, finish {e.finish_reason}, "
                f"cost {_usd(e.cost_micros)}"
            )
        case RequestFailed():
            return f"failed: {e.error_type} after {e.attempts} attempts: {e.message}"


def render_timeline(timeline: AuditTimeline) -> str:
    """The timeline as text for a terminal."""
    t = timeline
    lines = [
        f"request {t.request_id}  tenant {t.tenant or '-'}  task {t.task or '-'}",
        f"config  {', '.join(t.config_hashes)}",
        f"route   {t.route or '-'} → class {t.model_class or '-'}",
        f"chain   {' → '.join(t.chain) or '-'}",
    ]
    for d in t.dropped:
        lines.append(f"dropped {d.model} ({d.provider}): {d.reason}")
    for a in t.attempts:
        status = "" if a.status is None else f" HTTP {a.status}"
        took = "" if a.latency_ms is None else f" {a.latency_ms:.1f} ms"
        lines.append(f"attempt {a.attempt}: {a.model} ({a.provider}) → {a.outcome}{status}{took}")
    if t.breakers:
        lines.append(f"breakers {'; '.join(t.breakers)}")
    held = f"reserved {_usd(t.reserved_micros)}" if t.reserved_micros else "no reservation"
    lines.append(f"budget  {held}, cost {_usd(t.cost_micros)}")
    lines.append(f"result  {t.outcome}" + (f" by {t.served_by}" if t.served_by else ""))
    lines.append("")
    width = max(len(e.type) for e in t.entries)
    for entry in t.entries:
        lines.append(
            f"{entry.seq:>8}  +{entry.at_ms:>9.1f} ms  {entry.type:<{width}}  {entry.text}"
        )
    return "\n".join(lines)


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _usd(micros: int) -> str:
    return f"${micros / 1e6:.6f}"
