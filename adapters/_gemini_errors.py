"""Gemini's error responses, classified (shared reference, provider protocols §4.5 and §8).

Gemini reports errors as ``{"error": {"code", "message", "status", "details"}}`` where
``status`` is a google.rpc.Code name and ``details`` are typed google.rpc messages
(``ErrorInfo``, ``QuotaFailure``, ``RetryInfo``, ...). The same object arrives as an HTTP error
body or, mid-stream, as an SSE data event of an HTTP 200.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from ._errors import ErrorClass, looks_like_context_overflow

__all__ = ["GeminiErrorBody", "classify_gemini_error", "parse_gemini_error", "retry_delay_s"]

# ErrorInfo reasons that mean "this key is no good" (whatever the HTTP status says).
_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    }
)
# FAILED_PRECONDITION is how Gemini says "billing is not enabled" or "not in your region":
# permanent for this key, so a quota-like exhaustion rather than a bad request.
_PRECONDITION_QUOTA = re.compile(
    r"billing|location|region|country|free tier|quota|not supported for the api use",
    re.IGNORECASE,
)
# A RetryInfo this long is a quota that resets on a calendar, not a transient rate limit.
_QUOTA_RETRY_DELAY_S = 600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class GeminiErrorBody(msgspec.Struct, frozen=True):
    """The fields of a Gemini error object that classification reads."""

    code: int | None = None
    message: str = ""
    status: str | None = None
    details: tuple[Any, ...] = ()


def parse_gemini_error(raw: object) -> GeminiErrorBody:
    """The error object out of a decoded body: ``{"error": {...}}``, a one-element list of it
    (what some proxies send; the SDK unwraps it too) or the bare object."""
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    if isinstance(raw, dict) and isinstance(raw.get("error"), dict):
        raw = raw["error"]
    if not isinstance(raw, dict):
        return GeminiErrorBody(message=raw if isinstance(raw, str) else "")
    code = raw.get("code")
    message = raw.get("message")
    status = raw.get("status")
    details = raw.get("details")
    return GeminiErrorBody(
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        message=message if isinstance(message, str) else "",
        status=status if isinstance(status, str) else None,
        details=tuple(details) if isinstance(details, list) else (),
    )


def _typed(details: Sequence[Any], type_url: str) -> list[dict[str, Any]]:
    return [d for d in details if isinstance(d, dict) and d.get("@type") == type_url]


def retry_delay_s(details: Sequence[Any]) -> float | None:
    """``RetryInfo.retryDelay`` in seconds: a proto Duration, ``"34s"`` or ``"20.13s"`` in JSON
    (an object ``{"seconds", "nanos"}`` from some gateways)."""
    for info in _typed(details, _RETRY_INFO):
        delay = info.get("retryDelay")
        if isinstance(delay, str):
            match = _DURATION.match(delay)
            if match is not None:
                return float(match.group(1))
        elif isinstance(delay, dict):
            seconds = delay.get("seconds", 0)
            nanos = delay.get("nanos", 0)
            try:
                return float(seconds) + float(nanos) / 1e9
            except (TypeError, ValueError):
                continue
    return None


def _is_quota_exhaustion(details: Sequence[Any]) -> bool:
    """A 429 that waiting a little will not fix: a per-day quota, a zero quota (the free tier
    is unavailable for this model), or a retry delay measured in tens of minutes."""
    for failure in _typed(details, _QUOTA_FAILURE):
        for violation in failure.get("violations") or ():
            if not isinstance(violation, dict):
                continue
            quota_id = str(violation.get("quotaId", ""))
            if "perday" in quota_id.lower() or str(violation.get("quotaValue")) == "0":
                return True
    delay = retry_delay_s(details)
    return delay is not None and delay > _QUOTA_RETRY_DELAY_S


def _bad_key(details: Sequence[Any]) -> bool:
    return any(info.get("reason") in _KEY_REASONS for info in _typed(details, _ERROR_INFO))


def classify_gemini_error(
    status: int | None,
    rpc_status: str | None,
    message: str,
    details: Sequence[Any] = (),
) -> tuple[ErrorClass, bool]:
    """Map a Gemini error to the taxonomy; returns (class, is_quota_exhaustion).

    ``status`` is the HTTP status, or for an error inside a 200 stream the ``code`` the error
    object carries (None if it has none). ``rpc_status`` is the google.rpc.Code name. The order
    matters: an overflow, a bad key and a billing problem are all 400s, and a quota exhaustion
    is a 429 like a rate limit.
    """
    if looks_like_context_overflow(message):
        return ErrorClass.CONTEXT_OVERFLOW, False
    if (
        _bad_key(details)
        or status in (401, 403)
        or rpc_status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    ):
        return ErrorClass.AUTH, False
    if rpc_status == "FAILED_PRECONDITION" and _PRECONDITION_QUOTA.search(message):
        return ErrorClass.RATE_LIMITED, True
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        return ErrorClass.RATE_LIMITED, _is_quota_exhaustion(details)
    if status == 404 or rpc_status == "NOT_FOUND":
        return ErrorClass.NOT_FOUND, False
    if status in (408, 499, 504) or rpc_status in ("DEADLINE_EXCEEDED", "CANCELLED"):
        return ErrorClass.TIMEOUT, False
    if status == 503 or rpc_status == "UNAVAILABLE":
        return ErrorClass.OVERLOADED, False
    if (status is not None and status >= 500) or rpc_status in ("INTERNAL", "UNKNOWN", "ABORTED"):
        return ErrorClass.SERVER_ERROR, False
    if status is None and rpc_status is None:
        # A bare error event in a stream: nothing says the request itself was at fault.
        return ErrorClass.SERVER_ERROR, False
    return ErrorClass.BAD_REQUEST, False
