"""Helpers the adapter tests share: build requests, run them through an adapter, read its chunks
and what reached the fake's wire, and stand up throwaway servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiohttp import web

from adapters import (
    Adapter,
    ChatRequest,
    Chunk,
    Finish,
    Message,
    ProviderError,
    TextDelta,
    Usage,
    UsageReport,
)
from adapters.fakes import FakeServer

MESSAGES = [Message(role="user", content="Tell me something.")]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER_TOOL]

AdapterT = TypeVar("AdapterT", bound=Adapter)


def cases(table: Sequence[tuple[Any, ...]]) -> list[Any]:
    """A parametrize table whose rows start with the case's id, as pytest params."""
    return [pytest.param(*row[1:], id=row[0]) for row in table]


def chat_request(
    model: str,
    stream: bool,
    max_tokens: int = 64,
    messages: list[Message] | None = None,
    **params: Any,
) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=MESSAGES if messages is None else messages,
        max_tokens=max_tokens,
        stream=stream,
        params=params,
    )


@asynccontextmanager
async def closing(adapter: AdapterT) -> AsyncIterator[AdapterT]:
    """The adapter, closed however the block ends (its HTTP session would leak otherwise)."""
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def collect(adapter: Adapter, req: ChatRequest) -> list[Chunk]:
    async with await adapter.send(req) as stream:
        return [chunk async for chunk in stream]


async def failure(adapter: Adapter, req: ChatRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await collect(adapter, req)
    return info.value


async def failure_after(adapter: Adapter, req: ChatRequest) -> tuple[ProviderError, list[Chunk]]:
    """The error a stream ends in, and the chunks delivered before it."""
    received: list[Chunk] = []
    with pytest.raises(ProviderError) as info:
        async with await adapter.send(req) as stream:
            async for chunk in stream:
                received.append(chunk)
    return info.value, received


async def last_body(fake: FakeServer, model: str) -> dict[str, Any]:
    """The JSON body of the last request the fake logged for the model."""
    body = (await fake.control.requests(model))[-1].body_json()
    assert isinstance(body, dict)
    return body


def refused_url(path: str = "") -> str:
    """A URL on a port that was free a moment ago and has no listener: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serves a scripted aiohttp app on a free local port; yields its root URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def finishes(chunks: list[Chunk]) -> list[Finish]:
    return [c for c in chunks if isinstance(c, Finish)]


def usages(chunks: list[Chunk]) -> list[Usage]:
    return [c.usage for c in chunks if isinstance(c, UsageReport)]


def reports(chunks: list[Chunk]) -> list[UsageReport]:
    return [c for c in chunks if isinstance(c, UsageReport)]
