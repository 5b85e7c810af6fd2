"""Answer books and quality: a fake model gives the right answer to a known prompt for a
hash-chosen fraction of the book, the same whichever protocol or mode asks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import msgspec
import pytest

from adapters import (
    Adapter,
    AnthropicAdapter,
    ChatRequest,
    Chunk,
    GeminiAdapter,
    Message,
    OpenAIAdapter,
    TextDelta,
    ToolCallDelta,
    XAIAdapter,
)
from adapters.fakes import (
    BookAnswer,
    FakeServer,
    prompt_key,
    serve_fake_anthropic,
    serve_fake_gemini,
    serve_fake_openai,
    serve_fake_xai,
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
        },
    },
}
CODE = "```python\ndef double(x):\n    return 2 * x\n```"

_SERVE: dict[str, Callable[..., AbstractAsyncContextManager[FakeServer]]] = {
    "openai": serve_fake_openai,
    "anthropic": serve_fake_anthropic,
    "gemini": serve_fake_gemini,
    "xai": serve_fake_xai,
}


def _adapter(protocol: str, base_url: str) -> Adapter:
    if protocol == "openai":
        return OpenAIAdapter("p", base_url=base_url, api_key="k")
    if protocol == "anthropic":
        return AnthropicAdapter("p", base_url=base_url, api_key="k")
    if protocol == "gemini":
        return GeminiAdapter("p", base_url=base_url, api_key="k")
    return XAIAdapter("p", base_url=base_url, api_key="k")


@contextlib.asynccontextmanager
async def fake_and_adapter(protocol: str) -> AsyncIterator[tuple[FakeServer, Adapter]]:
    async with _SERVE[protocol]() as fake:
        adapter = _adapter(protocol, fake.base_url)
        try:
            yield fake, adapter
        finally:
            await adapter.aclose()


async def collect(adapter: Adapter, req: ChatRequest) -> list[Chunk]:
    async with await adapter.send(req) as stream:
        return [chunk async for chunk in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def request(text: str, *, stream: bool = False, **params: Any) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content=text),
        ],
        max_tokens=200,
        stream=stream,
        params=params,
    )


def key_of(text: str) -> str:
    # What a client sends: the system prompt does not count, only the user's text.
    return prompt_key(
        {"messages": [{"role": "system", "content": "other"}, {"role": "user", "content": text}]}
    )


PROTOCOLS = ["openai", "anthropic", "gemini", "xai"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
async def test_the_right_answer_keeps_its_exact_text(protocol: str, stream: bool) -> None:
    async with fake_and_adapter(protocol) as (fake, adapter):
        book = {key_of("Write double."): BookAnswer(text=CODE)}
        await fake.control.set_model("m", {"answers": msgspec.to_builtins(book)})
        chunks = await collect(adapter, request("Write double.", stream=stream))
        assert text_of(chunks) == CODE
        # A prompt outside the book gets the usual generated words.
        other = text_of(await collect(adapter, request("Something else.", stream=stream)))
        assert other and other != CODE and "```" not in other


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_right_tool_call_carries_the_books_arguments(protocol: str) -> None:
    async with fake_and_adapter(protocol) as (fake, adapter):
        arguments = {"city": "Lisbon", "unit": "celsius"}
        book = {
            key_of("Weather in Lisbon?"): BookAnswer(
                tool="get_weather", arguments=json.dumps(arguments)
            )
        }
        await fake.control.set_model("m", {"answers": msgspec.to_builtins(book)})
        chunks = await collect(
            adapter, request("Weather in Lisbon?", tools=[WEATHER_TOOL], tool_choice="auto")
        )
        calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
        assert calls and calls[0].name == "get_weather"
        assert json.loads("".join(c.arguments for c in calls)) == arguments
        # Without the book, tool_choice "auto" gets a text answer from this fake.
        await fake.control.set_model("m", {"quality": 0.0, "answers": msgspec.to_builtins(book)})
        chunks = await collect(
            adapter, request("Weather in Lisbon?", tools=[WEATHER_TOOL], tool_choice="auto")
        )
        assert not [c for c in chunks if isinstance(c, ToolCallDelta)]


async def right_answers(adapter: Adapter, prompts: list[str], *, stream: bool) -> set[str]:
    right = set()
    for prompt in prompts:
        if text_of(await collect(adapter, request(prompt, stream=stream))) == f"answer {prompt}":
            right.add(prompt)
    return right


async def test_quality_is_a_reproducible_fraction_shared_by_every_protocol() -> None:
    prompts = [f"question {i}" for i in range(60)]
    book = {key_of(p): BookAnswer(text=f"answer {p}") for p in prompts}
    behaviour = {"answers": msgspec.to_builtins(book), "quality": 0.5, "seed": 7}
    seen: list[set[str]] = []
    for protocol in PROTOCOLS:
        async with fake_and_adapter(protocol) as (fake, adapter):
            await fake.control.set_model("m", behaviour)
            for stream in (False, True):
                seen.append(await right_answers(adapter, prompts, stream=stream))
    # The same prompts are answered right, whichever protocol and mode: a function of
    # (seed, prompt) only.
    assert all(s == seen[0] for s in seen)
    assert 18 <= len(seen[0]) <= 42  # about half of 60 (the hash is uniform)


async def test_with_one_seed_a_better_model_is_right_on_a_superset() -> None:
    prompts = [f"item {i}" for i in range(40)]
    book = msgspec.to_builtins({key_of(p): BookAnswer(text=f"answer {p}") for p in prompts})
    async with fake_and_adapter("openai") as (fake, adapter):
        await fake.control.set_model("m", {"answers": book, "quality": 0.3, "seed": 1})
        worse = await right_answers(adapter, prompts, stream=False)
        await fake.control.set_model("m", {"answers": book, "quality": 0.8, "seed": 1})
        better = await right_answers(adapter, prompts, stream=False)
        await fake.control.set_model("m", {"answers": book, "quality": 0.8, "seed": 2})
        other_seed = await right_answers(adapter, prompts, stream=False)
        await fake.control.set_model("m", {"answers": book, "quality": 1.0})
        perfect = await right_answers(adapter, prompts, stream=False)
        await fake.control.set_model("m", {"answers": book, "quality": 0.0})
        none = await right_answers(adapter, prompts, stream=False)
    assert worse < better
    assert other_seed != better
    assert perfect == set(prompts)
    assert none == set()


async def test_the_control_api_rejects_a_quality_outside_zero_to_one() -> None:
    async with (
        serve_fake_openai() as fake,
        aiohttp.ClientSession() as http,
        http.put(f"{fake.url}/_fake/models/m", json={"quality": 1.5}) as response,
    ):
        assert response.status == 400
        assert "quality" in (await response.text())


def test_the_prompt_key_ignores_everything_but_the_users_text() -> None:
    base = {"messages": [{"role": "user", "content": "hello"}]}
    assert prompt_key(base) == prompt_key(msgspec.json.encode(base))
    with_system = {
        "model": "x",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}],
    }
    as_parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}
    assert prompt_key(with_system) == prompt_key(base) == prompt_key(as_parts)
    assert prompt_key({"messages": [{"role": "user", "content": "hello!"}]}) != prompt_key(base)
