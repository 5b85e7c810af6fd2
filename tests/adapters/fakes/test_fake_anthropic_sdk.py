"""The fake Anthropic server, driven by the official `anthropic` SDK (2.12.0): if the SDK parses
it, the wire format is faithful (testing doctrine)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, TextBlock, ThinkingBlock, ToolUseBlock

from adapters.fakes import (
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    StatusFault,
    serve_fake_anthropic,
)

KEY = "sk-ant-api03-fake-test-key-0123456789"
MODEL = "claude-fake-1"  # not a real model id: the SDK warns about deprecated ones
MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]
# The shared rule: 3 (reply priming) + [4 + ceil(14 / 4)] for the one message.
MESSAGES_INPUT_TOKENS = 3 + 4 + 4
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city", "units"],
    },
}


def blocks(message: Message) -> list[dict[str, Any]]:
    """The content as plain data (the stream helper returns Parsed* subclasses of the blocks)."""
    return [{"type": b.type, **b.model_dump(exclude_none=True)} for b in message.content]


def text_of(message: Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_anthropic(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def client(fake: FakeServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    # The SDK's defaults: API version 2026-10-21, the key as Authorization: Bearer (§3.1).
    sdk = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=KEY, max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


@pytest.fixture
async def legacy_client(fake: FakeServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The long-standing protocol: 2023-06-01 with the key as x-api-key."""
    sdk = anthropic.AsyncAnthropic(
        base_url=fake.base_url,
        api_key=None,
        default_headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        max_retries=0,
    )
    try:
        yield sdk
    finally:
        await sdk.close()


async def test_non_streaming_message(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=256, messages=MESSAGES
    )
    message = await raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert isinstance(block, TextBlock)
    assert len(block.text.split(" ")) == 16  # the default answer, one token per word
    assert message.usage.input_tokens == MESSAGES_INPUT_TOKENS
    assert message.usage.output_tokens == 16
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.service_tier == "standard"


async def test_sdk_default_and_legacy_protocols_both_work(
    fake: FakeServer,
    client: anthropic.AsyncAnthropic,
    legacy_client: anthropic.AsyncAnthropic,
) -> None:
    modern = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    legacy = await legacy_client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert modern.content == legacy.content
    first, second = await fake.control.requests(MODEL)
    assert first.headers["anthropic-version"] == "2026-10-21"
    assert first.headers["Authorization"] == "Bearer [redacted]"
    assert "x-api-key" not in first.headers
    assert second.headers["anthropic-version"] == "2023-06-01"
    assert second.headers["x-api-key"] == "[redacted]"
    assert "Authorization" not in second.headers


async def test_stream_helper_reassembles_the_same_message(
    client: anthropic.AsyncAnthropic,
) -> None:
    whole = await client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    texts: list[str] = []
    async with client.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as stream:
        async for text in stream.text_stream:
            texts.append(text)
        final = await stream.get_final_message()
    assert len(texts) == 16
    assert "".join(texts) == text_of(whole)
    assert blocks(final) == blocks(whole)
    assert final.usage == whole.usage
    assert final.stop_reason == "end_turn"


async def test_raw_stream_events_in_order(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(
        model=MODEL, max_tokens=256, messages=MESSAGES, stream=True
    )
    kinds = [event.type async for event in stream]
    # ping is on the wire but the SDK drops it (see the wire tests).
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 16,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use(client: anthropic.AsyncAnthropic, stream: bool) -> None:
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": MESSAGES,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any"},
    }
    if stream:
        async with client.messages.stream(**kwargs) as events:
            message = await events.get_final_message()
    else:
        message = await client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert isinstance(block, ToolUseBlock)
    assert block.id.startswith("toolu_")
    assert block.name == "get_weather"
    assert set(block.input) == {"city", "units"}
    assert block.input["units"] == "c"  # an enum's first value

    # Answer the call and continue: the fake checks the tool_use/tool_result pairing.
    conversation: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "Sunny"}],
        },
    ]
    follow_up = await client.messages.create(
        model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=conversation
    )
    assert follow_up.stop_reason == "end_turn"


