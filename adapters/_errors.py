"""The normalized error taxonomy (shared reference, provider protocols §8).

Each adapter maps its provider's failures into :class:`ProviderError` in one place; nothing
above the adapters looks at a provider's status codes or error bodies.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Protocol

from ._redact import redact

__all__ = [
    "ErrorClass",
    "ErrorFactory",
    "ProviderError",
    "error_factory",
    "error_text",
    "looks_like_context_overflow",
]

# The providers' wording for "the prompt does not fit" (reference §8), checked before status
# codes because an overflow is a 400 that, unlike other 400s, a larger model can serve.
_CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|prompt is too long"
    r"|exceeds? the maximum number of tokens|maximum prompt length|exceed context limit",
    re.IGNORECASE,
)


def looks_like_context_overflow(message: str) -> bool:
    return _CONTEXT_OVERFLOW.search(message) is not None


class ErrorClass(StrEnum):
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    CONTEXT_OVERFLOW = "context_overflow"
    CONTENT_FILTERED = "content_filtered"
    NOT_FOUND = "not_found"


class ProviderError(Exception):
    """A provider call that failed, classified.

    The message is built from the provider's answer with credentials removed; it never holds
    an API key.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        provider_code: str | None = None,
        retry_after_s: float | None = None,
        quota: bool = False,
        after_response: bool = False,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.provider = provider
        self.status = status
        self.provider_code = provider_code
        self.retry_after_s = retry_after_s
        # A quota or billing exhaustion: not transient, so never worth retrying.
        self.quota = quota
        # True when the failure arrived in the body of an HTTP 2xx (a mid-stream error or a cut).
        self.after_response = after_response

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.error_class.value!r}, provider={self.provider!r}, "
            f"status={self.status!r}, code={self.provider_code!r})"
        )


def error_text(body: bytes) -> str:
    """The start of an error body that is not the provider's JSON (a proxy's HTML page, a
    plain-text body): the best message there is."""
    return body[:200].decode("utf-8", errors="replace").strip()


class ErrorFactory(Protocol):
    """Builds a provider's :class:`ProviderError` (an adapter's, which redacts its key)."""

    def __call__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        code: str | None = None,
        after: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
        quota: bool = False,
    ) -> ProviderError: ...


def error_factory(provider: str, secret: str | None = None) -> ErrorFactory:
    """The :class:`ErrorFactory` for ``provider``: messages cleared of ``secret`` and of
    anything shaped like a key."""

    def error(
        error_class: ErrorClass,
        message: str,
        *,
        code: str | None = None,
        after: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
        quota: bool = False,
    ) -> ProviderError:
        return ProviderError(
            error_class,
            redact(message, secret),
            provider=provider,
            status=status,
            provider_code=code,
            retry_after_s=retry_after_s,
            quota=quota,
            after_response=after,
        )

    return error
