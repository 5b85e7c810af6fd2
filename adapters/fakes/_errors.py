"""OpenAI's error responses, as the real API sends them (shared reference §2.5).

Each preset fixes the status, ``type``, ``param``, ``code`` and message wording; the variable
parts (model, token counts, a redacted key, the retry delay) are filled in per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ._behaviour import ErrorPreset

__all__ = [
    "PRESETS",
    "ErrorContext",
    "Preset",
    "error_payload",
    "go_duration",
    "preset_for_status",
    "redact_key",
]


class _ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    # Almost always a string; Cloudflare-fronted errors (502) carry the number.
    code: str | int | None


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: _ErrorDetail


@dataclass(frozen=True, slots=True)
class Preset:
    status: int
    type: str
    param: str | None
    code: str | int | None
    message: str  # a str.format template over ErrorContext's fields
    # A non-JSON body (what a proxy in front of OpenAI sends), served as text/html.
    html: bool = False


_RATE_LIMIT_MSG = (
    "Rate limit reached for {model} in organization org-tollgatefake on requests per min (RPM): "
    "Limit 500, Used 500, Requested 1. Please try again in {retry}. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
_QUOTA_MSG = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_OVERFLOW_MSG = (
    "This model's maximum context length is {context_window} tokens. However, your messages "
    "resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
)
_BAD_KEY_MSG = (
    "Incorrect API key provided: {key_hint}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
_TOO_LARGE_HTML = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)

PRESETS: dict[ErrorPreset, Preset] = {
    "invalid_request_error": Preset(400, "invalid_request_error", None, None, "{detail}"),
    "context_length_exceeded": Preset(
        400, "invalid_request_error", "messages", "context_length_exceeded", _OVERFLOW_MSG
    ),
    "invalid_api_key": Preset(401, "invalid_request_error", None, "invalid_api_key", _BAD_KEY_MSG),
    "unsupported_country_region_territory": Preset(
        403,
        "request_forbidden",
        None,
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    "model_not_found": Preset(
        404,
        "invalid_request_error",
        None,
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "rate_limit_exceeded": Preset(429, "requests", None, "rate_limit_exceeded", _RATE_LIMIT_MSG),
    "insufficient_quota": Preset(429, "insufficient_quota", None, "insufficient_quota", _QUOTA_MSG),
    "request_too_large": Preset(413, "", None, None, _TOO_LARGE_HTML, html=True),
    "server_error": Preset(
        500,
        "server_error",
        None,
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "bad_gateway": Preset(502, "cf_bad_gateway", None, 502, "Bad gateway."),
    "overloaded": Preset(
        503,
        "server_error",
        None,
        None,
        "The engine is currently overloaded, please try again later.",
    ),
    "gateway_timeout": Preset(504, "server_error", None, None, "Gateway timeout."),
}

_BY_STATUS: dict[int, ErrorPreset] = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "unsupported_country_region_territory",
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "bad_gateway",
    503: "overloaded",
    504: "gateway_timeout",
}


def preset_for_status(status: int) -> ErrorPreset:
    """The usual error body for ``status``; unlisted 4xx/5xx get the generic one of their class."""
    found = _BY_STATUS.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if status < 500 else "server_error"


@dataclass(frozen=True, slots=True)
class ErrorContext:
    model: str = ""
    prompt_tokens: int = 0
    context_window: int = 128000
    key_hint: str = ""
    retry: str = "1s"
    detail: str = "The request was invalid."


def error_payload(preset: Preset, ctx: ErrorContext, message: str | None = None) -> bytes:
    """The response body for ``preset``; ``message`` replaces the preset's wording."""
    text = message if message is not None else preset.message.format_map(_fields(ctx))
    if preset.html:
        return text.encode()
    return msgspec.json.encode(
        ErrorEnvelope(_ErrorDetail(text, preset.type, preset.param, preset.code))
    )


def _fields(ctx: ErrorContext) -> dict[str, object]:
    return {
        "model": ctx.model,
        "prompt_tokens": ctx.prompt_tokens,
        "context_window": ctx.context_window,
        "key_hint": ctx.key_hint,
        "retry": ctx.retry,
        "detail": ctx.detail,
    }


def redact_key(key: str) -> str:
    """How OpenAI shows a wrong key: never the whole of it."""
    if len(key) < 16:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration, as the x-ratelimit-reset-* headers are: 12ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text
