"""What to do after a failed attempt: retry the model, fall back, skip the provider, or stop.

A pure function of the failure, the attempt count and the policy; the random draw for jitter
and the time left are passed in, so every decision is reproducible.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

__all__ = ["Action", "Decision", "RetryPolicy", "decide"]


class Action(StrEnum):
    # Try the same model again after ``wait_s``.
    RETRY = "retry"
    # Move on to the next candidate.
    FALLBACK = "fallback"
    # The provider can't serve this request at all (key, quota, model gone): skip its models.
    SKIP_PROVIDER = "skip_provider"
    # Only a model with a larger context window can help.
    FALLBACK_LARGER = "fallback_larger"
    # The request itself is the problem: the same payload fails anywhere, at a cost.
    STOP = "stop"


class Decision(msgspec.Struct, frozen=True):
    action: Action
    wait_s: float = 0.0


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Retries of the same model per error class, and how long to wait between them."""

    rate_limited: int = 2
    overloaded: int = 2
    # Generation is not idempotent (a retry may bill twice), so these get one retry at most.
    timeout: int = 1
    server_error: int = 1
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    # Each backoff loses up to this fraction at random, so that clients don't retry in step.
    jitter: float = 0.25
    # A provider asking for a longer wait than this is skipped for the next candidate.
    max_wait_s: float = 10.0


_STOP = frozenset({"bad_request", "content_filtered"})
_SKIP_PROVIDER = frozenset({"auth", "not_found"})


def decide(
    error_class: str,
    *,
    quota: bool,
    retries_done: int,
    retry_after_s: float | None,
    policy: RetryPolicy,
    max_wait_s: float,
    remaining_s: float,
    draw: float,
) -> Decision:
    """The next step after an attempt failed with ``error_class``.

    ``retries_done`` counts earlier retries of this model for this request; ``draw`` is a
    uniform random number in [0, 1); ``remaining_s`` is the time left before the request's
    deadline, which no wait may overrun.
    """
    if error_class in _STOP:
        return Decision(Action.STOP)
    if error_class in _SKIP_PROVIDER or quota:
        return Decision(Action.SKIP_PROVIDER)
    if error_class == "context_overflow":
        return Decision(Action.FALLBACK_LARGER)
    allowed = getattr(policy, error_class, 0) if error_class in _RETRYABLE else 0
    if retries_done >= allowed:
        return Decision(Action.FALLBACK)
    if retry_after_s is not None:
        wait = retry_after_s
    else:
        backoff = min(policy.backoff_initial_s * 2**retries_done, policy.backoff_max_s)
        wait = backoff * (1 - policy.jitter * draw)
    if wait > max_wait_s or wait >= remaining_s:
        return Decision(Action.FALLBACK)
    return Decision(Action.RETRY, wait)


_RETRYABLE = frozenset({"rate_limited", "overloaded", "timeout", "server_error"})
