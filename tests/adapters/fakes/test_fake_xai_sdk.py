"""The fake xAI server, driven by the official `openai` SDK (the reference's REST client for
xAI, §5.1): if the SDK parses it, the wire is faithful. Raw-wire checks use aiohttp."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from adapters.fakes import FakeOpenAISettings, FakeServer, serve_fake_xai

API_KEY = "xai-fake-test-key-0123456789abcdef"
MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say something."},
]
# The shared token rule: 3 + [4 + ceil(9 / 4)] + [4 + ceil(14 / 4)].
PROMPT_TOKENS = 18
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"enum": ["c", "f"]}},
            "required": ["city", "units"],
        },
    },
}


@pytest.fixture
async def xai() -> AsyncIterator[FakeServer]:
    async with serve_fake_xai(FakeOpenAISettings(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
async def client(xai: FakeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=xai.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


async def test_non_streaming_completion_has_xai_ids_and_usage(
    client: openai.AsyncOpenAI, xai: FakeServer
) -> None:
    await xai.control.set_model("grok-4", {"reasoning_tokens": 7, "cached_prompt_tokens": 4})
    completion = await client.chat.completions.create(model="grok-4", messages=MESSAGES)

    assert is_uuid(completion.id)
    assert completion.object == "chat.completion"
    assert completion.system_fingerprint is not None
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert len((choice.message.content or "").split(" ")) == 16
    usage = completion.usage
    assert usage is not None
    # xAI counts reasoning outside completion_tokens, but inside total_tokens.
    assert usage.completion_tokens == 16
    assert usage.total_tokens == PROMPT_TOKENS + 16 + 7
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.prompt_tokens == PROMPT_TOKENS
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.model_extra == {"num_sources_used": 0}


async def test_stream_with_usage(client: openai.AsyncOpenAI, xai: FakeServer) -> None:
    await xai.control.set_model("grok-4", {"reasoning_tokens": 3})
    whole = await client.chat.completions.create(model="grok-4", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="grok-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert {c.id for c in chunks} == {chunks[0].id}
    assert is_uuid(chunks[0].id)
    assert chunks[0].choices[0].delta.role == "assistant"
    *content, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text == whole.choices[0].message.content
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 16
    assert usage_chunk.usage.total_tokens == PROMPT_TOKENS + 16 + 3


async def test_tool_call_streamed_and_not(client: openai.AsyncOpenAI) -> None:
    whole = await client.chat.completions.create(
        model="grok-4", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required"
    )
    [choice] = whole.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [expected] = choice.message.tool_calls
    assert expected.type == "function"
    assert expected.function.name == "get_weather"
    assert json.loads(expected.function.arguments)["units"] == "c"

    async with client.chat.completions.stream(
        model="grok-4", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required"
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls is not None
    [call] = final.choices[0].message.tool_calls
    assert (call.id, call.function.arguments) == (expected.id, expected.function.arguments)


async def test_rate_limit_with_retry_after_is_flat(
    client: openai.AsyncOpenAI, xai: FakeServer
) -> None:
    await xai.control.set_model(
        "grok-4", {"faults": [{"kind": "status", "status": 429, "retry_after_s": 3}]}
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="grok-4", messages=MESSAGES)
    err = caught.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "3"
    # The flat shape: the SDK finds no nested error object, so no code/type, and the body is
    # the message string.
    assert err.code is None
    assert err.type is None
    assert isinstance(err.body, str)
    assert "rate" in err.body.lower() or "limit" in err.body.lower()
    assert err.response.json() == {"code": "Some resource has been exhausted", "error": err.body}


async def test_bad_key_is_a_400_bad_request(xai: FakeServer) -> None:
    wrong = "xai-wrong-key-long-enough-98zq"
    async with openai.AsyncOpenAI(base_url=xai.base_url, api_key=wrong, max_retries=0) as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(model="grok-4", messages=MESSAGES)
    err = caught.value
    assert err.status_code == 400
    assert err.body == (
        "Incorrect API key provided: xa***zq. You can obtain an API key from https://console.x.ai."
    )
    assert err.response.json()["code"] == "Client specified an invalid argument"
    assert wrong not in err.response.text


async def test_sdk_retries_a_capacity_503_then_succeeds(xai: FakeServer) -> None:
    await xai.control.set_model(
        "grok-4",
        {"faults": [{"kind": "status", "error": "overloaded", "retry_after_ms": 10, "times": 1}]},
    )
    async with openai.AsyncOpenAI(base_url=xai.base_url, api_key=API_KEY, max_retries=1) as sdk:
        completion = await sdk.chat.completions.create(model="grok-4", messages=MESSAGES)
    assert completion.choices[0].finish_reason == "stop"
    stats = await xai.control.stats()
    assert stats.models["grok-4"].outcomes == {"http_503": 1, "ok": 1}


@pytest.mark.parametrize(
    ("fault", "exception", "status", "needle"),
    [
        (
            {"kind": "status", "error": "insufficient_quota"},
            openai.PermissionDeniedError,
            403,
            "used all available credits",
        ),
        (
            {"kind": "status", "status": 403, "message": "Content violates usage guidelines."},
            openai.PermissionDeniedError,
            403,
            "usage guidelines",
        ),
        ({"kind": "status", "error": "model_not_found"}, openai.NotFoundError, 404, "deprecated"),
        ({"kind": "status", "status": 500}, openai.InternalServerError, 500, "Internal error"),
    ],
)
async def test_other_errors_parse(
    client: openai.AsyncOpenAI,
    xai: FakeServer,
    fault: dict[str, object],
    exception: type[openai.APIStatusError],
    status: int,
    needle: str,
) -> None:
    await xai.control.set_model("grok-4", {"faults": [fault]})
    with pytest.raises(exception) as caught:
        await client.chat.completions.create(model="grok-4", messages=MESSAGES)
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, str)
    assert needle in caught.value.body


async def test_mid_stream_flat_error_raises_api_error(
    client: openai.AsyncOpenAI, xai: FakeServer
) -> None:
    await xai.control.set_model(
        "grok-4",
        {"faults": [{"kind": "mid_stream_error", "after_chunks": 3, "error": "overloaded"}]},
    )
    stream = await client.chat.completions.create(model="grok-4", messages=MESSAGES, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert not isinstance(caught.value, openai.APIStatusError)
    assert isinstance(caught.value.body, str)
    assert "at capacity" in caught.value.body
    assert len([r for r in received if r]) == 3


async def test_raw_wire_of_errors_and_stream(xai: FakeServer) -> None:
    url = xai.base_url + "/chat/completions"
    body = {"model": "grok-4", "messages": MESSAGES}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as missing:
            assert missing.status == 401
            flat = await missing.json()
            assert set(flat) == {"code", "error"}
            assert flat["code"].startswith("The request does not have valid authentication")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        await xai.control.set_model(
            "grok-4",
            {"faults": [{"kind": "mid_stream_error", "after_chunks": 1, "error": "overloaded"}]},
        )
        stream_body = {**body, "stream": True}
        async with http.post(url, json=stream_body, headers=headers) as resp:
            assert resp.status == 200
            raw = await resp.read()
    events = raw.decode().strip().split("\n\n")
    assert b"[DONE]" not in raw
    assert json.loads(events[-1].removeprefix("data: ")) == {
        "code": "The service is currently unavailable",
        "error": (
            "Service temporarily unavailable. The model is at capacity and currently cannot "
            "serve this request. Please try again later."
        ),
    }


async def test_unlisted_model_is_a_retired_404() -> None:
    settings = FakeOpenAISettings(models=("grok-4.3",))
    async with (
        serve_fake_xai(settings) as xai,
        openai.AsyncOpenAI(base_url=xai.base_url, api_key="any", max_retries=0) as sdk,
    ):
        assert [m.id async for m in sdk.models.list()] == ["grok-4.3"]
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model="grok-3", messages=MESSAGES)
    assert caught.value.response.json() == {
        "code": "Some requested entity was not found",
        "error": (
            "The model grok-3 was deprecated on 2026-05-15 and is no longer accessible via the "
            "API. Please use grok-4.3 instead."
        ),
    }
