"""The one small interface every provider adapter implements (cf. httpx's transports)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Protocol

from ._chunks import Chunk
from ._request import ChatRequest

__all__ = ["Adapter", "ChunkStream"]


class ChunkStream:
    """An upstream answer whose response headers have arrived.

    Iterate it for normalized chunks; it raises :class:`~adapters.ProviderError` if the provider
    fails after the headers (a mid-stream error, a cut connection, a missing terminator). Close
    it, or use it as an async context manager, to release the connection.
    """

    __slots__ = ("_chunks", "_release", "status")

    def __init__(
        self, status: int, chunks: AsyncIterator[Chunk], release: Callable[[], Awaitable[None]]
    ) -> None:
        self.status = status
        self._chunks = chunks
        self._release = release

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks

    async def aclose(self) -> None:
        await self._release()

    async def __aenter__(self) -> ChunkStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Adapter(Protocol):
    """Sends a normalized request to one provider and normalizes what comes back."""

    @property
    def provider(self) -> str:
        """The provider's name in the config."""
        ...

    async def send(self, request: ChatRequest) -> ChunkStream:
        """Send ``request``; return once a successful response's headers have arrived.

        Raises :class:`~adapters.ProviderError` for an error response or a transport failure.
        """
        ...

    async def aclose(self) -> None: ...
