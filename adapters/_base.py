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

    Iterate it for normalized chunks, or :meth:`batches` for the chunks of each network read
    together (so that a relay can forward them in one write). Either raises
    :class:`~adapters.ProviderError` if the provider fails after the headers (a mid-stream
    error, a cut connection, a missing terminator). Close it, or use it as an async context
    manager, to release the connection.
    """

    __slots__ = ("_batches", "_release", "status")

    def __init__(
        self,
        status: int,
        batches: AsyncIterator[list[Chunk]],
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self.status = status
        self._batches = batches
        self._release = release

    def batches(self) -> AsyncIterator[list[Chunk]]:
        return self._batches

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for batch in self._batches:
            for chunk in batch:
                yield chunk

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
