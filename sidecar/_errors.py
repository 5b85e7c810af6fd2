"""Errors the sidecar returns to its clients: typed, in the OpenAI error body shape."""

from __future__ import annotations

from typing import Any

import msgspec

from events import StoreError

__all__ = ["TollgateError", "error_body", "unexpected_error"]


class TollgateError(Exception):
    """A request that tollgate answers with a typed error instead of a completion.

    ``type`` is one of the documented error types (``invalid_request``, ``no_route``,
    ``all_candidates_failed``, ``deadline_exceeded``, ``upstream_stream_broken``, ...);
    ``code`` narrows it down; ``status`` is the HTTP status used on the Unix-socket API.
    """

    def __init__(
        self,
        type: str,
        message: str,
        *,
        status: int,
        code: str | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.details = details

    @classmethod
    def invalid_request(
        cls,
        message: str,
        *,
        code: str = "invalid_request",
        param: str | None = None,
        status: int = 400,
    ) -> TollgateError:
        return cls("invalid_request", message, status=status, code=code, param=param)


class _ErrorObject(msgspec.Struct, omit_defaults=True):
    message: str
    type: str
    param: str | None
    code: str | None
    tollgate: dict[str, Any] | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorObject


_encode = msgspec.json.Encoder().encode


def error_body(error: TollgateError) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI clients expect."""
    return _encode(
        _ErrorBody(
            _ErrorObject(
                message=error.message,
                type=error.type,
                param=error.param,
                code=error.code,
                tollgate=error.details,
            )
        )
    )


def unexpected_error(exc: Exception) -> TollgateError:
    """What a client is told when serving its request raised something untyped: a failed event
    log is the sidecar's outage (503, retry elsewhere), anything else an internal error."""
    if isinstance(exc, StoreError):
        return TollgateError(
            "log_unavailable",
            "tollgate's event log takes no more events; this sidecar cannot serve requests",
            status=503,
        )
    return TollgateError("internal_error", "tollgate failed to serve this request", status=500)
