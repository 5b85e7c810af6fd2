"""The Gemini adapter against the fake Gemini server: normalized chunks, usage, finish reasons,
errors, and the request as it reaches the wire."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from adapter_helpers import (
    MESSAGES,
    WEATHER_TOOL,
    cases,
    chat_request,
    closing,
    collect,
    failure,
    failure_after,
    finishes,
    last_body,
    text_of,
    usages,
)

from adapters import (
    ChatRequest,
    ErrorClass,
    Finish,
    ImagePart,
    ImageURL,
    Message,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    UsageReport,
)
from adapters._gemini import GeminiAdapter
from adapters.fakes import (
    ContentFilterFault,
    DropFault,
    FakeOpenAISettings,
    FakeServer,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    serve_fake_gemini,
)

KEY = "AIzaSyTestKey0123456789abcdefSECRET"
MODEL = "gemini-2.5-flash"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_gemini(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeServer) -> AsyncIterator[GeminiAdapter]:
    async with closing(GeminiAdapter("gemini", base_url=fake.base_url, api_key=KEY)) as adapter:
        yield adapter


def request(
    stream: bool, max_tokens: int = 64, messages: list[Message] | None = None, **params: Any
) -> ChatRequest:
    return chat_request(MODEL, stream, max_tokens, messages, **params)


# -- answers ---------------------------------------------------------------------------------

ANSWERS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # (case, behaviour, request params, normalized finish, Gemini's finish)
    ("text", {"answer_tokens": 12}, {}, "stop", "STOP"),
    ("max tokens", {"answer_tokens": 500}, {}, "length", "MAX_TOKENS"),
    (
        "safety",
        {"faults": [{"kind": "content_filter", "after_chunks": 3}]},
        {},
        "content_filter",
        "SAFETY",
    ),
    ("prompt blocked", {"faults": [{"kind": "content_filter"}]}, {}, "content_filter", "SAFETY"),
    ("tool call", {}, {"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_calls", "STOP"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("behaviour", "params", "reason", "raw"), cases(ANSWERS))
async def test_answers_normalize(
    adapter: GeminiAdapter,
    fake: FakeServer,
    stream: bool,
    behaviour: dict[str, Any],
    params: dict[str, Any],
    reason: str,
    raw: str,
) -> None:
    await fake.control.set_model(MODEL, behaviour)
    chunks = await collect(adapter, request(stream, **params))
    assert finishes(chunks) == [Finish(reason, raw=raw)]  # type: ignore[arg-type]
    [usage] = usages(chunks)
    assert isinstance(chunks[-1], UsageReport)  # usage comes after the finish
    assert usage.input_tokens > 0
    words = len(text_of(chunks).split())
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    if reason == "stop":
        assert words == 12 and usage.output_tokens == 12
    elif reason == "length":
        assert words == 64 and usage.output_tokens == 64
    elif raw == "SAFETY" and behaviour["faults"][0].get("after_chunks"):
        assert words == (3 if stream else 0)  # a blocked whole answer carries no content
    elif reason == "content_filter":
        assert words == 0 and usage.output_tokens == 0
    else:
        [call] = calls
        assert call.index == 0 and call.name == "get_weather"
        assert call.id is not None and call.id.startswith("call_") and call.id.endswith("_0")
        assert set(msgspec.json.decode(call.arguments)) == {"city"}
        assert words == 0
    if reason != "tool_calls":
        assert calls == []


async def test_streamed_text_arrives_in_deltas(adapter: GeminiAdapter) -> None:
    chunks = await collect(adapter, request(True))
    assert sum(isinstance(c, TextDelta) for c in chunks) == 16


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_usage_counts_cached_and_thought_tokens(
    adapter: GeminiAdapter, fake: FakeServer, stream: bool
) -> None:
    await fake.control.set_model(
        MODEL, ModelBehaviour(answer_tokens=7, reasoning_tokens=20, cached_prompt_tokens=5)
    )
    thinking = {"includeThoughts": True, "thinkingBudget": 9}
    chunks = await collect(adapter, request(stream, thinking_config=thinking))
    [usage] = usages(chunks)
    # Thoughts are capped by the budget, count as output, and never show as text.
    assert usage.reasoning_tokens == 9
    assert usage.output_tokens == 7 + 9
    assert usage.cached_input_tokens == 5
    assert usage.input_tokens > 5
    assert len(text_of(chunks).split()) == 7
    assert "Weighing" not in text_of(chunks)
    body = await last_body(fake, MODEL)
    assert body["generationConfig"]["thinkingConfig"] == thinking


async def test_stream_and_whole_usage_agree(adapter: GeminiAdapter, fake: FakeServer) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(reasoning_tokens=3, cached_prompt_tokens=2))
    cases: list[dict[str, Any]] = [{}, {"tools": [WEATHER_TOOL], "tool_choice": "required"}]
    for params in cases:
        whole = await collect(adapter, request(False, **params))
        streamed = await collect(adapter, request(True, **params))
        assert usages(whole) == usages(streamed)
        assert text_of(whole) == text_of(streamed)
        assert finishes(whole) == finishes(streamed)


# -- errors ----------------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, StatusFault, ErrorClass, bool, float | None]] = [
    ("rate limit", StatusFault(status=429, retry_after_s=2), ErrorClass.RATE_LIMITED, False, 2.0),
    (
        "rate limit ms",
        StatusFault(status=429, retry_after_ms=20138),
        ErrorClass.RATE_LIMITED,
        False,
        20.138,
    ),
    ("rate limit default", StatusFault(status=429), ErrorClass.RATE_LIMITED, False, 1.0),
    ("daily quota", StatusFault(error="insufficient_quota"), ErrorClass.RATE_LIMITED, True, 1.0),
    (
        "long retry is quota",
        StatusFault(status=429, retry_after_s=3600),
        ErrorClass.RATE_LIMITED,
        True,
        3600.0,
    ),
    (
        "region",
        StatusFault(error="unsupported_country_region_territory"),
        ErrorClass.RATE_LIMITED,
        True,
        None,
    ),
    ("bad key", StatusFault(error="invalid_api_key"), ErrorClass.AUTH, False, None),
    ("401", StatusFault(status=401), ErrorClass.AUTH, False, None),
    ("403", StatusFault(status=403), ErrorClass.AUTH, False, None),
    (
        "overflow",
        StatusFault(error="context_length_exceeded"),
        ErrorClass.CONTEXT_OVERFLOW,
        False,
        None,
    ),
    ("400", StatusFault(status=400), ErrorClass.BAD_REQUEST, False, None),
    ("404", StatusFault(status=404), ErrorClass.NOT_FOUND, False, None),
    ("500", StatusFault(status=500), ErrorClass.SERVER_ERROR, False, None),
    ("502 html", StatusFault(status=502), ErrorClass.SERVER_ERROR, False, None),
    ("503", StatusFault(status=503), ErrorClass.OVERLOADED, False, None),
    ("503 retry info", StatusFault(status=503, retry_after_s=7), ErrorClass.OVERLOADED, False, 7.0),
    (
        "503 retry-after header",
        StatusFault(status=503, headers={"retry-after": "4"}),
        ErrorClass.OVERLOADED,
        False,
        4.0,
    ),
    ("504", StatusFault(status=504), ErrorClass.TIMEOUT, False, None),
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("fault", "expected", "quota", "retry_after"), cases(ERROR_CASES))
async def test_http_errors_are_classified(
    adapter: GeminiAdapter,
    fake: FakeServer,
    stream: bool,
    fault: StatusFault,
    expected: ErrorClass,
    quota: bool,
    retry_after: float | None,
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(stream))
    assert error.error_class is expected
    assert error.quota is quota
    assert error.retry_after_s == retry_after
    assert error.provider == "gemini"
    assert error.status is not None and error.status >= 400
    assert not error.after_response


async def test_context_window_overflow_is_classified(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(context_window=4))
    error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.CONTEXT_OVERFLOW
    assert error.provider_code == "INVALID_ARGUMENT"


async def test_wrong_key_is_auth_and_never_in_the_error(fake: FakeServer) -> None:
    wrong = "AIzaSyWRONGKEY0123456789abcdef"
    async with closing(GeminiAdapter("gemini", base_url=fake.base_url, api_key=wrong)) as adapter:
        error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert error.status == 400  # Gemini's bad key is a 400 with ErrorInfo API_KEY_INVALID
    for text in (str(error), error.message, repr(error), repr(adapter)):
        assert "WRONGKEY" not in text
        assert "0123456789" not in text


async def test_a_key_echoed_in_an_error_message_is_redacted(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    fault = StatusFault(status=400, message=f"API key {KEY} was reported as leaked.")
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(False))
    assert KEY not in error.message
    assert "[redacted]" in error.message


MID_STREAM: list[tuple[str, object, ErrorClass, str | None, int]] = [
    (
        "overloaded event",
        MidStreamErrorFault(after_chunks=2, error="overloaded"),
        ErrorClass.OVERLOADED,
        "UNAVAILABLE",
        2,
    ),
    (
        "rate limit event",
        MidStreamErrorFault(after_chunks=2, error="rate_limit_exceeded"),
        ErrorClass.RATE_LIMITED,
        "RESOURCE_EXHAUSTED",
        2,
    ),
    ("internal event", MidStreamErrorFault(after_chunks=2), ErrorClass.SERVER_ERROR, "INTERNAL", 2),
    ("drop", DropFault(after_chunks=2), ErrorClass.SERVER_ERROR, None, 2),
    ("truncated", NoDoneFault(), ErrorClass.SERVER_ERROR, "stream_truncated", 16),
    ("malformed", MalformedSSEFault(after_chunks=2), ErrorClass.SERVER_ERROR, "malformed_sse", 2),
]


@pytest.mark.parametrize(("fault", "expected", "code", "deltas"), cases(MID_STREAM))
async def test_failures_after_the_headers_are_classified(
    adapter: GeminiAdapter,
    fake: FakeServer,
    fault: Any,
    expected: ErrorClass,
    code: str | None,
    deltas: int,
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    error, received = await failure_after(adapter, request(True))
    assert error.error_class is expected
    assert error.after_response
    assert error.provider_code == code
    # What arrived before the failure was delivered first.
    assert sum(isinstance(c, TextDelta) for c in received) == deltas
    assert finishes(received) == []


async def test_content_filter_fault_is_not_an_error(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    await fake.control.set_model(
        MODEL, ModelBehaviour(faults=(ContentFilterFault(after_chunks=1),))
    )
    chunks = await collect(adapter, request(True))
    assert [f.reason for f in finishes(chunks)] == ["content_filter"]


# -- the request on the wire -----------------------------------------------------------------


async def test_the_key_travels_in_a_header_never_the_url(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    for stream in (False, True):
        call = adapter._prepare(request(stream))
        assert KEY not in str(call.url)
        assert "key" not in call.url.query
        await collect(adapter, request(stream))
    assert str(adapter._prepare(request(False)).url).endswith(
        f"/v1beta/models/{MODEL}:generateContent"
    )
    assert adapter._prepare(request(True)).url.query == {"alt": "sse"}
    logged = await fake.control.requests(MODEL)
    assert [entry.outcome for entry in logged] == ["ok", "ok"]  # the fake accepted the header


async def test_api_version_v1(fake: FakeServer) -> None:
    v1 = GeminiAdapter("gemini", base_url=fake.base_url, api_key=KEY, api_version="v1")
    async with closing(v1) as adapter:
        chunks = await collect(adapter, request(True))
    assert finishes(chunks) == [Finish("stop", raw="STOP")]
    assert "/v1/models/" in str(adapter._prepare(request(True)).url)


def test_model_resource_names() -> None:
    adapter = GeminiAdapter("gemini", base_url="http://gemini.test/", api_key=KEY)
    urls = {
        model: str(adapter._prepare(chat_request(model, False, max_tokens=1)).url)
        for model in ("gemini-x", "models/gemini-x", "tunedModels/mine")
    }
    assert urls == {
        "gemini-x": "http://gemini.test/v1beta/models/gemini-x:generateContent",
        "models/gemini-x": "http://gemini.test/v1beta/models/gemini-x:generateContent",
        "tunedModels/mine": "http://gemini.test/v1beta/tunedModels/mine:generateContent",
    }


def test_retry_hint_falls_back_to_headers_then_the_message() -> None:
    adapter = GeminiAdapter("gemini", base_url="http://gemini.test", api_key=KEY)
    body = msgspec.json.encode(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "Please retry in 12.5s.",
            }
        }
    )
    assert adapter._status_error(429, {}, body).retry_after_s == 12.5
    assert adapter._status_error(429, {"retry-after": "3"}, body).retry_after_s == 3.0
    with_info = msgspec.json.encode(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "Please retry in 12.5s.",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}
                ],
            }
        }
    )
    assert adapter._status_error(429, {"retry-after": "3"}, with_info).retry_after_s == 34.0
    # A proxy's one-element list and a non-JSON page are read too.
    listed = adapter._status_error(429, {}, b"[" + with_info + b"]")
    assert listed.error_class is ErrorClass.RATE_LIMITED and listed.retry_after_s == 34.0
    page = adapter._status_error(502, {}, b"<html>Bad Gateway</html>")
    assert page.error_class is ErrorClass.SERVER_ERROR
    assert page.message == "<html>Bad Gateway</html>"


def test_api_version_is_checked() -> None:
    with pytest.raises(ValueError, match="not a Gemini API version"):
        GeminiAdapter("gemini", base_url="http://x", api_version="v1beta/../admin")


async def test_conversation_translation_reaches_the_wire(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    image = ImagePart(image_url=ImageURL(url=f"data:image/png;base64,{PNG}"))
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content=[TextPart(text="What is this?"), image]),
        Message(role="user", content="And the weather in Paris?"),
        Message(
            role="assistant",
            content="Checking.",
            tool_calls=[
                ToolCall(id="call_a", function=ToolCallFunction("get_weather", '{"city":"Paris"}')),
                ToolCall(id="call_b", function=ToolCallFunction("get_time", "{}")),
            ],
        ),
        Message(role="tool", tool_call_id="call_a", content='{"temp_c": 18}'),
        Message(role="tool", tool_call_id="call_b", content="noon"),
        Message(role="developer", content="Answer in French."),
    ]
    params = {
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
        # OpenAI-only fields the adapter must drop: Gemini would 400 on them.
        "parallel_tool_calls": False,
        "user": "u-1",
        "stream_options": {"include_usage": True},
        "logit_bias": {"1": 2},
    }
    await collect(adapter, request(False, max_tokens=33, messages=messages, **params))
    body = await last_body(fake, MODEL)
    assert body["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]
    }
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"text": "And the weather in Paris?"},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["generationConfig"] == {
        "maxOutputTokens": 33,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    assert set(body) == {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}


async def test_max_output_tokens_is_always_sent(adapter: GeminiAdapter, fake: FakeServer) -> None:
    await collect(adapter, request(True, max_tokens=5))
    assert (await last_body(fake, MODEL))["generationConfig"] == {"maxOutputTokens": 5}


async def test_generated_tool_call_ids_map_back_to_function_names(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    """A second turn that answers the call by its generated id reaches Gemini as a
    functionResponse naming the function (the fake checks the pairing)."""
    first = await collect(adapter, request(False, tools=[WEATHER_TOOL], tool_choice="required"))
    [call] = [c for c in first if isinstance(c, ToolCallDelta)]
    assert call.id is not None and call.name is not None
    history = [
        *MESSAGES,
        Message(
            role="assistant",
            tool_calls=[ToolCall(id=call.id, function=ToolCallFunction(call.name, call.arguments))],
        ),
        Message(role="tool", tool_call_id=call.id, content="sunny"),
    ]
    second = await collect(adapter, request(False, messages=history, tools=[WEATHER_TOOL]))
    assert finishes(second) == [Finish("stop", raw="STOP")]
    contents = (await last_body(fake, MODEL))["contents"]
    assert contents[-1] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}],
    }


async def test_reasoning_effort_maps_to_a_thinking_level(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    await collect(adapter, request(False, reasoning_effort="low"))
    assert (await last_body(fake, MODEL))["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "LOW"
    }
    await collect(adapter, request(False, reasoning_effort="none"))
    assert "thinkingConfig" not in (await last_body(fake, MODEL))["generationConfig"]


async def test_untranslatable_request_fails_before_sending(
    adapter: GeminiAdapter, fake: FakeServer
) -> None:
    orphan = [*MESSAGES, Message(role="tool", tool_call_id="call_nowhere", content="x")]
    error = await failure(adapter, request(False, messages=orphan))
    assert error.error_class is ErrorClass.BAD_REQUEST
    assert error.status is None
    assert await fake.control.requests(MODEL) == []
