"""Helpers the adapter tests share: run a request through an adapter and read its chunks."""

from __future__ import annotations

from typing import Any

import pytest

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


async def collect(adapter: Adapter, req: ChatRequest) -> list[Chunk]:
    async with await adapter.send(req) as stream:
        return [chunk async for chunk in stream]


async def failure(adapter: Adapter, req: ChatRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await collect(adapter, req)
    return info.value


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def finishes(chunks: list[Chunk]) -> list[Finish]:
    return [c for c in chunks if isinstance(c, Finish)]


def usages(chunks: list[Chunk]) -> list[Usage]:
    return [c.usage for c in chunks if isinstance(c, UsageReport)]
