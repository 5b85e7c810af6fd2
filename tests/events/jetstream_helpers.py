"""What the JetStream store's tests share, on one server or on a cluster: a client, fresh logs
for the conformance suite, and budget events (holds and their settlements)."""

from __future__ import annotations

import itertools
from contextlib import AbstractAsyncContextManager
from typing import Any

import nats
from nats.aio.client import Client
from store_conformance import NewLog, StoreOpener, envelope

from events import BudgetReserved, CostSettled, EventStore, TokenUsage, open_jetstream_store

__all__ = ["connect", "reservation", "settlement", "stream_logs"]

# Module-wide, so that logs stay apart on a server that outlives one test (a cluster fixture).
_streams = itertools.count()


async def connect(servers: str | list[str], **options: Any) -> Client:
    """A client that reconnects for as long as a test may need, quickly."""
    return await nats.connect(
        servers=servers,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.05,
        connect_timeout=2,
        **options,
    )


def stream_logs(nc: Client, **store_options: Any) -> NewLog:
    """A ``new_log`` for the conformance suite: each log is a fresh stream, with its own
    subject prefix, opened on ``nc`` with ``store_options``."""

    def new() -> StoreOpener:
        n = next(_streams)
        stream, prefix = f"CONF{n}", f"conf{n}.ev"

        def opener(**options: Any) -> AbstractAsyncContextManager[EventStore]:
            return open_jetstream_store(
                nc, stream=stream, subject_prefix=prefix, **store_options, **options
            )

        return opener

    return new


def reservation(amount: int = 100, *, request_id: str = "req-1") -> BudgetReserved:
    return BudgetReserved(
        **envelope(request_id),
        reservation_id=request_id,
        budgets=["global/*/total"],
        amount_micros=amount,
        expires_at_ns=2**62,
        model="m",
        provider="p",
    )


def settlement(request_id: str = "req-1") -> CostSettled:
    return CostSettled(
        **envelope(request_id),
        reservation_id=request_id,
        attempt=1,
        model="m",
        provider="p",
        usage=TokenUsage(),
        cost_micros=10,
        final=True,
    )
