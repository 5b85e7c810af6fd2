"""The Anthropic adapter against the fake Anthropic server: normalized chunks, usage, finish
reasons and errors, and the request as it reaches the wire (read back from the fake's log)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from adapter_helpers import (
    TOOLS,
    chat_request,
    closing,
    collect,
    failure,
    failure_after,
    finishes,
    last_body,
    reports,
    text_of,
)

from adapters import (
    AudioPart,
    ChatRequest,
    ErrorClass,
    Finish,
    ImagePart,
    ImageURL,
    Message,
    OpenAIAdapter,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
)
from adapters._anthropic import AnthropicAdapter
from adapters.fakes import (
    DropFault,
    FakeOpenAISettings,
    FakeServer,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    serve_fake_anthropic,
    serve_fake_openai,
)

KEY = "sk-ant-api03-0123456789abcdefSECRET"
MODEL = "claude-test"


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_anthropic(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeServer) -> AsyncIterator[AnthropicAdapter]:
    built = AnthropicAdapter("anthropic", base_url=fake.base_url, api_key=KEY)
    async with closing(built) as adapter:
        yield adapter


def request(
    stream: bool, max_tokens: int = 64, messages: list[Message] | None = None, **params: Any
) -> ChatRequest:
    return chat_request(MODEL, stream, max_tokens, messages, **params)


# -- successful answers -----------------------------------------------------------------------

CACHED = [
    Message(
        role="system",
        content=[
            TextPart(text="A long, reused preamble. " * 8, cache_control={"type": "ephemeral"})
        ],
    ),
    Message(role="user", content="Tell me something."),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("behaviour", "req_kw", "words", "finish"),
    [
        pytest.param({"answer_tokens": 12}, {}, 12, Finish("stop", raw="end_turn"), id="text"),
        pytest.param(
            {"answer_tokens": 50}, {"max_tokens": 7}, 7, Finish("length", raw="max_tokens"),
            id="max_tokens",
        ),
        pytest.param(
            {"faults": [{"kind": "content_filter", "after_chunks": 3}]}, {}, 3,
            Finish("content_filter", raw="refusal"), id="refusal",
        ),
        pytest.param(
            {"answer_tokens": 12, "reasoning_tokens": 5, "cached_prompt_tokens": 4},
            {"messages": CACHED}, 12, Finish("stop", raw="end_turn"), id="cache_and_thinking",
        ),
    ],
)  # fmt: skip
async def test_answers_normalize(
    adapter: AnthropicAdapter,
    fake: FakeServer,
    stream: bool,
    behaviour: dict[str, Any],
    req_kw: dict[str, Any],
    words: int,
    finish: Finish,
) -> None:
    await fake.control.set_model(MODEL, behaviour)
    chunks = await collect(adapter, request(stream, **req_kw))
    assert len(text_of(chunks).split()) == words
    assert finishes(chunks) == [finish]
    [report] = reports(chunks)
    assert chunks[-1] == report  # usage comes last, after the finish
    usage = report.usage
    reasoning = behaviour.get("reasoning_tokens", 0)
    assert usage.output_tokens == words + reasoning  # thinking is inside output_tokens
    assert usage.reasoning_tokens == reasoning
    assert usage.cached_input_tokens == behaviour.get("cached_prompt_tokens", 0)
    if "messages" in req_kw:
        # The marked system prompt is written to the cache, apart from what was read.
        assert usage.cache_write_tokens > 20
        assert usage.input_tokens > usage.cache_write_tokens + usage.cached_input_tokens
    else:
        assert usage.cache_write_tokens == 0
    assert usage.input_tokens == await count_tokens(fake, await last_body(fake, MODEL))
    if stream:
        assert sum(isinstance(c, TextDelta) for c in chunks) == words


async def count_tokens(fake: FakeServer, body: dict[str, Any]) -> int:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(fake.url + "/v1/messages/count_tokens", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        tokens: int = (await resp.json())["input_tokens"]
        return tokens


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_comes_as_deltas_that_assemble(
    adapter: AnthropicAdapter, stream: bool
) -> None:
    chunks = await collect(adapter, request(stream, tools=TOOLS, tool_choice="required"))
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].id is not None and calls[0].id.startswith("toolu_")
    assert calls[0].name == "get_weather"
    assert all(c.index == 0 for c in calls)
    assert all(c.id is None and c.name is None for c in calls[1:])
    arguments = msgspec.json.decode("".join(c.arguments for c in calls))
    assert set(arguments) == {"city"}
    assert finishes(chunks) == [Finish("tool_calls", raw="tool_use")]
    if stream:
        assert len(calls) > 2  # the input arrived as partial_json pieces


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"tools": TOOLS, "tool_choice": "required"},
        {"messages": CACHED},
    ],
)
async def test_streamed_and_whole_answers_agree(
    adapter: AnthropicAdapter, fake: FakeServer, params: dict[str, Any]
) -> None:
    await fake.control.set_model(MODEL, {"reasoning_tokens": 3, "cached_prompt_tokens": 2})
    whole = await collect(adapter, request(False, **params))
    streamed = await collect(adapter, request(True, **params))
    assert text_of(whole) == text_of(streamed)
    assert reports(whole) == reports(streamed)
    assert finishes(whole) == finishes(streamed)


async def test_stop_sequence_cuts_the_answer(adapter: AnthropicAdapter, fake: FakeServer) -> None:
    full = text_of(await collect(adapter, request(False)))
    stop = full.split()[5]
    chunks = await collect(adapter, request(True, stop=[stop]))
    # Everything before the first occurrence, the sequence itself left out (as the API does).
    assert text_of(chunks) == full[: full.index(stop)]
    assert finishes(chunks) == [Finish("stop", raw="stop_sequence")]
    assert (await last_body(fake, MODEL))["stop_sequences"] == [stop]


# -- errors -----------------------------------------------------------------------------------

ERROR_CASES: list[tuple[StatusFault, int, ErrorClass, bool]] = [
    (StatusFault(status=429, retry_after_s=2), 429, ErrorClass.RATE_LIMITED, False),
    (StatusFault(status=429, error="insufficient_quota"), 429, ErrorClass.RATE_LIMITED, True),
    (StatusFault(error="insufficient_quota"), 400, ErrorClass.RATE_LIMITED, True),
    (StatusFault(status=402), 402, ErrorClass.RATE_LIMITED, True),
    (StatusFault(status=529, retry_after_s=3), 529, ErrorClass.OVERLOADED, False),
    (StatusFault(status=503), 503, ErrorClass.OVERLOADED, False),
    (StatusFault(status=500), 500, ErrorClass.SERVER_ERROR, False),
    (StatusFault(error="bad_gateway"), 502, ErrorClass.SERVER_ERROR, False),
    (StatusFault(status=409), 409, ErrorClass.SERVER_ERROR, False),
    (StatusFault(status=504, retry_after_s=1), 504, ErrorClass.TIMEOUT, False),
    (StatusFault(status=401), 401, ErrorClass.AUTH, False),
    (StatusFault(status=403), 403, ErrorClass.AUTH, False),
    (StatusFault(error="context_length_exceeded"), 400, ErrorClass.CONTEXT_OVERFLOW, False),
    (StatusFault(status=400), 400, ErrorClass.BAD_REQUEST, False),
    (StatusFault(status=413), 413, ErrorClass.BAD_REQUEST, False),
    (StatusFault(status=404), 404, ErrorClass.NOT_FOUND, False),
]


@pytest.mark.parametrize(("fault", "status", "expected", "quota"), ERROR_CASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_are_classified(
    adapter: AnthropicAdapter,
    fake: FakeServer,
    fault: StatusFault,
    status: int,
    expected: ErrorClass,
    quota: bool,
    stream: bool,
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(stream))
    assert error.error_class is expected
    assert error.quota is quota
    assert error.provider == "anthropic"
    assert error.status == status
    assert not error.after_response
    assert error.retry_after_s == fault.retry_after_s
    assert error.provider_code  # Anthropic's error.type (or details.error_code)
    stats = await fake.control.stats()
    assert stats.models[MODEL].outcomes == {f"http_{error.status}": 1}


async def test_context_window_overflow_is_detected_from_the_message(
    adapter: AnthropicAdapter, fake: FakeServer
) -> None:
    await fake.control.set_model(MODEL, {"context_window": 5})
    error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.CONTEXT_OVERFLOW
    assert "prompt is too long" in error.message


MID_STREAM: list[tuple[object, ErrorClass, str | None]] = [
    (MidStreamErrorFault(after_chunks=2, error="overloaded"), ErrorClass.OVERLOADED,
     "overloaded_error"),
    (MidStreamErrorFault(after_chunks=2), ErrorClass.SERVER_ERROR, "api_error"),
    (MidStreamErrorFault(after_chunks=2, error="rate_limit_exceeded"), ErrorClass.RATE_LIMITED,
     "rate_limit_error"),
    (DropFault(after_chunks=2), ErrorClass.SERVER_ERROR, None),
    (NoDoneFault(), ErrorClass.SERVER_ERROR, "stream_truncated"),
    (MalformedSSEFault(after_chunks=2), ErrorClass.SERVER_ERROR, "malformed_sse"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "expected", "code"), MID_STREAM)
async def test_failures_after_the_headers_are_classified(
    adapter: AnthropicAdapter,
    fake: FakeServer,
    fault: Any,
    expected: ErrorClass,
    code: str | None,
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error, received = await failure_after(adapter, request(True))
    assert error.error_class is expected
    assert error.after_response
    assert error.provider_code == code
    if isinstance(fault, NoDoneFault):
        # The whole answer and its finish came; only the terminator (and so usage) is missing.
        assert finishes(received) == [Finish("stop", raw="end_turn")]
        assert not reports(received)
    else:
        assert sum(isinstance(c, TextDelta) for c in received) == 2


@pytest.mark.parametrize("version", [None, "2026-10-21"])
async def test_wrong_key_is_auth_and_the_key_is_never_in_errors_or_logs(
    fake: FakeServer, version: str | None
) -> None:
    wrong = "sk-ant-api03-WRONGKEY0123456789abcdef"
    wrong_adapter = AnthropicAdapter(
        "anthropic", base_url=fake.base_url, api_key=wrong, api_version=version
    )
    async with closing(wrong_adapter) as adapter:
        error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert error.status == 401
    logged = (await fake.control.requests(MODEL))[-1]
    for text in (str(error), error.message, repr(error), repr(adapter), repr(logged)):
        assert "WRONGKEY" not in text
    # The fake logs which auth style came, with the key masked.
    if version is None:
        assert logged.headers["x-api-key"] == "[redacted]"
        assert "Authorization" not in logged.headers
    else:
        assert logged.headers["Authorization"] == "Bearer [redacted]"
        assert "x-api-key" not in logged.headers


# -- the request on the wire ------------------------------------------------------------------


async def test_default_version_uses_x_api_key(adapter: AnthropicAdapter, fake: FakeServer) -> None:
    await collect(adapter, request(False, temperature=0.3, top_p=0.9))
    logged = (await fake.control.requests(MODEL))[-1]
    assert logged.headers["anthropic-version"] == "2023-06-01"
    body = await last_body(fake, MODEL)
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 64
    assert body["stream"] is False


async def test_new_version_uses_bearer_and_drops_sampling_params(
    fake: FakeServer,
) -> None:
    new = AnthropicAdapter(
        "anthropic", base_url=fake.base_url, api_key=KEY, api_version="2026-10-21"
    )
    async with closing(new) as adapter:
        # The fake rejects these on 2026-10-21, so a success proves they were left out.
        chunks = await collect(adapter, request(True, temperature=0.3, top_p=0.9, top_k=4))
    assert finishes(chunks) == [Finish("stop", raw="end_turn")]
    logged = (await fake.control.requests(MODEL))[-1]
    assert logged.headers["anthropic-version"] == "2026-10-21"
    body = await last_body(fake, MODEL)
    assert {"temperature", "top_p", "top_k"}.isdisjoint(body)


async def test_conversation_translation_reaches_the_wire_and_is_accepted(
    adapter: AnthropicAdapter, fake: FakeServer
) -> None:
    call = ToolCall(
        id="toolu_01A", function=ToolCallFunction(name="get_weather", arguments='{"city":"Paris"}')
    )
    marked = TextPart(text="Reused context.", cache_control={"type": "ephemeral"})
    image = ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo="))
    messages = [
        Message(role="system", content="You are terse."),
        Message(role="user", content=[marked, image]),
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="tool", tool_call_id="toolu_01A", content="18C, sunny"),
        Message(role="developer", content="Answer in one line."),
        Message(role="user", content="And tomorrow?"),
    ]
    chunks = await collect(
        adapter,
        request(
            False,
            max_tokens=4096,
            messages=messages,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stop=["END", "STOP"],
            metadata={"user_id": "tenant-7"},
            presence_penalty=0.5,
        ),
    )
    assert finishes(chunks) == [Finish("tool_calls", raw="tool_use")]
    body = await last_body(fake, MODEL)
    assert body["system"] == "You are terse.\n\nAnswer in one line."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Reused context.", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "text", "text": "Weather in Paris?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": TOOLS[0]["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["metadata"] == {"user_id": "tenant-7"}
    assert "presence_penalty" not in body


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_passes_through_and_its_tokens_are_reasoning(
    adapter: AnthropicAdapter, fake: FakeServer, stream: bool
) -> None:
    await fake.control.set_model(MODEL, {"reasoning_tokens": 30, "answer_tokens": 8})
    thinking = {"type": "enabled", "budget_tokens": 2048}
    chunks = await collect(
        adapter, request(stream, max_tokens=4096, thinking=thinking, temperature=0.5)
    )
    # The thinking block is not content: only the answer's words come through.
    assert len(text_of(chunks).split()) == 8
    [report] = reports(chunks)
    assert (report.usage.output_tokens, report.usage.reasoning_tokens) == (38, 30)
    body = await last_body(fake, MODEL)
    assert body["thinking"] == thinking
    assert "temperature" not in body  # Anthropic rejects sampling changes with thinking


async def test_provider_validation_errors_are_bad_requests(
    adapter: AnthropicAdapter,
) -> None:
    # The thinking budget must stay under max_tokens; the fake says so as the API does.
    thinking = {"type": "enabled", "budget_tokens": 2048}
    error = await failure(adapter, request(False, max_tokens=1024, thinking=thinking))
    assert error.error_class is ErrorClass.BAD_REQUEST
    assert error.status == 400
    assert "budget_tokens" in error.message


async def test_untranslatable_content_fails_before_the_network(
    adapter: AnthropicAdapter, fake: FakeServer
) -> None:
    audio = AudioPart(input_audio={"data": "AAAA", "format": "wav"})
    error = await failure(adapter, request(False, messages=[Message(role="user", content=[audio])]))
    assert error.error_class is ErrorClass.BAD_REQUEST
    assert error.status is None
    assert (await fake.control.stats()).requests == 0


async def test_the_fakes_agree_on_answers_and_token_counts(
    adapter: AnthropicAdapter,
) -> None:
    """One conversation, through each adapter and its fake: the shared answer machinery gives
    the same words and the same total input tokens, whatever the wire format."""
    async with serve_fake_openai(FakeOpenAISettings(api_key=KEY)) as openai_fake:
        openai = OpenAIAdapter("openai", base_url=openai_fake.base_url, api_key=KEY)
        async with closing(openai):
            via_openai = await collect(openai, request(True))
    via_anthropic = await collect(adapter, request(True))
    assert text_of(via_openai) == text_of(via_anthropic)
    assert reports(via_openai) == reports(via_anthropic)
