"""Google Gemini (generativelanguage API) over aiohttp (shared reference, provider protocols §4).

The wire details live next door: request translation in ``_gemini_request``, response decoding
in ``_gemini_response``, error classification in ``_gemini_errors``. This module is the
transport: URLs, auth, reading bodies and streams.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping

import aiohttp
import msgspec
import yarl

from ._chunks import Chunk
from ._errors import ErrorClass, ProviderError, error_text
from ._gemini_errors import classify_gemini_error, parse_gemini_error, retry_delay_s
from ._gemini_request import GeminiTranslationError, gemini_request_body
from ._gemini_response import GeminiResponseDecoder
from ._http import HTTPAdapter, UpstreamCall
from ._request import ChatRequest
from ._retry_after import parse_retry_after, parse_wait_in_message
from ._sse import SSEDecoder

__all__ = ["DEFAULT_GEMINI_API_VERSION", "GeminiAdapter"]

# v1beta, although google-genai >= 3 defaults to v1 (reference §4.1): the adapter sends
# fields that reach v1beta first (parametersJsonSchema, responseJsonSchema, thinkingConfig),
# and aliases such as gemini-flash-latest exist only there.
DEFAULT_GEMINI_API_VERSION = "v1beta"
_API_VERSION = re.compile(r"v\d+(?:(?:alpha|beta)\d*)?")
# Model names come from the config, so this bounds nothing an attacker controls; it only keeps
# a long-running process from growing without end if the config is reloaded often.
_MAX_CACHED_URLS = 1024

_encode = msgspec.json.Encoder().encode


class GeminiAdapter(HTTPAdapter):
    """``generateContent``, or ``streamGenerateContent?alt=sse`` for a streamed request.

    ``base_url`` is the API root without a version (``https://generativelanguage.googleapis.com``),
    as google-genai's ``HttpOptions.base_url`` takes it.
    """

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
        version = api_version or DEFAULT_GEMINI_API_VERSION
        if not _API_VERSION.fullmatch(version):
            raise ValueError(f"not a Gemini API version: {version!r} (e.g. v1beta, v1)")
        super().__init__(
            provider,
            base_url=base_url,
            api_key=api_key,
            # A header, never ?key=: URLs end up in access logs and tracebacks.
            headers={"x-goog-api-key": api_key} if api_key else {},
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        self._version = version
        self._urls: dict[tuple[str, bool], yarl.URL] = {}

    @property
    def api_version(self) -> str:
        return self._version

    def _url(self, model: str, stream: bool) -> yarl.URL:
        url = self._urls.get((model, stream))
        if url is None:
            if len(self._urls) >= _MAX_CACHED_URLS:
                self._urls.clear()
            # "gemini-x" means "models/gemini-x"; a full resource name is kept (as the SDK does).
            path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            # Parsed once per model: aiohttp would parse a string URL on every request.
            url = yarl.URL(f"{self._base_url}/{self._version}/{path}:{method}")
            self._urls[(model, stream)] = url
        return url

    def _prepare(self, request: ChatRequest) -> UpstreamCall:
        try:
            body = gemini_request_body(request)
        except GeminiTranslationError as exc:
            raise self._error(ErrorClass.BAD_REQUEST, str(exc), code="untranslatable") from exc
        return UpstreamCall(self._url(request.model, request.stream), _encode(body))

    async def _whole(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        raw = await self._read_body(response)
        decoder = GeminiResponseDecoder(self._error)
        try:
            chunks = decoder.feed(raw)
        except ProviderError as exc:
            if exc.provider_code == "malformed_sse":
                # Same failure, but this was a JSON body rather than a stream event.
                raise self._error(
                    ErrorClass.SERVER_ERROR, "malformed response body", after=True
                ) from exc
            raise
        yield chunks + decoder.end(whole=True)

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        sse = SSEDecoder()
        decoder = GeminiResponseDecoder(self._error)
        try:
            async for data in response.content.iter_any():
                batch: list[Chunk] = []
                failure: ProviderError | None = None
                try:
                    for event in sse.feed(data):
                        batch.extend(decoder.feed(event.data))
                except ProviderError as exc:
                    failure = exc
                if batch:
                    # What arrived before a failure is still delivered, then the failure.
                    yield batch
                if failure is not None:
                    raise failure
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, "connection lost mid-stream", after=True
            ) from exc
        # Gemini's stream has no terminator: it ends at EOF, where a last event may lack its
        # blank line (the SDK accepts that too).
        tail: list[Chunk] = []
        try:
            for event in sse.close():
                tail.extend(decoder.feed(event.data))
            tail.extend(decoder.end())
        except ProviderError:
            if tail:
                yield tail
            raise
        yield tail

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        try:
            error = parse_gemini_error(msgspec.json.decode(body))
        except msgspec.DecodeError:
            # A proxy's or Google's front end's HTML page: keep the start of it.
            error = parse_gemini_error(error_text(body))
        message = error.message or f"HTTP {status}"
        error_class, quota = classify_gemini_error(status, error.status, message, error.details)
        # Gemini's hint is RetryInfo; headers only come from proxies; the message text
        # ("Please retry in 34.2s.") is the last resort.
        retry_after = retry_delay_s(error.details)
        if retry_after is None:
            retry_after = parse_retry_after(headers)
        if retry_after is None and error_class is ErrorClass.RATE_LIMITED:
            retry_after = parse_wait_in_message(message)
        return self._error(
            error_class,
            message,
            code=error.status,
            status=status,
            retry_after_s=retry_after,
            quota=quota,
        )
