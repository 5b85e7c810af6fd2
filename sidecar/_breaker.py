"""Circuit breakers, one per provider: stop sending traffic to a provider that is failing.

closed ──(``threshold`` health failures within ``window_s``)──▶ open
open ──(``cooldown_s`` passed; the next request takes a probe)──▶ half-open
half-open ──(a probe succeeds)──▶ closed;  half-open ──(a probe fails)──▶ open

Only failures that say something about the provider's health count (rate limits, overload,
timeouts, server errors, auth); a bad request says something about the request. Time is passed
in (monotonic seconds), so the machine is deterministic and tested without sleeping.
"""

from __future__ import annotations

import collections
from enum import StrEnum

import msgspec

__all__ = ["HEALTH_CLASSES", "Breaker", "BreakerPolicy", "BreakerState", "Transition"]

HEALTH_CLASSES = frozenset({"rate_limited", "overloaded", "timeout", "server_error", "auth"})


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Health failures within window_s that open the breaker.
    threshold: int = 5
    window_s: float = 30.0
    # How long an open breaker refuses everything before letting probes through.
    cooldown_s: float = 15.0
    # Requests admitted at once while half-open.
    probes: int = 1


class Transition(msgspec.Struct, frozen=True):
    provider: str
    old: BreakerState
    new: BreakerState
    # Health failures in the window when it opened.
    failures: int = 0


class Breaker:
    """One provider's breaker. Not thread-safe; the event loop is its only user."""

    __slots__ = ("_failures", "_opened_at", "_policy", "_probes_out", "provider", "state")

    def __init__(self, provider: str, policy: BreakerPolicy) -> None:
        self.provider = provider
        self.state = BreakerState.CLOSED
        self._policy = policy
        self._failures: collections.deque[float] = collections.deque()
        self._opened_at = 0.0
        self._probes_out = 0

    def available(self, now: float) -> bool:
        """Could a request be admitted now? (For routing: skip the provider without waiting.)"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self._opened_at >= self._policy.cooldown_s
        return self._probes_out < self._policy.probes

    def admit(self, now: float) -> tuple[bool, Transition | None]:
        """Claim a slot for one attempt: (admitted, the state change it caused, if any).

        An admitted attempt must end with :meth:`record` (or :meth:`release` if it never
        reached the provider).
        """
        transition = None
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self._policy.cooldown_s:
                return False, None
            transition = self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_out >= self._policy.probes:
                return False, transition
            self._probes_out += 1
        return True, transition

    def release(self) -> None:
        """An admitted attempt ended without a verdict on the provider (e.g. the client left)."""
        if self.state is BreakerState.HALF_OPEN and self._probes_out:
            self._probes_out -= 1

    def record(self, now: float, error_class: str | None) -> Transition | None:
        """The outcome of an admitted attempt: None for success, else its error class."""
        healthy = error_class is None or error_class not in HEALTH_CLASSES
        if self.state is BreakerState.HALF_OPEN:
            self._probes_out = max(self._probes_out - 1, 0)
            if error_class is None:
                self._failures.clear()
                return self._move(BreakerState.CLOSED)
            if healthy:
                # A request-side error says nothing about the provider: still half-open.
                return None
            return self._open(now, failures=1)
        if healthy:
            return None
        failures = self._failures
        failures.append(now)
        while failures and now - failures[0] > self._policy.window_s:
            failures.popleft()
        if self.state is BreakerState.CLOSED and len(failures) >= self._policy.threshold:
            return self._open(now, failures=len(failures))
        return None

    def _open(self, now: float, failures: int) -> Transition:
        self._opened_at = now
        self._failures.clear()
        self._probes_out = 0
        return self._move(BreakerState.OPEN, failures)

    def _move(self, new: BreakerState, failures: int = 0) -> Transition:
        old, self.state = self.state, new
        return Transition(self.provider, old, new, failures)
