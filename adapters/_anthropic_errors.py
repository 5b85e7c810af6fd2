"""Anthropic's errors in the normalized taxonomy (shared reference §3.5, §3.6, §8)."""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import ErrorClass, error_text, looks_like_context_overflow

__all__ = ["classify_anthropic_error", "error_fields", "error_fields_from"]

# details.error_code values that mean "spent out" rather than "slow down" (§3.5): not transient.
_SPEND_LIMIT_CODES = frozenset(
    {
        "contract_spend_limit_reached",
        "enforced_spend_limit_reached",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
# Anthropic's error.type, the machine-readable reason, wins over the status: a proxy in front
# of the API may reuse a status, but only the API itself writes these types.
_BY_TYPE: dict[str, ErrorClass] = {
    "invalid_request_error": ErrorClass.BAD_REQUEST,
    "request_too_large": ErrorClass.BAD_REQUEST,
    "not_found_error": ErrorClass.NOT_FOUND,
    "rate_limit_error": ErrorClass.RATE_LIMITED,
    "overloaded_error": ErrorClass.OVERLOADED,
    "timeout_error": ErrorClass.TIMEOUT,
    "api_error": ErrorClass.SERVER_ERROR,
    "conflict_error": ErrorClass.SERVER_ERROR,
}


def classify_anthropic_error(
    status: int | None, error_type: str | None, error_code: str | None, message: str
) -> tuple[ErrorClass, bool]:
    """Map an Anthropic error to the taxonomy; returns (class, is_quota_exhaustion).

    ``status`` is None for an ``event: error`` inside a 200 stream, ``error_type`` is the body's
    ``error.type`` and ``error_code`` its ``error.details.error_code``. Overflow and quota come
    first: both share a 400 or a 429 with errors that must be handled differently (§8).
    """
    if looks_like_context_overflow(message):
        return ErrorClass.CONTEXT_OVERFLOW, False
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        return ErrorClass.AUTH, False
    if (
        status == 402
        or error_type == "billing_error"
        or error_code in _SPEND_LIMIT_CODES
        or "credit balance is too low" in message.lower()
    ):
        return ErrorClass.RATE_LIMITED, True
    by_type = _BY_TYPE.get(error_type or "")
    if by_type is not None:
        return by_type, False
    if status is None:
        if "overloaded" in message.lower():
            return ErrorClass.OVERLOADED, False
        return ErrorClass.SERVER_ERROR, False
    if status == 429:
        return ErrorClass.RATE_LIMITED, False
    if status in (408, 504):
        return ErrorClass.TIMEOUT, False
    if status in (503, 529):
        return ErrorClass.OVERLOADED, False
    if status == 404:
        return ErrorClass.NOT_FOUND, False
    if status >= 500 or status == 409:
        return ErrorClass.SERVER_ERROR, False
    return ErrorClass.BAD_REQUEST, False


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, error.type, details.error_code) of an error response body.

    A body that is not Anthropic's JSON (a proxy's HTML page) gives its first characters as
    the message, so the status decides.
    """
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return error_text(body), None, None
    return error_fields_from(decoded)


def error_fields_from(decoded: Any) -> tuple[str, str | None, str | None]:
    """The same, from a decoded ``{"type": "error", "error": {...}}`` envelope."""
    if not isinstance(decoded, dict):
        return "", None, None
    error = decoded.get("error", decoded)
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    message = error.get("message")
    error_type = error.get("type")
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return (
        message if isinstance(message, str) else "",
        error_type if isinstance(error_type, str) else None,
        code if isinstance(code, str) else None,
    )
