"""xAI Grok over its OpenAI-compatible Chat Completions (shared reference, provider protocols §5).

The wire is OpenAI's (:class:`~adapters.OpenAIAdapter` does the work) except for three things:

* Usage: ``completion_tokens`` *excludes* ``completion_tokens_details.reasoning_tokens`` (while
  ``total_tokens`` includes them), so output = completion + reasoning. In a stream the last
  non-null ``usage`` wins: xAI has been seen sending it on the chunk *before* a final empty one.
* Errors use a flat, gRPC-derived body, ``{"code": "<gRPC status text>", "error": "<message>"}``
  (sometimes a numeric ``code``), on error statuses and as a mid-stream data event. The status
  alone misleads: a wrong key is a 400, a spent credit balance a 403 or 429, a content-policy
  refusal a 403, and a schema too complex for constrained decoding a 503. All of it is decided
  in one pure function, :func:`classify_xai_error`.
* Request fields pass through as given: ``reasoning_effort`` is supported per model, and
  ``stop`` / penalties are rejected (400) by reasoning models; which fields to send for which
  model is the caller's capability table's business, not the adapter's.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from ._errors import ErrorClass, looks_like_context_overflow
from ._openai import OpenAIAdapter

__all__ = ["XAIAdapter", "classify_xai_error"]

# The gRPC status-code descriptions xAI puts in `code`, as the HTTP status each stands for.
# A mid-stream error has no HTTP status of its own; this is the one it stands for.
_GRPC_TEXT_STATUS = {
    "client specified an invalid argument": 400,
    "the request does not have valid authentication credentials for the operation": 401,
    "the caller does not have permission to execute the specified operation": 403,
    "some requested entity was not found": 404,
    "the operation was aborted": 409,
    "some resource has been exhausted": 429,
    "internal error": 500,
    "the service is currently unavailable": 503,
    "the deadline expired before the operation could complete": 504,
    "deadline expired before operation could complete": 504,
}
# Numeric gRPC codes (INVALID_ARGUMENT=3, ...) as HTTP statuses, per gRPC's own HTTP mapping.
_GRPC_NUMBER_STATUS = {3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 10: 409, 13: 500, 14: 503, 16: 401}

_BAD_KEY = re.compile(r"incorrect api key|invalid api key", re.IGNORECASE)
# "Your team ... has either used all available credits or reached its monthly spending limit."
_CREDITS = re.compile(r"credits|spending limit", re.IGNORECASE)
_CONTENT = re.compile(r"violates usage guidelines|content moderation", re.IGNORECASE)
# A structured-output schema too complex to compile: a 503, but the same request always fails.
_GRAMMAR = re.compile(r"grammar is too complex", re.IGNORECASE)


def _status_of_code(code: str | None) -> int | None:
    """The HTTP status a flat error's ``code`` stands for (text or number), if known."""
    if code is None:
        return None
    known = _GRPC_TEXT_STATUS.get(code.strip().rstrip(".").lower())
    if known is not None:
        return known
    try:
        number = int(code)
    except ValueError:
        return None
    # A number in the HTTP range is taken as the status itself, a small one as a gRPC code.
    return number if 400 <= number <= 599 else _GRPC_NUMBER_STATUS.get(number)


def classify_xai_error(
    status: int | None, code: str | None, message: str
) -> tuple[ErrorClass, bool]:
    """Map an xAI error to the taxonomy (reference §5.5, §8); returns (class, is_quota).

    ``status`` is the HTTP status, None for an error event inside a 200 stream (then the gRPC
    ``code`` stands in for it). The wording is checked before the status, because xAI reuses
    statuses: a 400 may be a bad key or an overflow, a 403 credits, content or permission, a 503
    an overload or a request that can never succeed.
    """
    effective = status if status is not None else _status_of_code(code)
    if looks_like_context_overflow(message):
        return ErrorClass.CONTEXT_OVERFLOW, False
    if _BAD_KEY.search(message):
        return ErrorClass.AUTH, False
    if _CREDITS.search(message):
        return ErrorClass.RATE_LIMITED, True
    if _CONTENT.search(message):
        return ErrorClass.CONTENT_FILTERED, False
    if _GRAMMAR.search(message):
        return ErrorClass.BAD_REQUEST, False
    if effective is None:
        # An unrecognised failure after the headers: the provider's fault, not the request's.
        return ErrorClass.SERVER_ERROR, False
    if effective in (401, 403):
        return ErrorClass.AUTH, False
    if effective == 404:
        return ErrorClass.NOT_FOUND, False
    if effective in (408, 504):
        return ErrorClass.TIMEOUT, False
    if effective == 429:
        # Rate limits and "temporarily at capacity" alike: transient, retry after a wait.
        return ErrorClass.RATE_LIMITED, False
    if effective == 503:
        return ErrorClass.OVERLOADED, False
    if effective >= 500 or effective == 409:
        return ErrorClass.SERVER_ERROR, False
    return ErrorClass.BAD_REQUEST, False


class XAIAdapter(OpenAIAdapter):
    """xAI Chat Completions at ``{base_url}/chat/completions`` (base_url like
    ``https://api.x.ai/v1``), with Bearer auth."""

    completion_excludes_reasoning = True

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str | None = None,
        api_version: str | None = None,
        connect_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        # xAI's REST API has no version header; its one version is the /v1 in the base URL.
        del api_version
        super().__init__(
            provider,
            base_url=base_url,
            api_key=api_key,
            # xAI accepts max_tokens too (§5.2); this is the one that is not deprecated.
            max_tokens_field="max_completion_tokens",
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )

    def _error_fields(self, envelope: Any) -> tuple[str, str | None, str | None]:
        if isinstance(envelope, dict) and isinstance(envelope.get("error"), str):
            message: str = envelope["error"]
            # Seen in the wild: the whole message percent-encoded ("Incorrect%20API%20key...").
            if "%20" in message and " " not in message:
                message = unquote(message)
            code = envelope.get("code")
            return message, None, str(code) if code is not None else None
        # Not the flat shape (a proxy's body, or an OpenAI-shaped one): read it as OpenAI's.
        return super()._error_fields(envelope)

    def _classify(
        self, status: int | None, error_type: str | None, code: str | None, message: str
    ) -> tuple[ErrorClass, bool]:
        return classify_xai_error(status, code, message)
