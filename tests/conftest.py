"""Shared pytest configuration."""

from collections.abc import Iterator

import pytest
from nats_server import NatsServer, running_nats_server


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite (the SQLite event store) resolves asyncio futures, so tests run on asyncio.
    return "asyncio"


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream, on a free loopback port, for one test."""
    with running_nats_server() as server:
        yield server
