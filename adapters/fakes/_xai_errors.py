"""xAI's error responses (shared reference §5.5): a flat, gRPC-derived body.

    {"code": "<gRPC status-code description>", "error": "<message>"}

The ``code`` follows the HTTP status; the message is the preset's. The fault structs name
OpenAI's errors (``ErrorPreset``); each maps to xAI's nearest equivalent, with xAI's status
where it differs: a wrong key is a **400**, spent credits a **403**. Wordings marked [observed]
are quoted from real traffic; the others are modelled on them.
"""

from __future__ import annotations

import dataclasses

import msgspec

from ._behaviour import ErrorPreset
from ._errors import PRESETS, ErrorContext, Preset

__all__ = [
    "XAI_PRESETS",
    "XAI_STATUS_PRESETS",
    "flat_error_body",
    "grpc_code",
    "xai_key_hint",
]

# A fixed team id for the messages that name the caller's team.
TEAM_ID = "5eed7011-6a7e-4000-8000-00000000fa4e"

# gRPC's status-code descriptions, by the HTTP status xAI sends them with.
_GRPC_CODES = {
    400: "Client specified an invalid argument",
    401: "The request does not have valid authentication credentials for the operation",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    408: "The deadline expired before the operation could complete",
    409: "The operation was aborted",
    429: "Some resource has been exhausted",
    500: "Internal error",
    503: "The service is currently unavailable",
    504: "The deadline expired before the operation could complete",
}


def grpc_code(status: int) -> str:
    """The ``code`` of an error body with ``status``; unlisted ones take their class's."""
    found = _GRPC_CODES.get(status)
    if found is not None:
        return found
    return _GRPC_CODES[400] if status < 500 else _GRPC_CODES[500]


def _preset(status: int, message: str) -> Preset:
    # The OpenAI-only fields (type, param, code) have no place in xAI's body.
    return Preset(status, "", None, None, message)


_CREDITS_MSG = (  # [observed]
    "Your team {team} has either used all available credits or reached its monthly spending "
    "limit. To continue making API requests, please purchase more credits or raise your "
    "spending limit."
)

XAI_PRESETS: dict[ErrorPreset, Preset] = {
    "invalid_request_error": _preset(400, "{detail}"),
    "context_length_exceeded": _preset(  # [observed]
        400,
        "This model's maximum prompt length is {context_window} but the request contains "
        "{prompt_tokens} tokens.",
    ),
    "invalid_api_key": _preset(  # [observed]
        400,
        "Incorrect API key provided: {key_hint}. You can obtain an API key from "
        "https://console.x.ai.",
    ),
    # A 403 that is neither credits nor content policy.
    "unsupported_country_region_territory": _preset(
        403, "Your team {team} is blocked from using the API. Please contact support."
    ),
    "model_not_found": _preset(  # [observed], with a retirement of the fake's own
        404,
        "The model {model} was deprecated on 2026-05-15 and is no longer accessible via the "
        "API. Please use grok-4.3 instead.",
    ),
    "rate_limit_exceeded": _preset(
        429, "Your team {team} has exceeded its requests per second limit for model {model}."
    ),
    "insufficient_quota": _preset(403, _CREDITS_MSG),
    "request_too_large": PRESETS["request_too_large"],  # a proxy's HTML page, as for OpenAI
    "server_error": _preset(500, "Internal error"),  # [observed]
    "bad_gateway": _preset(502, "Bad gateway."),
    "overloaded": _preset(  # [observed]
        503,
        "Service temporarily unavailable. The model is at capacity and currently cannot serve "
        "this request. Please try again later.",
    ),
    "gateway_timeout": _preset(504, "Deadline exceeded."),
}

# Statuses whose xAI error has no OpenAI-named equivalent (a StatusFault with only a status).
XAI_STATUS_PRESETS: dict[int, Preset] = {
    401: _preset(
        401,
        "No API key provided. Send your xAI API key in an Authorization header using Bearer "
        "auth (Authorization: Bearer <key>).",
    ),
    415: _preset(415, "Expected request with `Content-Type: application/json`"),
    422: _preset(422, "Failed to deserialize the JSON body into the target type."),
}


class _FlatError(msgspec.Struct, frozen=True):
    code: str
    error: str


def flat_error_body(preset: Preset, ctx: ErrorContext, message: str | None, status: int) -> bytes:
    """The body of an xAI error with ``status``; ``message`` replaces the preset's wording."""
    if message is None:
        message = preset.message.format_map({**dataclasses.asdict(ctx), "team": TEAM_ID})
    if preset.html:
        return message.encode()
    return msgspec.json.encode(_FlatError(grpc_code(status), message))


def xai_key_hint(key: str) -> str:
    """How xAI shows a wrong key: its first and last two characters ("xa***yz")."""
    return key[:2] + "***" + key[-2:] if len(key) > 4 else "***"
