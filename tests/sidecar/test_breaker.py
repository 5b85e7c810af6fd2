from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar._breaker import HEALTH_CLASSES, Breaker, BreakerPolicy, BreakerState

POLICY = BreakerPolicy(threshold=3, window_s=10.0, cooldown_s=5.0, probes=1)


def fail(breaker: Breaker, now: float, error: str = "overloaded") -> BreakerState:
    admitted, _ = breaker.admit(now)
    assert admitted
    breaker.record(now, error)
    return breaker.state


def test_opens_after_threshold_health_failures_within_the_window() -> None:
    breaker = Breaker("p", POLICY)
    assert fail(breaker, 0.0) is BreakerState.CLOSED
    assert fail(breaker, 1.0) is BreakerState.CLOSED
    admitted, _ = breaker.admit(2.0)
    assert admitted
    transition = breaker.record(2.0, "timeout")
    assert transition is not None
    assert (transition.old, transition.new, transition.failures) == (
        BreakerState.CLOSED,
        BreakerState.OPEN,
        3,
    )
    assert not breaker.available(3.0)
    assert breaker.admit(3.0) == (False, None)


def test_failures_outside_the_window_do_not_count() -> None:
    breaker = Breaker("p", POLICY)
    fail(breaker, 0.0)
    fail(breaker, 1.0)
    assert fail(breaker, 11.5) is BreakerState.CLOSED  # the first two have left the window


def test_request_errors_never_open_it() -> None:
    breaker = Breaker("p", POLICY)
    for second in range(10):
        fail(breaker, float(second), "bad_request")
        fail(breaker, float(second), "context_overflow")
    assert breaker.state is BreakerState.CLOSED


def test_half_open_admits_limited_probes_and_a_success_closes() -> None:
    breaker = Breaker("p", POLICY)
    for second in range(3):
        fail(breaker, float(second))
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(6.9) == (False, None)  # cooldown runs from the opening, at 2.0
    assert breaker.available(7.0)
    admitted, transition = breaker.admit(7.0)
    assert admitted
    assert transition is not None and transition.new is BreakerState.HALF_OPEN
    assert breaker.admit(7.1) == (False, None)  # one probe at a time
    closed = breaker.record(7.2, None)
    assert closed is not None and closed.new is BreakerState.CLOSED
    assert breaker.admit(7.3)[0]


def test_a_failed_probe_opens_it_again_for_a_new_cooldown() -> None:
    breaker = Breaker("p", POLICY)
    for second in range(3):
        fail(breaker, float(second))
    breaker.admit(8.0)
    reopened = breaker.record(8.0, "server_error")
    assert reopened is not None and reopened.new is BreakerState.OPEN
    assert not breaker.available(12.0)
    assert breaker.available(13.0)


def test_a_released_probe_frees_its_slot() -> None:
    breaker = Breaker("p", POLICY)
    for second in range(3):
        fail(breaker, float(second))
    assert breaker.admit(8.0)[0]
    breaker.release()
    assert breaker.admit(8.1)[0]


@given(
    st.lists(
        st.tuples(
            st.floats(0, 3, allow_nan=False),
            st.sampled_from(sorted(HEALTH_CLASSES | {"bad_request", "ok"})),
        ),
        max_size=60,
    )
)
def test_open_breaker_admits_nothing_during_its_cooldown(
    steps: list[tuple[float, str]],
) -> None:
    breaker = Breaker("p", POLICY)
    now = 0.0
    opened_at: float | None = None
    for gap, outcome in steps:
        now += gap
        admitted, transition = breaker.admit(now)
        if opened_at is not None and now - opened_at < POLICY.cooldown_s:
            assert not admitted
        if not admitted:
            continue
        transition = breaker.record(now, None if outcome == "ok" else outcome)
        if transition is not None and transition.new is BreakerState.OPEN:
            opened_at = now
        elif transition is not None:
            opened_at = None
