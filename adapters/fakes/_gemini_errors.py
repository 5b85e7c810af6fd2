"""Gemini's error responses, as the real API sends them (shared reference §4.5).

``{"error": {"code", "message", "status", "details"}}`` with a google.rpc.Code name as
``status`` and typed google.rpc detail messages. The shared error presets (the
:class:`~adapters.fakes.StatusFault` vocabulary) map onto their Gemini equivalents here, so a
test scripts every fake with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ._behaviour import ErrorPreset, StatusFault

__all__ = [
    "GeminiErrorContext",
    "GeminiErrorSpec",
    "error_body",
    "error_event",
    "fault_error",
    "preset_error",
]

_TYPE = "type.googleapis.com/google.rpc."
_SERVICE = "generativelanguage.googleapis.com"

# The google.rpc.Code name Google's front end uses for each HTTP status.
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 502 (Server Error)!!1</title>\n"
    "  <p><b>502.</b> <ins>That\u2019s an error.</ins>\n"
    "  <p>The server encountered a temporary error and could not complete your request."
    "<p>Please try again in 30 seconds.  <ins>That\u2019s all we know.</ins>\n"
)


@dataclass(frozen=True, slots=True)
class GeminiErrorContext:
    model: str = ""
    version: str = "v1beta"
    prompt_tokens: int = 0
    context_window: int = 1048576
    # RetryInfo.retryDelay in seconds (and "Please retry in ..." on a 429); None: no hint.
    retry_s: float | None = None


@dataclass(frozen=True, slots=True)
class GeminiErrorSpec:
    """One error: HTTP status, rpc status, wording (a str.format template over the context)
    and which detail messages to attach."""

    http: int
    status: str
    message: str
    kind: str = "plain"  # "plain", "bad_key", "rate", "daily" or "html"


_RATE_MSG = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
_SPECS: dict[ErrorPreset, GeminiErrorSpec] = {
    "invalid_request_error": GeminiErrorSpec(
        400, "INVALID_ARGUMENT", "Request contains an invalid argument."
    ),
    "context_length_exceeded": GeminiErrorSpec(
        400,
        "INVALID_ARGUMENT",
        "The input token count ({prompt_tokens}) exceeds the maximum number of tokens allowed "
        "({context_window}).",
    ),
    "invalid_api_key": GeminiErrorSpec(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "bad_key"
    ),
    "unsupported_country_region_territory": GeminiErrorSpec(
        400, "FAILED_PRECONDITION", "User location is not supported for the API use."
    ),
    "model_not_found": GeminiErrorSpec(
        404,
        "NOT_FOUND",
        "models/{model} is not found for API version {version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    ),
    "rate_limit_exceeded": GeminiErrorSpec(429, "RESOURCE_EXHAUSTED", _RATE_MSG, "rate"),
    "insufficient_quota": GeminiErrorSpec(429, "RESOURCE_EXHAUSTED", _RATE_MSG, "daily"),
    "request_too_large": GeminiErrorSpec(
        400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes."
    ),
    "server_error": GeminiErrorSpec(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "bad_gateway": GeminiErrorSpec(502, "", _BAD_GATEWAY_HTML, "html"),
    "overloaded": GeminiErrorSpec(
        503, "UNAVAILABLE", "The model is overloaded. Please try again later."
    ),
    "gateway_timeout": GeminiErrorSpec(
        504, "DEADLINE_EXCEEDED", "The request timed out. Please try again."
    ),
}

# Gemini's natural error for a bare status (a StatusFault with only ``status``).
_BY_STATUS: dict[int, GeminiErrorSpec] = {
    400: _SPECS["invalid_request_error"],
    401: GeminiErrorSpec(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential.",
    ),
    403: GeminiErrorSpec(
        403, "PERMISSION_DENIED", "The caller does not have permission", "bad_key"
    ),
    404: _SPECS["model_not_found"],
    429: _SPECS["rate_limit_exceeded"],
    500: _SPECS["server_error"],
    502: _SPECS["bad_gateway"],
    503: _SPECS["overloaded"],
    504: _SPECS["gateway_timeout"],
}


def preset_error(name: ErrorPreset) -> GeminiErrorSpec:
    return _SPECS[name]


def fault_error(fault: StatusFault) -> tuple[GeminiErrorSpec, int]:
    """The error a :class:`StatusFault` asks for and the HTTP status to send it with."""
    if fault.error is not None:
        spec = _SPECS[fault.error]
        return spec, fault.status or spec.http
    status = fault.status or 500
    known = _BY_STATUS.get(status)
    if known is not None:
        return known, status
    rpc = _RPC_STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
    generic = _SPECS["invalid_request_error" if status < 500 else "server_error"]
    return GeminiErrorSpec(status, rpc, generic.message), status


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _details(spec: GeminiErrorSpec, ctx: GeminiErrorContext) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    if spec.kind == "bad_key":
        reason = "API_KEY_INVALID" if spec.http == 400 else "API_KEY_SERVICE_BLOCKED"
        details.append(
            {
                "@type": _TYPE + "ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": _SERVICE},
            }
        )
        details.append({"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": ""})
    elif spec.kind in ("rate", "daily"):
        daily = spec.kind == "daily"
        period = "PerDay" if daily else "PerMinute"
        details.append(
            {
                "@type": _TYPE + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"{_SERVICE}/generate_content_free_tier_requests",
                        "quotaId": f"GenerateRequests{period}PerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": ctx.model},
                        "quotaValue": "250" if daily else "10",
                    }
                ],
            }
        )
        details.append(
            {
                "@type": _TYPE + "Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            }
        )
    if ctx.retry_s is not None:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": _seconds(ctx.retry_s) + "s"})
    return details


def _object(
    spec: GeminiErrorSpec, ctx: GeminiErrorContext, status: int, message: str | None
) -> dict[str, Any]:
    text = message if message is not None else spec.message.format_map(_fields(ctx))
    if spec.kind in ("rate", "daily") and ctx.retry_s is not None and message is None:
        text += f" Please retry in {_seconds(ctx.retry_s)}s."
    error: dict[str, Any] = {
        "code": status,
        "message": text,
        "status": spec.status or _RPC_STATUS.get(status, "UNKNOWN"),
    }
    details = _details(spec, ctx)
    if spec.kind == "bad_key":
        details[1]["message"] = text
    if details:
        error["details"] = details
    return error


def error_body(
    spec: GeminiErrorSpec,
    ctx: GeminiErrorContext,
    *,
    status: int | None = None,
    message: str | None = None,
) -> tuple[bytes, str]:
    """(body, content type) of an error response; ``message`` replaces the wording."""
    if spec.kind == "html":
        return (message or spec.message).encode(), "text/html"
    error = _object(spec, ctx, status or spec.http, message)
    return msgspec.json.encode({"error": error}), "application/json"


def error_event(spec: GeminiErrorSpec, ctx: GeminiErrorContext, message: str | None) -> bytes:
    """An error as an SSE event inside a 200 stream (an HTML page cannot be one)."""
    if spec.kind == "html":
        spec = _SPECS["server_error"]
    payload = msgspec.json.encode({"error": _object(spec, ctx, spec.http, message)})
    return b"data: " + payload + b"\r\n\r\n"


def _fields(ctx: GeminiErrorContext) -> dict[str, object]:
    return {
        "model": ctx.model,
        "version": ctx.version,
        "prompt_tokens": ctx.prompt_tokens,
        "context_window": ctx.context_window,
    }
