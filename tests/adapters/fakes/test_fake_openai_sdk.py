"""The fake OpenAI server, driven by the official `openai` SDK: if the SDK parses it, the wire
format is faithful (testing doctrine)."""

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from adapters.fakes import FakeOpenAISettings, FakeServer, serve_fake_openai

MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say something."},
]
# 3 (reply priming) + [4 + ceil(9 / 4)] + [4 + ceil(14 / 4)] = 3 + 7 + 8
MESSAGES_PROMPT_TOKENS = 18

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "units": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer"},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "units", "days"],
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


async def test_non_streaming_completion(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o"
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    content = choice.message.content
    assert content is not None
    words = content.split(" ")
    assert len(words) == 16  # the default answer length, one token per word
    assert all(words)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == MESSAGES_PROMPT_TOKENS
    assert usage.completion_tokens == 16
    assert usage.total_tokens == MESSAGES_PROMPT_TOKENS + 16


async def test_answer_is_a_function_of_model_and_prompt(client: openai.AsyncOpenAI) -> None:
    async def ask(model: str, messages: list[Any]) -> str | None:
        completion = await client.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content

    first = await ask("gpt-4o", MESSAGES)
    assert await ask("gpt-4o", MESSAGES) == first
    assert await ask("gpt-4o-mini", MESSAGES) != first
    assert await ask("gpt-4o", [{"role": "user", "content": "Something else."}]) != first


async def test_stream_with_usage_reassembles_the_answer(client: openai.AsyncOpenAI) -> None:
    whole = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    # The finish reason rides on its own empty delta, then the usage chunk closes the stream.
    *content_chunks, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert all(c.choices[0].finish_reason is None for c in content_chunks)
    assert all(c.usage is None for c in chunks[:-1])
    assert usage_chunk.choices == []
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == whole.choices[0].message.content
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == MESSAGES_PROMPT_TOKENS
    assert usage_chunk.usage.completion_tokens == 16
    assert usage_chunk.usage.total_tokens == MESSAGES_PROMPT_TOKENS + 16
    # One token per chunk by default, like OpenAI: the role chunk, 16 content chunks.
    assert sum(1 for c in content_chunks if c.choices[0].delta.content) == 16


async def test_stream_without_include_usage_has_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]

    assert all(c.usage is None for c in chunks)
    assert all(len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_max_completion_tokens_truncates_with_length(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_completion_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert len((completion.choices[0].message.content or "").split(" ")) == 5
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5

    # The deprecated max_tokens works the same way, streamed too.
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split(" ")) == 3
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_a_limit_above_the_answer_does_not_truncate(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_completion_tokens=16
    )
    assert completion.choices[0].finish_reason == "stop"


async def test_required_tool_call_non_streaming(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required"
    )
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    # Required properties only, each valid for its schema (an enum's first value).
    assert set(arguments) == {"city", "units", "days"}
    assert isinstance(arguments["city"], str)
    assert arguments["city"]
    assert arguments["units"] == "c"
    assert arguments["days"] == 0
    assert completion.usage is not None
    # 1 for the call + 1 per 4 characters of arguments.
    assert completion.usage.completion_tokens == 1 + -(-len(call.function.arguments) // 4)


async def test_streamed_tool_call_accumulates_in_the_sdk(client: openai.AsyncOpenAI) -> None:
    whole = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required"
    )
    async with client.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required"
    ) as stream:
        final = await stream.get_final_completion()

    [choice] = final.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert whole.choices[0].message.tool_calls is not None
    [expected] = whole.choices[0].message.tool_calls
    assert isinstance(expected, ChatCompletionMessageFunctionToolCall)
    assert call.id == expected.id
    assert call.function.name == "get_weather"
    assert call.function.arguments == expected.function.arguments
    assert json.loads(call.function.arguments)["units"] == "c"


async def test_streamed_tool_call_fragments(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        stream=True,
    )
    fragments = [
        call
        for chunk in stream_chunks(await collect(stream))
        for call in chunk.delta.tool_calls or []
    ]
    first, *rest = fragments
    assert first.id is not None
    assert first.id.startswith("call_")
    assert first.function is not None
    assert first.function.name == "get_weather"
    assert first.function.arguments == ""
    assert len(rest) > 1  # the arguments arrive in pieces
    assert all(f.id is None and f.index == 0 for f in rest)
    assert all(f.function is not None and f.function.name is None for f in rest)
    json.loads("".join(f.function.arguments or "" for f in rest if f.function))


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def collect_content(stream: Any, received: list[str]) -> None:
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content or "")


def stream_chunks(chunks: list[Any]) -> list[Any]:
    return [c.choices[0] for c in chunks if c.choices]


async def test_named_tool_choice_calls_that_function(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "get_time"
    assert calls[0].function.arguments == "{}"


async def test_auto_tool_choice_follows_the_model_script(
    client: openai.AsyncOpenAI, fake: FakeServer
) -> None:
    auto = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    assert auto.choices[0].message.tool_calls is None
    assert auto.choices[0].finish_reason == "stop"

    await fake.control.set_model("gpt-4o", {"tool_use": "offered"})
    offered = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    assert offered.choices[0].finish_reason == "tool_calls"
    declined = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert declined.choices[0].message.tool_calls is None


async def test_rate_limit_is_a_rate_limit_error_with_retry_after(
    client: openai.AsyncOpenAI, fake: FakeServer
) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "status", "status": 429, "retry_after_s": 2, "times": 1}]}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    err = caught.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    assert err.response.headers["retry-after"] == "2"
    assert err.response.headers["x-ratelimit-reset-requests"] == "2s"
    assert "Please try again in 2s" in err.message
    assert err.request_id is not None
    # times=1: the next request is served.
    ok = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert ok.choices[0].finish_reason == "stop"


