"""The normalized error taxonomy (shared reference, provider protocols §8).

Each adapter maps its provider's failures into :class:`ProviderError` in one place; nothing
above the adapters looks at a provider's status codes or error bodies.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["ErrorClass", "ProviderError", "looks_like_context_overflow"]

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
