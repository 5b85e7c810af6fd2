"""Every provider by every scenario: one matrix, one expected normalized result per scenario.

The fakes share one answer and token rule, so the same conversation must normalize to the same
text, finish reason and usage whichever provider's protocol carried it. Errors must land in the
same class of the taxonomy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import pytest
from adapter_helpers import (
    TOOLS,
    closing,
    collect,
    failure,
    finishes,
    refused_url,
    text_of,
    usages,
)

from adapters import (
    Adapter,
    AnthropicAdapter,
    ChatRequest,
    ErrorClass,
    GeminiAdapter,
    Message,
    OpenAIAdapter,
    OpenAICompatibleAdapter,
    TextDelta,
    ToolCallDelta,
    XAIAdapter,
)
from adapters.fakes import (
    ContentFilterFault,
    DropFault,
    FakeOpenAISettings,
    FakeServer,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    serve_fake_anthropic,
    serve_fake_gemini,
    serve_fake_openai,
    serve_fake_xai,
)

KEY = "test-key-0123456789"
MODEL = "m-1"
MESSAGES = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="What is the weather like in Paris today?"),
]

Serve = Callable[..., AbstractAsyncContextManager[FakeServer]]
PROVIDERS: dict[str, tuple[Serve, type[Adapter]]] = {
    "openai": (serve_fake_openai, OpenAIAdapter),
    "anthropic": (serve_fake_anthropic, AnthropicAdapter),
    "gemini": (serve_fake_gemini, GeminiAdapter),
    "xai": (serve_fake_xai, XAIAdapter),
    "compatible": (serve_fake_openai, OpenAICompatibleAdapter),
}


@pytest.fixture(params=sorted(PROVIDERS))
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeServer, Adapter]]:
    serve, adapter_type = PROVIDERS[request.param]
    async with serve(FakeOpenAISettings(api_key=KEY)) as fake:
        built = adapter_type(request.param, base_url=fake.base_url, api_key=KEY)  # type: ignore[call-arg]
        async with closing(built) as adapter:
            yield fake, adapter


def request(stream: bool, max_tokens: int = 64, **params: Any) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=MESSAGES, max_tokens=max_tokens, stream=stream, params=params
    )


async def openai_baseline(stream: bool) -> tuple[str, Any]:
    """The OpenAI fake's answer to the conversation: what every provider must agree with."""
    async with serve_fake_openai(FakeOpenAISettings(api_key=KEY)) as fake:
        await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=12))
        async with closing(OpenAIAdapter("openai", base_url=fake.base_url, api_key=KEY)) as adapter:
            chunks = await collect(adapter, request(stream))
    return text_of(chunks), usages(chunks)[0]


@pytest.mark.parametrize("stream", [False, True])
async def test_text_answer(provider: tuple[FakeServer, Adapter], stream: bool) -> None:
    fake, adapter = provider
    await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=12))
    chunks = await collect(adapter, request(stream))
    text, usage = await openai_baseline(stream)
    assert text_of(chunks) == text
    assert [f.reason for f in finishes(chunks)] == ["stop"]
    assert usages(chunks) == [usage]
    assert usage.output_tokens == 12
    if stream:
        assert sum(isinstance(c, TextDelta) for c in chunks) > 1


@pytest.mark.parametrize("stream", [False, True])
async def test_cut_at_max_tokens(provider: tuple[FakeServer, Adapter], stream: bool) -> None:
    fake, adapter = provider
    await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=50))
    chunks = await collect(adapter, request(stream, max_tokens=5))
    assert len(text_of(chunks).split()) == 5
    assert [f.reason for f in finishes(chunks)] == ["length"]
    assert usages(chunks)[0].output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_and_cached_tokens(
    provider: tuple[FakeServer, Adapter], stream: bool
) -> None:
    fake, adapter = provider
    await fake.control.set_model(
        MODEL, ModelBehaviour(answer_tokens=8, reasoning_tokens=6, cached_prompt_tokens=4)
    )
    usage = usages(await collect(adapter, request(stream)))[0]
    # Output includes reasoning on every provider, whatever its own convention.
    assert (usage.output_tokens, usage.reasoning_tokens) == (14, 6)
    assert usage.cached_input_tokens == 4
    assert usage.input_tokens > 4


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call(provider: tuple[FakeServer, Adapter], stream: bool) -> None:
    _, adapter = provider
    chunks = await collect(adapter, request(stream, tools=TOOLS, tool_choice="required"))
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].id
    assert calls[0].name == "get_weather"
    assert set(msgspec.json.decode("".join(c.arguments for c in calls))) == {"city"}
    assert [f.reason for f in finishes(chunks)] == ["tool_calls"]


