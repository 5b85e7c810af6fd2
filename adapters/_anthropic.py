"""Anthropic Messages over aiohttp (shared reference, provider protocols §3).

``base_url`` is the API root without ``/v1`` (``https://api.anthropic.com``), as the official
SDK takes it; the adapter posts to ``{base_url}/v1/messages``. So one base URL serves both the
adapter and ``anthropic.AsyncAnthropic(base_url=...)``.

The API version decides auth and sampling (§3.1): ``2023-06-01`` (the default) sends the key as
``x-api-key`` and accepts temperature/top_p/top_k; ``2026-10-21`` and later send it as
``Authorization: Bearer`` and reject those parameters, so they are dropped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import aiohttp
import msgspec
import yarl

from ._anthropic_errors import classify_anthropic_error, error_fields
from ._anthropic_request import UnsupportedContent, anthropic_body
from ._anthropic_stream import AnthropicStreamParser, message_chunks
from ._chunks import Chunk
from ._errors import ErrorClass, ProviderError
from ._http import HTTPAdapter, UpstreamCall, drain
from ._request import ChatRequest
from ._retry_after import parse_retry_after, parse_wait_in_message

__all__ = ["AnthropicAdapter", "AnthropicStreamParser", "classify_anthropic_error"]

DEFAULT_API_VERSION = "2023-06-01"
# From this version on: Bearer auth, and no temperature/top_p/top_k (ISO dates compare as text).
_BEARER_SINCE = "2026-10-21"

_encode = msgspec.json.Encoder().encode


class AnthropicAdapter(HTTPAdapter):
    """Messages, streamed or not."""

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
        version = api_version or DEFAULT_API_VERSION
        modern = version >= _BEARER_SINCE
        headers = {"anthropic-version": version}
        if api_key:
            if modern:
                headers["Authorization"] = f"Bearer {api_key}"
            else:
                headers["x-api-key"] = api_key
        super().__init__(
            provider,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        self._url = yarl.URL(self._base_url + "/v1/messages")
        self._api_version = version
        self._sampling = not modern

    @property
    def api_version(self) -> str:
        return self._api_version

    def _prepare(self, request: ChatRequest) -> UpstreamCall:
        try:
            body = anthropic_body(request, sampling=self._sampling)
        except UnsupportedContent as exc:
            # Fails before any network call; the same payload would fail at Anthropic.
            raise self._error(ErrorClass.BAD_REQUEST, str(exc), code="unsupported_content") from exc
        return UpstreamCall(self._url, _encode(body))

    async def _whole(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        raw = await self._read_body(response)
        try:
            chunks = message_chunks(raw)
        except msgspec.DecodeError as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, f"malformed response body: {exc}", after=True
            ) from exc
        yield chunks

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        parser = AnthropicStreamParser(self._error)
        try:
            async for data in response.content.iter_any():
                batch = parser.feed(data)
                if batch:
                    # What arrived before a failure is still delivered, then the failure.
                    yield batch
                if parser.failure is not None:
                    raise parser.failure
                if parser.done:
                    await drain(response)
                    return
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, "connection lost mid-stream", after=True
            ) from exc
        batch = parser.close()
        if batch:
            yield batch
        if parser.failure is not None:
            raise parser.failure

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message, error_type, code = error_fields(body)
        if not message:
            message = f"HTTP {status}"
        error_class, quota = classify_anthropic_error(status, error_type, code, message)
        retry_after = parse_retry_after(headers)
        if retry_after is None and error_class is ErrorClass.RATE_LIMITED and not quota:
            retry_after = parse_wait_in_message(message)
        return self._error(
            error_class,
            message,
            code=code or error_type,
            status=status,
            retry_after_s=retry_after,
            quota=quota,
        )
