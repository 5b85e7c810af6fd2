"""What every HTTP adapter shares: the pooled session, the POST, error bodies, releasing.

A provider adapter subclasses :class:`HTTPAdapter` and supplies the provider-specific parts:
how to encode a request (:meth:`~HTTPAdapter._prepare`), how to read a whole answer or a stream
into batches of normalized chunks, and how to classify an error response. Transport failures
(no connection, a timeout before the headers) are classified here, the same for every provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import aiohttp
import anyio
import yarl

from ._base import ChunkStream
from ._chunks import Chunk
from ._errors import ErrorClass, ProviderError, error_factory
from ._request import ChatRequest

__all__ = ["HTTPAdapter", "UpstreamCall", "drain"]

# Error bodies are small; a proxy's HTML page is not worth reading whole.
MAX_ERROR_BODY = 64 * 1024
_DRAIN_TIMEOUT_S = 1.0


class UpstreamCall:
    """One encoded request: where to send it, the body, and headers beyond the session's."""

    __slots__ = ("body", "headers", "url")

    def __init__(
        self, url: yarl.URL, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.body = body
        self.headers = headers


class HTTPAdapter:
    """An adapter over one pooled aiohttp session per provider."""

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str | None,
        headers: Mapping[str, str],
        connect_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        self._provider = provider
        self._base_url = base_url.rstrip("/")
        # Builds this provider's errors, their messages cleared of the key.
        self._error = error_factory(provider, api_key)
        # Sent with every request; set once on the session rather than merged per request.
        self._headers = {"Content-Type": "application/json", **headers}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        # Never the key: adapters end up in logs and tracebacks.
        return f"{type(self).__name__}(provider={self._provider!r}, url={self._base_url!r})"

    @property
    def provider(self) -> str:
        return self._provider

    async def send(self, request: ChatRequest) -> ChunkStream:
        call = self._prepare(request)
        session = self._session
        if session is None:
            # Created on first use so that it binds to the running event loop.
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                headers=self._headers,
                # Requests of many tenants share this session: no cookie may carry across.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        try:
            response = await session.post(call.url, data=call.body, headers=call.headers)
        except TimeoutError as exc:
            raise self._error(ErrorClass.TIMEOUT, "timed out connecting to the provider") from exc
        except aiohttp.ClientError as exc:
            message = f"could not reach the provider: {type(exc).__name__}"
            raise self._error(ErrorClass.SERVER_ERROR, message) from exc
        if response.status >= 300:
            try:
                body = await response.content.read(MAX_ERROR_BODY)
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                response.release()
            raise self._status_error(response.status, response.headers, body)
        batches = self._stream(response) if request.stream else self._whole(response)

        async def release() -> None:
            await batches.aclose()
            # Returns the connection to the pool if the body was read to its end, else closes it.
            response.release()

        return ChunkStream(response.status, batches, release)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what a provider supplies ------------------------------------------------------------

    def _prepare(self, request: ChatRequest) -> UpstreamCall:
        raise NotImplementedError

    def _whole(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        """The chunks of a non-streamed answer (usually one batch)."""
        raise NotImplementedError

    def _stream(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        """The chunks of a streamed answer, a batch per network read."""
        raise NotImplementedError

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """Classify an error response (the provider's one place for it)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """A whole (non-streamed) response body."""
        try:
            return await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, "connection lost reading the response", after=True
            ) from exc


async def drain(response: aiohttp.ClientResponse) -> None:
    """After a stream's end event: read the end of the body, so the connection goes back to
    the pool."""
    # Only the end of the chunked body is left; a server that holds the connection open
    # longer loses it instead of stalling the request.
    with anyio.move_on_after(_DRAIN_TIMEOUT_S):
        while await response.content.readany():
            pass