@pytest.mark.parametrize("stream", [False, True])
async def test_content_filter(provider: tuple[FakeServer, Adapter], stream: bool) -> None:
    fake, adapter = provider
    await fake.control.set_model(
        MODEL, ModelBehaviour(faults=(ContentFilterFault(after_chunks=2),))
    )
    chunks = await collect(adapter, request(stream))
    assert [f.reason for f in finishes(chunks)] == ["content_filter"]


ERRORS: list[tuple[str, StatusFault, ErrorClass]] = [
    (
        "rate limit",
        StatusFault(status=429, error="rate_limit_exceeded", retry_after_s=2),
        ErrorClass.RATE_LIMITED,
    ),
    ("overload", StatusFault(status=503), ErrorClass.OVERLOADED),
    ("server error", StatusFault(status=500), ErrorClass.SERVER_ERROR),
    ("context overflow", StatusFault(error="context_length_exceeded"), ErrorClass.CONTEXT_OVERFLOW),
    ("bad request", StatusFault(status=400), ErrorClass.BAD_REQUEST),
    ("model gone", StatusFault(error="model_not_found"), ErrorClass.NOT_FOUND),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("case", "fault", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_error_responses(
    provider: tuple[FakeServer, Adapter],
    stream: bool,
    case: str,
    fault: StatusFault,
    expected: ErrorClass,
) -> None:
    fake, adapter = provider
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(stream))
    assert error.error_class is expected, case
    assert not error.after_response
    if fault.retry_after_s is not None:
        assert error.retry_after_s == fault.retry_after_s


async def test_whole_body_cut_short_is_a_server_error(
    provider: tuple[FakeServer, Adapter],
) -> None:
    fake, adapter = provider
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(DropFault(),)))
    error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert error.after_response


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_unreachable_provider_is_a_server_error(name: str) -> None:
    _, adapter_type = PROVIDERS[name]
    unreachable = adapter_type(name, base_url=refused_url(), api_key=KEY)  # type: ignore[call-arg]
    async with closing(unreachable) as adapter:
        error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert error.status is None


async def test_wrong_key_is_auth(provider: tuple[FakeServer, Adapter]) -> None:
    fake, adapter = provider
    wrong = type(adapter)(  # type: ignore[call-arg]
        adapter.provider, base_url=fake.base_url, api_key="wrong-key-XYZXYZXYZ"
    )
    async with closing(wrong):
        error = await failure(wrong, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert "XYZXYZXYZ" not in str(error)


STREAM_FAULTS: list[tuple[str, Any, int]] = [
    ("mid-stream error", MidStreamErrorFault(after_chunks=2, error="overloaded"), 2),
    ("connection dropped", DropFault(after_chunks=2), 2),
    ("no terminator", NoDoneFault(), -1),
]


@pytest.mark.parametrize(
    ("case", "fault", "delivered"), STREAM_FAULTS, ids=[f[0] for f in STREAM_FAULTS]
)
async def test_stream_failures_after_the_headers(
    provider: tuple[FakeServer, Adapter], case: str, fault: Any, delivered: int
) -> None:
    fake, adapter = provider
    await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=10, faults=(fault,)))
    received: list[Any] = []
    error = None
    try:
        async with await adapter.send(request(True)) as stream:
            async for chunk in stream:
                received.append(chunk)
    except Exception as exc:
        error = exc
    assert error is not None, f"{case}: the stream ended as if complete"
    assert getattr(error, "after_response", False), case
    assert getattr(error, "error_class", None) in (
        ErrorClass.OVERLOADED,
        ErrorClass.SERVER_ERROR,
    ), case
    if delivered >= 0:
        assert sum(isinstance(c, TextDelta) for c in received) == delivered, case
