"""Anthropic's error responses, as the real API sends them (shared reference §3.5, §3.6).

The shared fault structs name OpenAI's error presets; each maps here to the Anthropic error that
means the same thing, so one script drives every fake. ``insufficient_quota`` depends on the
status: 400 "credit balance is too low" (the default), 402 ``billing_error``, or 429 with the
spend-limit ``error_code``. A bare status maps to Anthropic's usual error for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ._behaviour import ErrorPreset, StatusFault

__all__ = ["AnthropicError", "error_body", "error_event", "fault_error", "preset_error"]


@dataclass(frozen=True, slots=True)
class AnthropicError:
    status: int
    type: str
    message: str
    # error.details.error_code: the SDK picks an error subclass by it (e.g. spend limits).
    error_code: str | None = None


_RATE_LIMIT = (
    "This request would exceed the rate limit for your organization (org-tollgatefake) of 50 "
    "requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. "
    "You can see the response headers for current usage. Please reduce the prompt length or the "
    "maximum tokens requested, or try again later."
)
_CREDIT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
    "to upgrade or purchase credits."
)
_SPEND_LIMIT = (
    "You have reached your specified workspace API usage limits. You will regain access on the "
    "first day of next month."
)

_PRESETS: dict[ErrorPreset, AnthropicError] = {
    "invalid_request_error": AnthropicError(
        400, "invalid_request_error", "The request was invalid."
    ),
    "context_length_exceeded": AnthropicError(
        400, "invalid_request_error", "prompt is too long: {prompt} tokens > {window} maximum"
    ),
    "invalid_api_key": AnthropicError(401, "authentication_error", "invalid x-api-key"),
    "unsupported_country_region_territory": AnthropicError(
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "model_not_found": AnthropicError(404, "not_found_error", "model: {model}"),
    "rate_limit_exceeded": AnthropicError(429, "rate_limit_error", _RATE_LIMIT),
    "insufficient_quota": AnthropicError(400, "invalid_request_error", _CREDIT),
    "request_too_large": AnthropicError(
        413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
    ),
    "server_error": AnthropicError(500, "api_error", "Internal server error"),
    "bad_gateway": AnthropicError(502, "api_error", "Bad gateway"),
    "overloaded": AnthropicError(529, "overloaded_error", "Overloaded"),
    "gateway_timeout": AnthropicError(504, "timeout_error", "Request timed out"),
}

_BY_STATUS: dict[int, AnthropicError] = {
    400: _PRESETS["invalid_request_error"],
    401: _PRESETS["invalid_api_key"],
    402: AnthropicError(402, "billing_error", "Your organization has a billing issue."),
    403: _PRESETS["unsupported_country_region_territory"],
    404: _PRESETS["model_not_found"],
    408: AnthropicError(408, "timeout_error", "Request timed out"),
    409: AnthropicError(409, "conflict_error", "Conflict"),
    413: _PRESETS["request_too_large"],
    429: _PRESETS["rate_limit_exceeded"],
    500: _PRESETS["server_error"],
    502: _PRESETS["bad_gateway"],
    503: AnthropicError(503, "overloaded_error", "Service unavailable"),
    504: _PRESETS["gateway_timeout"],
    529: _PRESETS["overloaded"],
}


def preset_error(
    preset: ErrorPreset, *, model: str = "", prompt: int = 0, window: int = 0
) -> AnthropicError:
    """The Anthropic error for an OpenAI preset name, its message filled in."""
    found = _PRESETS[preset]
    message = found.message.format(model=model, prompt=prompt, window=window)
    return AnthropicError(found.status, found.type, message, found.error_code)


def fault_error(fault: StatusFault, *, model: str, prompt: int, window: int) -> AnthropicError:
    """The error a :class:`StatusFault` scripts (see the module docstring)."""
    if fault.error is None:
        status = fault.status or 500
        base = _BY_STATUS.get(status) or (
            _PRESETS["invalid_request_error"] if status < 500 else _PRESETS["server_error"]
        )
        found = AnthropicError(
            status, base.type, base.message.format(model=model, prompt=prompt, window=window)
        )
    else:
        found = preset_error(fault.error, model=model, prompt=prompt, window=window)
        if fault.error == "insufficient_quota" and fault.status == 402:
            found = _BY_STATUS[402]
        elif fault.error == "insufficient_quota" and fault.status == 429:
            found = AnthropicError(
                429, "rate_limit_error", _SPEND_LIMIT, "enforced_spend_limit_reached"
            )
        if fault.status is not None:
            found = AnthropicError(fault.status, found.type, found.message, found.error_code)
    if fault.message is not None:
        found = AnthropicError(found.status, found.type, fault.message, found.error_code)
    return found


def _envelope(error: AnthropicError, request_id: str) -> dict[str, object]:
    detail: dict[str, object] = {"type": error.type, "message": error.message}
    if error.error_code is not None:
        detail["details"] = {"error_code": error.error_code}
    return {"type": "error", "error": detail, "request_id": request_id}


def error_body(error: AnthropicError, request_id: str) -> bytes:
    return msgspec.json.encode(_envelope(error, request_id))


def error_event(error: AnthropicError, request_id: str) -> bytes:
    """The mid-stream form: an ``event: error`` after a 200 (§3.4 step 6)."""
    return b"event: error\ndata: " + error_body(error, request_id) + b"\n\n"