async def test_insufficient_quota(client: openai.AsyncOpenAI, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "status", "error": "insufficient_quota"}]}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert "exceeded your current quota" in caught.value.message


async def test_context_overflow_is_a_bad_request(
    client: openai.AsyncOpenAI, fake: FakeServer
) -> None:
    await fake.control.set_model("gpt-4o", {"context_window": 17})
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    err = caught.value
    assert err.code == "context_length_exceeded"
    assert err.param == "messages"
    assert err.type == "invalid_request_error"
    assert err.body == {
        "message": "This model's maximum context length is 17 tokens. However, your messages "
        "resulted in 18 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    # A prompt that fits is served.
    await fake.control.set_model("gpt-4o", {"context_window": 18})
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


async def test_context_overflow_as_a_fault(client: openai.AsyncOpenAI, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "status", "error": "context_length_exceeded"}]}
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 128000 tokens" in caught.value.message
    assert "resulted in 18 tokens" in caught.value.message


async def test_wrong_key_is_an_authentication_error(fake: FakeServer) -> None:
    wrong = "sk-wrong-key-that-is-long-enough-9876"
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=wrong, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = caught.value
    assert err.status_code == 401
    assert err.code == "invalid_api_key"
    assert wrong not in err.message
    assert wrong not in err.response.text
    assert "9876" in err.message  # OpenAI shows a redacted hint


@pytest.mark.parametrize(
    ("fault", "status", "needle"),
    [
        ({"kind": "status", "status": 500}, 500, "error while processing your request"),
        ({"kind": "status", "error": "overloaded"}, 503, "overloaded"),
    ],
)
async def test_server_errors(
    client: openai.AsyncOpenAI,
    fake: FakeServer,
    fault: dict[str, object],
    status: int,
    needle: str,
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [fault]})
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"
    assert needle in caught.value.message


async def test_mid_stream_error_raises_api_error(
    client: openai.AsyncOpenAI, fake: FakeServer
) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "mid_stream_error", "after_chunks": 3}]}
    )
    stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        await collect_content(stream, received)

    # A plain APIError (no HTTP status): the response itself was a 200.
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.type == "server_error"
    assert caught.value.body == {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert len([r for r in received if r]) == 3


async def test_sdk_retries_honour_retry_after_ms(fake: FakeServer, api_key: str) -> None:
    await fake.control.set_model(
        "gpt-4o",
        {"faults": [{"kind": "status", "status": 429, "retry_after_ms": 10, "times": 2}]},
    )
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=api_key, max_retries=2) as sdk:
        completion = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].finish_reason == "stop"

    stats = await fake.control.stats()
    assert stats.models["gpt-4o"].outcomes == {"http_429": 2, "ok": 1}
    log = await fake.control.requests("gpt-4o")
    assert [r.headers["x-stainless-retry-count"] for r in log] == ["0", "1", "2"]


async def test_content_filter_cuts_the_answer(client: openai.AsyncOpenAI, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "content_filter", "after_chunks": 2}]}
    )
    completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].finish_reason == "content_filter"
    assert len((completion.choices[0].message.content or "").split(" ")) == 2
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2


async def test_reasoning_and_cached_tokens_in_usage(
    client: openai.AsyncOpenAI, fake: FakeServer
) -> None:
    await fake.control.set_model("o3", {"reasoning_tokens": 7, "cached_prompt_tokens": 4})
    completion = await client.chat.completions.create(model="o3", messages=MESSAGES)
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == 16 + 7
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4

    # Reasoning counts against the limit: 10 - 7 leaves 3 visible tokens.
    cut = await client.chat.completions.create(
        model="o3", messages=MESSAGES, max_completion_tokens=10
    )
    assert cut.choices[0].finish_reason == "length"
    assert len((cut.choices[0].message.content or "").split(" ")) == 3
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 10


async def test_model_list_and_unknown_models() -> None:
    settings = FakeOpenAISettings(models=("gpt-4o", "gpt-4o-mini"))
    async with (
        serve_fake_openai(settings) as fake,
        openai.AsyncOpenAI(base_url=fake.base_url, api_key="any", max_retries=0) as sdk,
    ):
        listed = [m.id async for m in sdk.models.list()]
        assert listed == ["gpt-4o", "gpt-4o-mini"]
        assert (await sdk.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model="gpt-5", messages=MESSAGES)
        assert caught.value.code == "model_not_found"
        assert "`gpt-5`" in caught.value.message


async def test_scripted_auth_failure(
    client: openai.AsyncOpenAI, fake: FakeServer, api_key: str
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "status", "status": 401}]})
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"
    assert api_key not in caught.value.message
    assert f"Incorrect API key provided: sk-{'*' * (len(api_key) - 7)}{api_key[-4:]}." in (
        caught.value.message
    )