async def test_auto_tool_choice_answers_in_text_by_default(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    assert message.stop_reason == "end_turn"
    assert isinstance(message.content[0], TextBlock)


async def test_thinking_and_cache_usage(fake: FakeServer, client: anthropic.AsyncAnthropic) -> None:
    await fake.control.set_model(
        MODEL, ModelBehaviour(answer_tokens=10, reasoning_tokens=40, cached_prompt_tokens=5)
    )
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "system": [
            {"type": "text", "text": "Long rules. " * 20, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": MESSAGES,
    }
    whole = await client.messages.create(**kwargs)
    async with client.messages.stream(**kwargs) as stream:
        streamed = await stream.get_final_message()
    for message in (whole, streamed):
        thinking, text = message.content
        assert isinstance(thinking, ThinkingBlock)
        assert thinking.thinking and thinking.signature
        assert isinstance(text, TextBlock)
        usage = message.usage
        assert usage.output_tokens == 10 + 40
        assert usage.output_tokens_details is not None
        assert usage.output_tokens_details.thinking_tokens == 40
        assert usage.cache_read_input_tokens == 5
        assert usage.cache_creation_input_tokens is not None
        assert usage.cache_creation_input_tokens > 50
    assert blocks(streamed) == blocks(whole)
    assert streamed.usage == whole.usage
    counted = await client.messages.count_tokens(
        model=MODEL, system=kwargs["system"], messages=MESSAGES
    )
    usage = whole.usage
    assert counted.input_tokens == (
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


async def test_refusal(fake: FakeServer, client: anthropic.AsyncAnthropic) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "content_filter", "after_chunks": 2}]})
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "refusal"
    assert message.stop_details is not None
    assert message.stop_details.type == "refusal"


async def test_rate_limit_with_retry_after(
    fake: FakeServer, client: anthropic.AsyncAnthropic
) -> None:
    await fake.control.set_model(
        MODEL, ModelBehaviour(faults=(StatusFault(status=429, retry_after_s=7),))
    )
    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    error = info.value
    assert error.response.headers["retry-after"] == "7"
    assert error.request_id == error.response.headers["request-id"]
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "rate_limit_error"
    assert error.body["request_id"] == error.request_id


@pytest.mark.parametrize(
    ("fault", "exception"),
    [
        (StatusFault(status=529), anthropic.OverloadedError),
        (StatusFault(error="overloaded"), anthropic.OverloadedError),
        (StatusFault(status=503), anthropic.ServiceUnavailableError),
        (StatusFault(status=500), anthropic.InternalServerError),
        (StatusFault(status=504), anthropic.GatewayTimeoutError),
        (StatusFault(status=401), anthropic.AuthenticationError),
        (StatusFault(status=402), anthropic.PaymentRequiredError),
        (StatusFault(status=403), anthropic.PermissionDeniedError),
        (StatusFault(status=404), anthropic.NotFoundError),
        (StatusFault(status=409), anthropic.ConflictError),
        (StatusFault(status=413), anthropic.ContentTooLargeError),
        (StatusFault(error="context_length_exceeded"), anthropic.BadRequestError),
        (StatusFault(status=429, error="insufficient_quota"),
         anthropic.EnforcedSpendLimitReachedError),
    ],
)  # fmt: skip
async def test_error_statuses_map_to_sdk_classes(
    fake: FakeServer,
    client: anthropic.AsyncAnthropic,
    fault: StatusFault,
    exception: type[anthropic.APIStatusError],
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    with pytest.raises(exception):
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)


async def test_overloaded_is_an_internal_server_error_subclass() -> None:
    # How the SDK maps 529: callers catching InternalServerError see overloads too.
    assert issubclass(anthropic.OverloadedError, anthropic.InternalServerError)


async def test_sdk_retries_an_overload_honouring_retry_after_ms(
    fake: FakeServer,
) -> None:
    fault = StatusFault(status=529, retry_after_ms=10, times=1)
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=KEY, max_retries=2) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert message.stop_reason == "end_turn"
    stats = await fake.control.stats()
    assert stats.models[MODEL].outcomes == {"http_529": 1, "ok": 1}


async def test_mid_stream_error_raises(fake: FakeServer, client: anthropic.AsyncAnthropic) -> None:
    await fake.control.set_model(
        MODEL, {"faults": [{"kind": "mid_stream_error", "after_chunks": 3, "error": "overloaded"}]}
    )
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            async for text in stream.text_stream:
                received.append(text)
    # The SDK builds the error from the 200 response: only the body tells the type (§3.5).
    assert info.value.status_code == 200
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert len(received) == 3


async def test_removed_sampling_params_are_rejected_on_the_new_version(
    client: anthropic.AsyncAnthropic, legacy_client: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(
            model=MODEL, max_tokens=64, messages=MESSAGES, extra_body={"temperature": 1.0}
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["message"] == "temperature: Extra inputs are not permitted"
    message = await legacy_client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, extra_body={"temperature": 0.5}
    )
    assert message.stop_reason == "end_turn"


async def test_wrong_key_is_rejected(fake: FakeServer) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="sk-ant-wrong", max_retries=0
    ) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await sdk.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert "sk-ant-wrong" not in str(info.value)
