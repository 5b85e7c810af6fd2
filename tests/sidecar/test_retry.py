from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar._retry import Action, RetryPolicy, decide

POLICY = RetryPolicy()
CLASSES = [
    "rate_limited",
    "overloaded",
    "timeout",
    "server_error",
    "bad_request",
    "auth",
    "context_overflow",
    "content_filtered",
    "not_found",
]


def step(error: str, **kwargs: object) -> tuple[Action, float]:
    args: dict[str, object] = {
        "quota": False,
        "retries_done": 0,
        "retry_after_s": None,
        "policy": POLICY,
        "max_wait_s": 10.0,
        "remaining_s": 100.0,
        "draw": 0.0,
        **kwargs,
    }
    decision = decide(error, **args)  # type: ignore[arg-type]
    return decision.action, decision.wait_s


@pytest.mark.parametrize(
    ("error", "action"),
    [
        ("bad_request", Action.STOP),
        ("content_filtered", Action.STOP),
        ("auth", Action.SKIP_PROVIDER),
        ("not_found", Action.SKIP_PROVIDER),
        ("context_overflow", Action.FALLBACK_LARGER),
        ("rate_limited", Action.RETRY),
        ("overloaded", Action.RETRY),
        ("timeout", Action.RETRY),
        ("server_error", Action.RETRY),
    ],
)
def test_first_failure_of_each_class(error: str, action: Action) -> None:
    assert step(error)[0] is action


def test_quota_exhaustion_skips_the_provider() -> None:
    assert step("rate_limited", quota=True)[0] is Action.SKIP_PROVIDER


def test_retries_per_class_then_fallback() -> None:
    assert step("rate_limited", retries_done=1)[0] is Action.RETRY
    assert step("rate_limited", retries_done=2)[0] is Action.FALLBACK
    assert step("timeout", retries_done=1)[0] is Action.FALLBACK
    assert step("server_error", retries_done=1)[0] is Action.FALLBACK


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert step("rate_limited", retry_after_s=1.0) == (Action.RETRY, 1.0)
    assert step("rate_limited", retry_after_s=11.0)[0] is Action.FALLBACK
    assert step("rate_limited", retry_after_s=3.0, max_wait_s=2.0)[0] is Action.FALLBACK
    assert step("rate_limited", retry_after_s=3.0, remaining_s=2.5)[0] is Action.FALLBACK


def test_backoff_doubles_with_jitter_taken_off() -> None:
    assert step("overloaded", retries_done=0, draw=0.0) == (Action.RETRY, 0.5)
    assert step("overloaded", retries_done=1, draw=0.0) == (Action.RETRY, 1.0)
    assert step("overloaded", retries_done=1, draw=0.999)[1] == pytest.approx(0.75, abs=0.01)


@given(
    error=st.sampled_from(CLASSES),
    quota=st.booleans(),
    retries_done=st.integers(0, 5),
    retry_after=st.one_of(st.none(), st.floats(0, 500, allow_nan=False)),
    max_wait=st.floats(0, 60, allow_nan=False),
    remaining=st.floats(0, 200, allow_nan=False),
    draw=st.floats(0, 1, exclude_max=True, allow_nan=False),
)
def test_a_retry_never_waits_past_the_cap_or_the_deadline(
    error: str,
    quota: bool,
    retries_done: int,
    retry_after: float | None,
    max_wait: float,
    remaining: float,
    draw: float,
) -> None:
    action, wait = step(
        error,
        quota=quota,
        retries_done=retries_done,
        retry_after_s=retry_after,
        max_wait_s=max_wait,
        remaining_s=remaining,
        draw=draw,
    )
    if action is Action.RETRY:
        assert 0 <= wait <= max_wait
        assert wait < remaining
        assert error in {"rate_limited", "overloaded", "timeout", "server_error"}
        assert not quota
        assert retries_done < getattr(POLICY, error)
    if error in {"bad_request", "content_filtered"}:
        assert action is Action.STOP
