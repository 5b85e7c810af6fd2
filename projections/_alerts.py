"""Alert rules: a pure fold of the log that says when a condition an operator should see begins
or ends.

* ``breaker_open`` — a provider's breaker opened (cleared when it closes).
* ``degraded_share`` — over a sliding window, more than a threshold share of a class's completed
  requests were served off the class (by its declared degraded path): silent quality loss is
  worse than declared downtime. Requires a minimum number of requests in the window.
* ``budget_threshold`` — a budget's spend passed a fraction of its limit (80% and 95% by default);
  cleared if a raised limit brings it back under.
* ``unrouted_rate`` — over a sliding window, more than a threshold share of requests had a task
  type that was missing, unknown or did not fit their content.

Time is the events' own time, so a replay raises exactly the alerts the live fold raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Final, Literal

import msgspec

from events import (
    BudgetLimitChanged,
    BudgetReservationExpired,
    BudgetReserved,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    CostSettled,
    Event,
    RequestCompleted,
    RequestFailed,
    RouteDecided,
    TaskMistyped,
    TaskUnrouted,
)

from ._budget import BudgetBook

__all__ = ["AlertBook", "AlertChange", "AlertPolicy", "AlertState", "BreakerState"]

BreakerState = Literal["closed", "open", "half_open"]
_NS: Final = 1_000_000_000


class AlertPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The rules' thresholds (the config's ``[alerts]`` table)."""

    degraded_share: float = 0.30
    degraded_window_s: float = 300.0
    degraded_min_requests: int = 20
    budget_thresholds: tuple[float, ...] = (0.80, 0.95)
    unrouted_share: float = 0.10
    unrouted_window_s: float = 300.0
    unrouted_min_requests: int = 20


class AlertChange(msgspec.Struct, frozen=True, kw_only=True):
    """An alert raised or cleared by one event."""

    raised: bool
    alert: str
    subject: str
    value: float
    threshold: float
    message: str


class _WindowState(msgspec.Struct, frozen=True, array_like=True):
    subject: str
    samples: list[tuple[int, bool]]


class AlertState(msgspec.Struct, frozen=True, kw_only=True):
    """The encodable fold state, sorted: equal states encode to equal bytes."""

    active: list[AlertChange]
    breakers: dict[str, BreakerState]
    degraded: list[_WindowState]
    unrouted: list[tuple[int, bool]]
    request_classes: list[tuple[str, str]]
    mistyped_requests: list[str]
    held: list[tuple[str, list[str]]]


class _Window:
    """Samples (time, hit) within the last ``span_ns``, with a running count of hits."""

    __slots__ = ("hits", "samples", "span_ns")

    def __init__(self, span_ns: int) -> None:
        self.span_ns = span_ns
        self.samples: deque[tuple[int, bool]] = deque()
        self.hits = 0

    def add(self, ts_ns: int, hit: bool) -> None:
        self.samples.append((ts_ns, hit))
        self.hits += hit
        horizon = ts_ns - self.span_ns
        samples = self.samples
        while samples and samples[0][0] <= horizon:
            self.hits -= samples.popleft()[1]

    @property
    def share(self) -> float:
        return self.hits / len(self.samples) if self.samples else 0.0


