"""The event-store protocol every backend implements (SQLite now, JetStream later)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

import msgspec

from ._types import Event

__all__ = ["EventStore", "StoreClosedError", "StoreError", "StoredEvent"]


class StoredEvent(msgspec.Struct, frozen=True):
    """An event with the position the log gave it. Sequence numbers start at 1 and have no gaps."""

    seq: int
    event: Event


class StoreError(Exception):
    """The log could not take an event. Nothing that was acknowledged before is affected."""


class StoreClosedError(StoreError):
    """The store was closed, or failed and stopped taking events."""


class EventStore(Protocol):
    async def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` atomically, in order; return their sequence numbers once durable.

        When the writer falls behind, this waits (back-pressure); it never drops events.
        """
        ...

    async def submit(self, events: Sequence[Event]) -> None:
        """Queue ``events`` for the next group commit without waiting for it.

        Events submitted or appended by one task keep their order. This still waits when the
        queue is full, so a slow disk slows requests down rather than losing their events.
        """
        ...

    async def read(self, after_seq: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Durable events with ``seq > after_seq``, oldest first, at most ``limit``."""
        ...

    async def read_request(self, request_id: str) -> list[StoredEvent]:
        """The durable events of one request, in log order (for audit timelines)."""
        ...

    def tail(self, after_seq: int = 0) -> AsyncGenerator[StoredEvent, None]:
        """Every durable event after ``after_seq``, then each new one as it commits, forever.

        Close it (``aclose``) when done: a tail may hold resources, such as a consumer."""
        ...

    async def last_seq(self) -> int:
        """The sequence number of the newest durable event (0 for an empty log)."""
        ...

    def check_writable(self) -> None:
        """Raise :class:`StoreClosedError` if the store takes no more events: it was closed, or
        it failed (what was acknowledged before stays readable). For health checks."""
        ...

    async def aclose(self) -> None:
        """Commit everything queued, then close. Idempotent."""
        ...
