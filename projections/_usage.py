"""The usage view: what each tenant's tasks cost and how they were served, by day.

A pure fold of the log. Rows are keyed by tenant, task, model class, model,
provider and UTC day
and hold counters, token and cost sums, and duration sketches; every field merges by addition, so
rows combine into any coarser grouping (a month, all tenants, one provider) exactly, and a sketch's
quantiles stay within 1% after any merge.

Attribution — each figure lands on the row of the model it concerns:

* requests, successes, failures (by the client-facing error type), latency, time to first and last
  token: the request's terminal event, on the serving model (a failure: the last model tried, or
  no model when none was);
* attempts and attempt errors (by error class), retries, fallbacks, cascade escalations: the model
  attempted (for a fallback or an escalation, the model left behind);
* tokens and cost: each attempt's ``CostSettled``, on that attempt's model; an expired reservation's
  cost on the model it was held for.

The model class is the one the route chose (``RouteDecided``), for every row of the request.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, TypeAlias

import msgspec

from events import (
    AttemptFailed,
    AttemptSucceeded,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CascadeEscalated,
    CostSettled,
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    RouteDecided,
)

from ._sketch import DurationSketch, SketchState

__all__ = [
    "USAGE_DIMENSIONS",
    "USAGE_EVENT_TYPES",
    "UsageFilter",
    "UsageKey",
    "UsageRow",
    "UsageRowState",
    "UsageState",
    "UsageView",
]

Dimension = Literal["tenant", "task", "model_class", "model", "provider", "day"]
USAGE_DIMENSIONS: Final[tuple[Dimension, ...]] = (
    "tenant",
    "task",
    "model_class",
    "model",
    "provider",
    "day",
)

_NS_PER_DAY: Final = 86_400 * 1_000_000_000


class UsageKey(msgspec.Struct, frozen=True, array_like=True, order=True):
    tenant: str
    task: str
    model_class: str
    model: str
    provider: str
    # UTC date, ISO format (sorts as dates do).
    day: str


class UsageRowState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    key: UsageKey
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = {}
    attempts: int = 0
    attempt_errors: dict[str, int] = {}
    retries: int = 0
    fallbacks: int = 0
    cascade_escalations: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    latency: SketchState | None = None
    ttft: SketchState | None = None
    ttlt: SketchState | None = None


class _OpenRequest(msgspec.Struct, frozen=True, array_like=True):
    request_id: str
    tenant: str
    task: str
    model_class: str
    providers: list[tuple[str, str]]
    held_for: str
    reservation_open: bool
    ended: bool
    provisional: int
    expiry_row: tuple[str, str, str, str, str, int] | None


class UsageState(msgspec.Struct, frozen=True, kw_only=True):
    """The whole view, rows sorted by key: equal views encode to equal bytes."""

    by_day: bool
    rows: list[UsageRowState]
    # Requests seen but not yet ended: request id → (model class, {model: provider}).
    open_requests: list[_OpenRequest]


class UsageRow:
    """One row's figures; ``merge`` adds another row's.

    Counters start as the class's zeros and become instance attributes on first increment, so
    a new row (most events of a sparse log make one) costs three sketches and two dicts.
    """

    requests = 0
    successes = 0
    attempts = 0
    retries = 0
    fallbacks = 0
    cascade_escalations = 0
    input_tokens = 0
    cached_input_tokens = 0
    output_tokens = 0
    reasoning_tokens = 0
    cost_micros = 0

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.attempt_errors: dict[str, int] = {}
        self.latency = DurationSketch()
        self.ttft = DurationSketch()
        self.ttlt = DurationSketch()

    def merge(self, other: UsageRow) -> None:
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("failures", "attempt_errors"):
            mine: dict[str, int] = getattr(self, name)
            for kind, n in getattr(other, name).items():
                mine[kind] = mine.get(kind, 0) + n
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.ttlt.merge(other.ttlt)

    def state(self, key: UsageKey) -> UsageRowState:
        def sketch(s: DurationSketch) -> SketchState | None:
            return s.state() if s.count else None

        return UsageRowState(
            key=key,
            failures=dict(sorted(self.failures.items())),
            attempt_errors=dict(sorted(self.attempt_errors.items())),
            latency=sketch(self.latency),
            ttft=sketch(self.ttft),
            ttlt=sketch(self.ttlt),
            **{name: getattr(self, name) for name in _COUNTERS},
        )

    @classmethod
    def from_state(cls, state: UsageRowState) -> UsageRow:
        row = cls()
        for name in _COUNTERS:
            setattr(row, name, getattr(state, name))
        row.failures = dict(state.failures)
        row.attempt_errors = dict(state.attempt_errors)
        for name in ("latency", "ttft", "ttlt"):
            sketch: SketchState | None = getattr(state, name)
            if sketch is not None:
                setattr(row, name, DurationSketch.from_state(sketch))
        return row


_COUNTERS: Final = (
    "requests",
    "successes",
    "attempts",
    "retries",
    "fallbacks",
    "cascade_escalations",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_micros",
)


class UsageFilter(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str | None = None
    task: str | None = None
    model: str | None = None
    provider: str | None = None
    model_class: str | None = None
    # Inclusive UTC dates, ISO format.
    since: str | None = None
    until: str | None = None

    def admits(self, key: UsageKey) -> bool:
        return (
            (self.tenant is None or key.tenant == self.tenant)
            and (self.task is None or key.task == self.task)
            and (self.model is None or key.model == self.model)
            and (self.provider is None or key.provider == self.provider)
            and (self.model_class is None or key.model_class == self.model_class)
            and (self.since is None or key.day >= self.since)
            and (self.until is None or key.day <= self.until)
        )


class _Request:
    """What the fold remembers of a request until nothing more can be said about it."""

    __slots__ = (
        "ended",
        "expiry_row",
        "held_for",
        "model_class",
        "providers",
        "provisional",
        "reservation_open",
        "task",
        "tenant",
    )

    def __init__(self, tenant: str, task: str, model_class: str) -> None:
        # An expiry is the sweeper's event, without the request's tenant and task: kept here.
        self.tenant = tenant
        self.task = task
        self.model_class = model_class
        # The provider of each model this request tried (events that name only a model use it).
        self.providers: dict[str, str] = {}
        # The model the reservation was last held for (an expiry names only the reservation).
        self.held_for = ""
        self.reservation_open = False
        self.ended = False
        # What an expiry charged and a late settlement may still take back (the budget book's
        # rule), and the row it was charged to.
        self.provisional = 0
        self.expiry_row: _RowKey | None = None


class UsageView:
    """The fold. ``apply`` takes events in log order; ``state`` is the encodable result."""

    def __init__(self, *, by_day: bool = True) -> None:
        # Without days (all time in one row per key: what metrics need), the view stays as
        # small as the set of tenants, tasks and models, however long the log.
        self.by_day = by_day
        self._rows: dict[tuple[str, str, str, str, str, int], UsageRow] = {}
        self._requests: dict[str, _Request] = {}
        self._days: dict[int, str] = {}

    # -- reading -------------------------------------------------------------------------------

    def rows(self) -> Iterable[tuple[UsageKey, UsageRow]]:
        for (tenant, task, cls, model, provider, day), row in self._rows.items():
            yield UsageKey(tenant, task, cls, model, provider, self._day(day)), row

    def query(
        self, where: UsageFilter | None = None, by: Sequence[Dimension] = USAGE_DIMENSIONS
    ) -> list[tuple[dict[str, str], UsageRow]]:
        """Rows matching ``where``, merged into one row per distinct value of the ``by``
        dimensions (none: one row, the total), sorted by those values."""
        merged: dict[tuple[str, ...], UsageRow] = {}
        for key, row in self.rows():
            if where is not None and not where.admits(key):
                continue
            group = tuple(getattr(key, d) for d in by)
            target = merged.get(group)
            if target is None:
                target = merged[group] = UsageRow()
            target.merge(row)
        return [(dict(zip(by, group, strict=True)), merged[group]) for group in sorted(merged)]

    def state(self) -> UsageState:
        rows = sorted(self.rows(), key=lambda kv: kv[0])
        return UsageState(
            by_day=self.by_day,
            rows=[row.state(key) for key, row in rows],
            open_requests=[
                _OpenRequest(
                    rid,
                    r.tenant,
                    r.task,
                    r.model_class,
                    list(r.providers.items()),
                    r.held_for,
                    r.reservation_open,
                    r.ended,
                    r.provisional,
                    r.expiry_row,
                )
                for rid, r in sorted(self._requests.items())
            ],
        )

    @classmethod
    def from_state(cls, state: UsageState) -> UsageView:
        view = cls(by_day=state.by_day)
        for row in state.rows:
            k = row.key
            day = datetime.date.fromisoformat(k.day).toordinal() - _EPOCH_ORDINAL
            view._rows[(k.tenant, k.task, k.model_class, k.model, k.provider, day)] = (
                UsageRow.from_state(row)
            )
        for r in state.open_requests:
            request = view._requests[r.request_id] = _Request(r.tenant, r.task, r.model_class)
            request.providers = dict(r.providers)
            request.held_for = r.held_for
            request.reservation_open = r.reservation_open
            request.ended = r.ended
            request.provisional = r.provisional
            request.expiry_row = r.expiry_row
        return view

    # -- the fold ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _day(self, index: int) -> str:
        day = self._days.get(index)
        if day is None:
            day = self._days[index] = datetime.date.fromordinal(index + _EPOCH_ORDINAL).isoformat()
        return day

    # Each handler looks its request up once and passes it on: this is the replay's hot path.

    def _key(self, e: Event, request: _Request | None, model: str, provider: str) -> _RowKey:
        day = e.ts_ns // _NS_PER_DAY if self.by_day else 0
        if request is None:
            return (e.tenant, e.task, "", model, provider, day)
        return (request.tenant, request.task, request.model_class, model, provider, day)

    def _row(self, e: Event, request: _Request | None, model: str, provider: str) -> UsageRow:
        return self._row_at(self._key(e, request, model, provider))

    def _row_at(self, key: _RowKey) -> UsageRow:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = UsageRow()
        return row

    def _route_decided(self, e: RouteDecided) -> None:
        self._requests[e.request_id] = _Request(e.tenant, e.task, e.model_class)

    def _attempt_succeeded(self, e: AttemptSucceeded) -> None:
        request = self._requests.get(e.request_id)
        if request is not None:
            request.providers[e.model] = e.provider
        self._row(e, request, e.model, e.provider).attempts += 1

    def _attempt_failed(self, e: AttemptFailed) -> None:
        request = self._requests.get(e.request_id)
        if request is not None:
            request.providers[e.model] = e.provider
        row = self._row(e, request, e.model, e.provider)
        row.attempts += 1
        errors = row.attempt_errors
        errors[e.error_class] = errors.get(e.error_class, 0) + 1

    def _retry(self, e: RetryScheduled) -> None:
        self._row(e, self._requests.get(e.request_id), e.model, e.provider).retries += 1

    def _fallback(self, e: FallbackTaken) -> None:
        request = self._requests.get(e.request_id)
        self._row(e, request, e.from_model, _provider(request, e.from_model)).fallbacks += 1

    def _escalated(self, e: CascadeEscalated) -> None:
        request = self._requests.get(e.request_id)
        model = e.from_model
        self._row(e, request, model, _provider(request, model)).cascade_escalations += 1

    def _held(self, e: BudgetReserved | BudgetToppedUp) -> None:
        request = self._requests.get(e.request_id)
        if request is not None:
            request.providers[e.model] = e.provider
            request.held_for = e.model
            request.reservation_open = True

    def _settled(self, e: CostSettled) -> None:
        request = self._requests.get(e.request_id)
        row = self._row(e, request, e.model, e.provider)
        usage = e.usage
        row.input_tokens += usage.input_tokens
        row.cached_input_tokens += usage.cached_input_tokens
        row.output_tokens += usage.output_tokens
        row.reasoning_tokens += usage.reasoning_tokens
        row.cost_micros += e.cost_micros
        if request is None:
            return
        if request.provisional and request.expiry_row is not None:
            # A settlement after the expiry: what it costs replaces what the expiry charged
            # (all of it once final), as the budget book does.
            taken = request.provisional if e.final else min(e.cost_micros, request.provisional)
            request.provisional -= taken
            self._rows[request.expiry_row].cost_micros -= taken
        if e.final:
            self._close_reservation(e.request_id, request)

    def _expired(self, e: BudgetReservationExpired) -> None:
        request = self._requests.get(e.request_id)
        model = "" if request is None else request.held_for
        key = self._key(e, request, model, _provider(request, model))
        self._row_at(key).cost_micros += e.counted_micros
        if request is not None:
            # Still remembered: a late settlement may take the charge back.
            request.provisional += e.counted_micros
            request.expiry_row = key

    def _completed(self, e: RequestCompleted) -> None:
        request = self._requests.get(e.request_id)
        row = self._row(e, request, e.model, e.provider)
        row.requests += 1
        row.successes += 1
        row.latency.add(e.latency_ns)
        if e.ttft_ns is not None:
            row.ttft.add(e.ttft_ns)
        row.ttlt.add(e.ttlt_ns)
        if request is not None:
            self._end(e.request_id, request)

    def _failed(self, e: RequestFailed) -> None:
        request = self._requests.get(e.request_id)
        # The last model tried: providers keeps the order models were first tried in.
        model = next(reversed(request.providers), "") if request is not None else ""
        row = self._row(e, request, model, _provider(request, model))
        row.requests += 1
        row.failures[e.error_type] = row.failures.get(e.error_type, 0) + 1
        row.latency.add(e.latency_ns)
        if request is not None:
            self._end(e.request_id, request)

    # A request is forgotten once it has ended and its reservation is closed (settled or
    # expired), whichever comes last: only then can no later event need its context.

    def _end(self, request_id: str, request: _Request) -> None:
        request.ended = True
        if not request.reservation_open:
            del self._requests[request_id]

    def _close_reservation(self, request_id: str, request: _Request) -> None:
        request.reservation_open = False
        if request.ended:
            del self._requests[request_id]


def _provider(request: _Request | None, model: str) -> str:
    return "" if request is None else request.providers.get(model, "")


_EPOCH_ORDINAL: Final = datetime.date(1970, 1, 1).toordinal()
_RowKey: TypeAlias = tuple[str, str, str, str, str, int]

_HANDLERS: Final[dict[type[Event], Callable[[UsageView, object], None]]] = {
    RouteDecided: UsageView._route_decided,  # type: ignore[dict-item]
    AttemptSucceeded: UsageView._attempt_succeeded,  # type: ignore[dict-item]
    AttemptFailed: UsageView._attempt_failed,  # type: ignore[dict-item]
    RetryScheduled: UsageView._retry,  # type: ignore[dict-item]
    FallbackTaken: UsageView._fallback,  # type: ignore[dict-item]
    CascadeEscalated: UsageView._escalated,  # type: ignore[dict-item]
    BudgetReserved: UsageView._held,  # type: ignore[dict-item]
    BudgetToppedUp: UsageView._held,  # type: ignore[dict-item]
    CostSettled: UsageView._settled,  # type: ignore[dict-item]
    BudgetReservationExpired: UsageView._expired,  # type: ignore[dict-item]
    RequestCompleted: UsageView._completed,  # type: ignore[dict-item]
    RequestFailed: UsageView._failed,  # type: ignore[dict-item]
}

# The event types the fold reads; a replay can skip the rest without decoding them.
USAGE_EVENT_TYPES: Final[tuple[type[Event], ...]] = tuple(_HANDLERS)
