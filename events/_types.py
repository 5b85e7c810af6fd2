"""The event types of the request flow: one tagged, versioned msgspec union.

Conventions (see the design's "Events and the log"):

* Every event carries the envelope: a time-ordered ``event_id``, the wall-clock ``ts_ns``, and the
  ``request_id``, ``tenant``, ``task`` and ``config_hash`` of the request it belongs to.
* The tag is ``<name>.v<N>``. Adding an optional field keeps the version (old readers ignore it, new
  readers fill the default); any other change is a new version with its own tag, so a log written by
  an older sidecar always decodes.
* Money is integer micro-dollars; durations are integer nanoseconds from a monotonic clock.
* Prompts and completions are never stored unless the operator opts in: events carry a hash
  and sizes.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

__all__ = [
    "AlertCleared",
    "AlertRaised",
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "BudgetLimitChanged",
    "BudgetOverrun",
    "BudgetRefused",
    "BudgetReservationExpired",
    "BudgetReserved",
    "BudgetToppedUp",
    "CandidateSkipped",
    "CascadeEscalated",
    "CircuitClosed",
    "CircuitHalfOpened",
    "CircuitOpened",
    "CostSettled",
    "DroppedCandidate",
    "Event",
    "EventBase",
    "FallbackTaken",
    "RequestCompleted",
    "RequestFailed",
    "RequestReceived",
    "RetryScheduled",
    "RouteDecided",
    "TaskMistyped",
    "TaskUnrouted",
    "TokenUsage",
]


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event carries."""

    event_id: str
    ts_ns: int
    request_id: str
    tenant: str
    task: str
    config_hash: str


class TokenUsage(msgspec.Struct, frozen=True, omit_defaults=True):
    """Token counts normalized across providers.

    ``input_tokens`` includes cached reads and cache writes; ``output_tokens`` includes reasoning.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


class DroppedCandidate(msgspec.Struct, frozen=True):
    model: str
    provider: str
    reason: str


class RequestReceived(EventBase, frozen=True, tag="request_received.v1"):
    transport: str
    model_requested: str
    stream: bool
    message_count: int
    prompt_chars: int
    prompt_sha256: str
    max_tokens: int | None = None
    # Only set when the operator opts in with ``log_content = true``.
    prompt: str | None = None


class RouteDecided(EventBase, frozen=True, tag="route_decided.v1"):
    route: str
    model_class: str
    # How the request named its target: "task", "class", "model", "inferred" (no task was
    # given; the content's was used) or "default".
    selector: str
    chain: list[str]
    dropped: list[DroppedCandidate]
    input_tokens_estimate: int
    max_tokens: int


class TaskUnrouted(EventBase, frozen=True, tag="task_unrouted.v1"):
    """A request whose task type is missing or unknown took the default route."""

    requested_task: str
    default_route: str


class TaskMistyped(EventBase, frozen=True, tag="task_mistyped.v1"):
    """The request's declared task type does not fit its content (the inferred type does)."""

    declared_task: str
    inferred_task: str
    # The features that decided it, e.g. ["code_fence", "tools"].
    signals: list[str]


class AttemptStarted(EventBase, frozen=True, tag="attempt_started.v1"):
    attempt: int
    model: str
    provider: str
    upstream_model: str


class AttemptSucceeded(EventBase, frozen=True, tag="attempt_succeeded.v1"):
    attempt: int
    model: str
    provider: str
    status: int
    latency_ns: int
    ttft_ns: int | None
    ttlt_ns: int
    chunks: int
    finish_reason: str
    usage: TokenUsage


class AttemptFailed(EventBase, frozen=True, tag="attempt_failed.v1"):
    attempt: int
    model: str
    provider: str
    error_class: str
    status: int | None
    provider_code: str | None
    retry_after_ms: int | None
    message: str
    # True when the failure came after the first token was forwarded downstream.
    mid_stream: bool
    chunks_delivered: int
    latency_ns: int


class FallbackTaken(EventBase, frozen=True, tag="fallback_taken.v1"):
    from_model: str
    to_model: str
    error_class: str


class RetryScheduled(EventBase, frozen=True, tag="retry_scheduled.v1"):
    """The same model is tried again after ``wait_ms`` (Retry-After or backoff)."""

    attempt: int
    model: str
    provider: str
    error_class: str
    wait_ms: int


class CandidateSkipped(EventBase, frozen=True, tag="candidate_skipped.v1"):
    """A candidate of the chain was passed over at dispatch time.

    Reasons: ``breaker_open``, ``provider_failed`` (an earlier attempt showed the provider can't
    serve this request: auth, quota, model gone), ``smaller_context`` (after a context
    overflow, only a larger window can help).
    """

    model: str
    provider: str
    reason: str


class CascadeEscalated(EventBase, frozen=True, tag="cascade_escalated.v1"):
    """A cascade route's cheap answer failed a check; the request goes to the route's class.

    Reasons: ``empty``, ``truncated`` (finish reason length), ``refused`` (content filter),
    ``invalid_json``, ``schema_mismatch``, ``failed`` (no cheap candidate answered).
    """

    from_model: str
    from_class: str
    to_class: str
    reason: str