class AlertBook:
    """The fold. ``apply`` returns the alerts the event raised or cleared.

    ``primary_models`` maps a route's class to the models that serve it without degrading (the
    class's members, plus the cheap class of a cascade route): anything else that serves one of
    its requests is the degraded path.
    """

    def __init__(self, policy: AlertPolicy, primary_models: Mapping[str, frozenset[str]]) -> None:
        self.policy = policy
        self._primary = primary_models
        self._active: dict[tuple[str, str], AlertChange] = {}
        self.breakers: dict[str, BreakerState] = {}
        self._degraded: dict[str, _Window] = {}
        self._unrouted = _Window(int(policy.unrouted_window_s * _NS))
        # Requests in flight: their class (for the degraded share), and those flagged unrouted.
        self._classes: dict[str, str] = {}
        self._flagged: set[str] = set()
        # Open reservations' budget keys.
        self._held: dict[str, list[str]] = {}

    def active(self) -> list[AlertChange]:
        return [self._active[k] for k in sorted(self._active)]

    def apply(self, event: Event, budgets: BudgetBook | None = None) -> list[AlertChange]:
        """Fold ``event``. ``budgets`` is the budget book with ``event`` already applied (the
        budget rule reads it; without it the rule is off)."""
        match event:
            case RouteDecided():
                self._classes[event.request_id] = event.model_class
            case TaskUnrouted() | TaskMistyped():
                self._flagged.add(event.request_id)
            case RequestCompleted():
                return self._degraded_rule(event) + self._unrouted_rule(event)
            case RequestFailed():
                self._classes.pop(event.request_id, None)
                return self._unrouted_rule(event)
            case CircuitOpened():
                self.breakers[event.provider] = "open"
                return self._raise(
                    "breaker_open",
                    event.provider,
                    event.failures,
                    0,
                    f"breaker of {event.provider} opened after {event.failures} failures; "
                    f"its models are skipped for {event.cooldown_s:g} s",
                )
            case CircuitHalfOpened():
                self.breakers[event.provider] = "half_open"
            case CircuitClosed():
                self.breakers[event.provider] = "closed"
                return self._clear("breaker_open", event.provider, 0, 0)
            case BudgetReserved():
                # The settlement that closes a reservation no longer finds it in the book.
                self._held[event.reservation_id] = event.budgets
            case CostSettled():
                keys = (self._held.pop if event.final else self._held.get)(event.reservation_id, [])
                if budgets is not None:
                    return self._budget_rule(budgets, keys)
            case BudgetReservationExpired():
                keys = self._held.pop(event.reservation_id, [])
                if budgets is not None:
                    return self._budget_rule(budgets, keys)
            case BudgetLimitChanged() if budgets is not None:
                return self._budget_rule(budgets, [s.key for s in budgets.snapshot().budgets])
            case _:
                pass
        return []

    # -- rules ---------------------------------------------------------------------------------

    def _degraded_rule(self, e: RequestCompleted) -> list[AlertChange]:
        model_class = self._classes.pop(e.request_id, None)
        if model_class is None:
            return []
        window = self._degraded.get(model_class)
        if window is None:
            span = int(self.policy.degraded_window_s * _NS)
            window = self._degraded[model_class] = _Window(span)
        window.add(e.ts_ns, e.model not in self._primary.get(model_class, frozenset()))
        return self._share_rule(
            "degraded_share",
            model_class,
            window,
            self.policy.degraded_share,
            self.policy.degraded_min_requests,
            f"of class {model_class}'s last {{n}} requests were served off the class",
        )

    def _unrouted_rule(self, e: RequestCompleted | RequestFailed) -> list[AlertChange]:
        flagged = e.request_id in self._flagged
        self._flagged.discard(e.request_id)
        self._unrouted.add(e.ts_ns, flagged)
        return self._share_rule(
            "unrouted_rate",
            "tasks",
            self._unrouted,
            self.policy.unrouted_share,
            self.policy.unrouted_min_requests,
            "of the last {n} requests had a missing, unknown or mistyped task",
        )

    def _share_rule(
        self,
        alert: str,
        subject: str,
        window: _Window,
        threshold: float,
        min_requests: int,
        what: str,
    ) -> list[AlertChange]:
        """Raise when the window's share passes ``threshold`` (over at least ``min_requests``);
        clear when it is back at or under it."""
        share, n = window.share, len(window.samples)
        if n >= min_requests and share > threshold:
            message = f"{share:.0%} {what.format(n=n)} (threshold {threshold:.0%})"
            return self._raise(alert, subject, share, threshold, message)
        if share <= threshold:
            return self._clear(alert, subject, share, threshold)
        return []

    def _budget_rule(self, budgets: BudgetBook, keys: list[str]) -> list[AlertChange]:
        changes: list[AlertChange] = []
        for key in keys:
            state = budgets.state(key)
            if not state.limit_micros:
                continue
            used = state.spent_micros / state.limit_micros
            for threshold in self.policy.budget_thresholds:
                subject = f"{key}@{threshold:g}"
                if used >= threshold:
                    changes += self._raise(
                        "budget_threshold",
                        subject,
                        used,
                        threshold,
                        f"budget {key} has spent {used:.0%} of its limit "
                        f"(${state.limit_micros / 1e6:.2f})",
                    )
                else:
                    changes += self._clear("budget_threshold", subject, used, threshold)
        return changes

    def _raise(
        self, alert: str, subject: str, value: float, threshold: float, message: str
    ) -> list[AlertChange]:
        if (alert, subject) in self._active:
            return []
        change = AlertChange(
            raised=True,
            alert=alert,
            subject=subject,
            # Floats, even when the figure is a count: a checkpoint must decode to equal bytes.
            value=float(value),
            threshold=float(threshold),
            message=message,
        )
        self._active[(alert, subject)] = change
        return [change]

    def _clear(self, alert: str, subject: str, value: float, threshold: float) -> list[AlertChange]:
        if self._active.pop((alert, subject), None) is None:
            return []
        return [
            AlertChange(
                raised=False,
                alert=alert,
                subject=subject,
                value=float(value),
                threshold=float(threshold),
                message=f"{alert} on {subject} cleared",
            )
        ]

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> AlertState:
        return AlertState(
            active=self.active(),
            breakers=dict(sorted(self.breakers.items())),
            degraded=[
                _WindowState(c, list(self._degraded[c].samples)) for c in sorted(self._degraded)
            ],
            unrouted=list(self._unrouted.samples),
            request_classes=sorted(self._classes.items()),
            mistyped_requests=sorted(self._flagged),
            held=sorted(self._held.items()),
        )

    @classmethod
    def from_state(
        cls, state: AlertState, policy: AlertPolicy, primary_models: Mapping[str, frozenset[str]]
    ) -> AlertBook:
        book = cls(policy, primary_models)
        book._active = {(a.alert, a.subject): a for a in state.active}
        book.breakers = dict(state.breakers)
        for w in state.degraded:
            window = book._degraded[w.subject] = _Window(int(policy.degraded_window_s * _NS))
            for ts, hit in w.samples:
                window.add(ts, hit)
        for ts, hit in state.unrouted:
            book._unrouted.add(ts, hit)
        book._classes = dict(state.request_classes)
        book._flagged = set(state.mistyped_requests)
        book._held = dict(state.held)
        return book
