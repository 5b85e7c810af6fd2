"""Helpers shared by the sidecar's end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio

from events import Event, RequestCompleted, RequestFailed, StoredEvent
from sidecar._service import Sidecar

SidecarFactory = Callable[..., contextlib.AbstractAsyncContextManager[Sidecar]]

TERMINAL = (RequestCompleted, RequestFailed)


async def request_events(sidecar: Sidecar, request_id: str) -> list[StoredEvent]:
    """The request's events once its terminal event is committed (the executor doesn't wait)."""
    with anyio.fail_after(5):
        while True:
            stored = await sidecar.store.read_request(request_id)
            if stored and isinstance(stored[-1].event, TERMINAL):
                return list(stored)
            await anyio.sleep(0.01)


def kinds(events: list[StoredEvent]) -> list[str]:
    return [type(s.event).__name__ for s in events]


def only(events: list[StoredEvent], kind: type[Event]) -> list[Event]:
    return [s.event for s in events if isinstance(s.event, kind)]