class CircuitOpened(EventBase, frozen=True, tag="circuit_opened.v1"):
    """The provider's breaker opened: its models are skipped until the cooldown has passed.

    The envelope is that of the request whose failure tripped it.
    """

    provider: str
    failures: int
    window_s: float
    cooldown_s: float


class CircuitHalfOpened(EventBase, frozen=True, tag="circuit_half_opened.v1"):
    """The cooldown passed: this request goes through as a probe."""

    provider: str


class CircuitClosed(EventBase, frozen=True, tag="circuit_closed.v1"):
    """A probe succeeded: the provider takes traffic again."""

    provider: str


class BudgetReserved(EventBase, frozen=True, tag="budget_reserved.v1"):
    """The worst-case price of the next paid call, held against every budget that applies.

    Durable before the provider is called. ``budgets`` are budget keys
    (``<budget name>/<scope value>/<period>``, e.g. ``tenant-monthly/acme/2026-11``).
    """

    reservation_id: str
    budgets: list[str]
    amount_micros: int
    # Wall-clock ns after which an unsettled reservation is counted as spent.
    expires_at_ns: int
    model: str
    provider: str


class BudgetToppedUp(EventBase, frozen=True, tag="budget_topped_up.v1"):
    """The reservation grew before a pricier call (a fallback, a retry after a paid failure)."""

    reservation_id: str
    amount_micros: int
    model: str
    provider: str


class BudgetRefused(EventBase, frozen=True, tag="budget_refused.v1"):
    """A reservation (or top-up) would have passed a budget's limit: no provider was called."""

    budget: str
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    needed_micros: int


class CostSettled(EventBase, frozen=True, tag="cost_settled.v1"):
    """One attempt's actual cost, from the provider's reported usage.

    It moves ``cost_micros`` from held to spent; ``final`` releases what is left of the hold.
    """

    reservation_id: str
    attempt: int
    model: str
    provider: str
    usage: TokenUsage
    cost_micros: int
    final: bool


class BudgetOverrun(EventBase, frozen=True, tag="budget_overrun.v1"):
    """A provider billed more than the reserved worst case (the only way past a limit)."""

    reservation_id: str
    reserved_micros: int
    actual_micros: int


class BudgetReservationExpired(EventBase, frozen=True, tag="budget_reservation_expired.v1"):
    """A reservation that was never settled is counted as spent at what it still held."""

    reservation_id: str
    counted_micros: int


class BudgetLimitChanged(EventBase, frozen=True, tag="budget_limit_changed.v1"):
    """An operator changed a budget's limit at run time (``budget`` is the budget's name, or a
    key for one scope value)."""

    budget: str
    limit_micros: int


class AlertRaised(EventBase, frozen=True, tag="alert_raised.v1"):
    """A condition an operator should see began (a breaker opened, a class mostly served by its
    degraded path, a budget past a threshold, many unrouted tasks).

    ``alert`` names the rule (``breaker_open``, ``degraded_share``, ``budget_threshold``,
    ``unrouted_rate``); ``subject`` what it is about (a provider, a class, a budget key,
    ``tasks``). Alerts belong to the deployment, not to a request: the envelope's request id,
    tenant and task are empty, its time is that of the event that tripped the rule, and
    ``cause_event_id`` names that event.
    """

    alert: str
    subject: str
    value: float
    threshold: float
    message: str
    cause_event_id: str = ""


class AlertCleared(EventBase, frozen=True, tag="alert_cleared.v1"):
    """The condition of an earlier :class:`AlertRaised` with the same ``alert`` and ``subject``
    ended."""

    alert: str
    subject: str
    value: float
    threshold: float
    cause_event_id: str = ""


class RequestCompleted(EventBase, frozen=True, tag="request_completed.v1"):
    model: str
    provider: str
    attempts: int
    fallbacks: int
    finish_reason: str
    usage: TokenUsage
    latency_ns: int
    ttft_ns: int | None
    ttlt_ns: int
    completion_chars: int
    completion_sha256: str
    completion: str | None = None
    # What the request's attempts cost, in micro-dollars (all of them, failed ones included).
    cost_micros: int = 0


class RequestFailed(EventBase, frozen=True, tag="request_failed.v1"):
    # The client-facing error type, e.g. "all_candidates_failed" or "upstream_stream_broken".
    error_type: str
    message: str
    attempts: int
    latency_ns: int
    chunks_delivered: int = 0


Event: TypeAlias = (
    RequestReceived
    | RouteDecided
    | TaskUnrouted
    | TaskMistyped
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | FallbackTaken
    | RetryScheduled
    | CandidateSkipped
    | CascadeEscalated
    | CircuitOpened
    | CircuitHalfOpened
    | CircuitClosed
    | BudgetReserved
    | BudgetToppedUp
    | BudgetRefused
    | CostSettled
    | BudgetOverrun
    | BudgetReservationExpired
    | BudgetLimitChanged
    | AlertRaised
    | AlertCleared
    | RequestCompleted
    | RequestFailed
)
