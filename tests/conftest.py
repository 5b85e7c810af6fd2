"""Shared pytest configuration."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite (the SQLite event store) resolves asyncio futures, so tests run on asyncio.
    return "asyncio"
