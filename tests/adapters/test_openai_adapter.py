"""The OpenAI adapter against the fake OpenAI server: normalized chunks, usage and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

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
    usages,
)

from adapters import (
    ChatRequest,
    ErrorClass,
    Finish,
    Message,
    OpenAIAdapter,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
    UsageReport,
    classify_openai_error,
    parse_retry_after,
    parse_wait_in_message,
)
from adapters.fakes import (
    DropFault,
    FakeOpenAISettings,
    FakeServer,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    serve_fake_openai,
)

KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_openai(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeServer) -> AsyncIterator[OpenAIAdapter]:
    async with closing(OpenAIAdapter("openai", base_url=fake.base_url, api_key=KEY)) as adapter:
        yield adapter


def request(stream: bool, max_tokens: int = 64, **params: Any) -> ChatRequest:
    return chat_request("m-1", stream, max_tokens, **params)


@pytest.mark.parametrize("stream", [False, True])
async def test_text_answer_normalizes_to_deltas_finish_and_usage(
    adapter: OpenAIAdapter, fake: FakeServer, stream: bool
) -> None:
    await fake.control.set_model(
        "m-1", ModelBehaviour(answer_tokens=12, reasoning_tokens=5, cached_prompt_tokens=4)
    )
    chunks = await collect(adapter, request(stream))
    assert len(text_of(chunks).split()) == 12
    assert finishes(chunks) == [Finish("stop", raw="stop")]
    usage = usages(chunks)
    assert len(usage) == 1
    assert usage[0].output_tokens == 12 + 5  # OpenAI counts reasoning inside completion tokens
    assert usage[0].reasoning_tokens == 5
    assert usage[0].cached_input_tokens == 4
    assert usage[0].input_tokens > 4
    assert isinstance(chunks[-1], UsageReport)  # usage comes after the finish


async def test_streamed_and_whole_answers_agree(adapter: OpenAIAdapter) -> None:
    whole = await collect(adapter, request(False))
    streamed = await collect(adapter, request(True))
    assert text_of(whole) == text_of(streamed)
    assert reports(whole) == reports(streamed)
    assert sum(isinstance(c, TextDelta) for c in streamed) > 1


async def test_max_tokens_is_sent_and_length_finish_is_normalized(
    adapter: OpenAIAdapter, fake: FakeServer
) -> None:
    await fake.control.set_model("m-1", ModelBehaviour(answer_tokens=50))
    chunks = await collect(adapter, request(True, max_tokens=7))
    assert len(text_of(chunks).split()) == 7
    assert finishes(chunks) == [Finish("length", raw="length")]
    logged = await fake.control.requests("m-1")
    assert logged[-1].stream


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_as_deltas_that_assemble(
    adapter: OpenAIAdapter, stream: bool
) -> None:
    chunks = await collect(adapter, request(stream, tools=TOOLS, tool_choice="required"))
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].id is not None and calls[0].id.startswith("call_")
    assert calls[0].name == "get_weather"
    assert all(c.id is None and c.name is None for c in calls[1:])
    arguments = msgspec.json.decode("".join(c.arguments for c in calls))
    assert set(arguments) == {"city"}
    assert finishes(chunks)[0].reason == "tool_calls"


async def test_content_filter_finish(adapter: OpenAIAdapter, fake: FakeServer) -> None:
    await fake.control.set_model("m-1", {"faults": [{"kind": "content_filter", "after_chunks": 2}]})
    chunks = await collect(adapter, request(True))
    assert finishes(chunks)[0].reason == "content_filter"


ERROR_CASES: list[tuple[StatusFault, ErrorClass, bool]] = [
    (
        StatusFault(status=429, error="rate_limit_exceeded", retry_after_s=2),
        ErrorClass.RATE_LIMITED,
        False,
    ),
    (StatusFault(status=429, error="insufficient_quota"), ErrorClass.RATE_LIMITED, True),
    (StatusFault(error="context_length_exceeded"), ErrorClass.CONTEXT_OVERFLOW, False),
    (StatusFault(status=400), ErrorClass.BAD_REQUEST, False),
    (StatusFault(error="request_too_large"), ErrorClass.BAD_REQUEST, False),
    (StatusFault(error="unsupported_country_region_territory"), ErrorClass.AUTH, False),
    (StatusFault(error="model_not_found"), ErrorClass.NOT_FOUND, False),
    (StatusFault(status=500), ErrorClass.SERVER_ERROR, False),
    (StatusFault(error="bad_gateway"), ErrorClass.SERVER_ERROR, False),
    (StatusFault(status=503), ErrorClass.OVERLOADED, False),
    (StatusFault(error="gateway_timeout"), ErrorClass.TIMEOUT, False),
]


@pytest.mark.parametrize(("fault", "expected", "quota"), ERROR_CASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_are_classified(
    adapter: OpenAIAdapter,
    fake: FakeServer,
    fault: StatusFault,
    expected: ErrorClass,
    quota: bool,
    stream: bool,
) -> None:
    await fake.control.set_model("m-1", ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(stream))
    assert error.error_class is expected
    assert error.quota is quota
    assert error.provider == "openai"
    assert error.status is not None and error.status >= 400
    assert not error.after_response
    if fault.retry_after_s is not None:
        assert error.retry_after_s == fault.retry_after_s


async def test_retry_after_ms_wins_over_retry_after(
    adapter: OpenAIAdapter, fake: FakeServer
) -> None:
    fault = StatusFault(status=429, retry_after_s=5, retry_after_ms=1500)
    await fake.control.set_model("m-1", ModelBehaviour(faults=(fault,)))
    assert (await failure(adapter, request(False))).retry_after_s == 1.5


async def test_wrong_key_is_auth_and_the_key_is_never_in_the_error(
    fake: FakeServer,
) -> None:
    wrong = "sk-live-WRONGKEY0123456789abcdef"
    async with closing(OpenAIAdapter("openai", base_url=fake.base_url, api_key=wrong)) as adapter:
        error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert error.status == 401
    for text in (str(error), error.message, repr(error), repr(adapter)):
        assert "WRONGKEY" not in text
        assert "0123456789" not in text


MID_STREAM: list[tuple[object, ErrorClass, str | None]] = [
    (MidStreamErrorFault(after_chunks=2), ErrorClass.SERVER_ERROR, None),
    (
        MidStreamErrorFault(after_chunks=2, error="rate_limit_exceeded"),
        ErrorClass.RATE_LIMITED,
        "rate_limit_exceeded",
    ),
    (DropFault(after_chunks=2), ErrorClass.SERVER_ERROR, None),
    (NoDoneFault(), ErrorClass.SERVER_ERROR, "stream_truncated"),
    (MalformedSSEFault(after_chunks=2), ErrorClass.SERVER_ERROR, "malformed_sse"),
]


@pytest.mark.parametrize(("fault", "expected", "code"), MID_STREAM)
async def test_failures_after_the_headers_are_classified(
    adapter: OpenAIAdapter,
    fake: FakeServer,
    fault: Any,
    expected: ErrorClass,
    code: str | None,
) -> None:
    await fake.control.set_model("m-1", ModelBehaviour(faults=(fault,)))
    error, received = await failure_after(adapter, request(True))
    assert error.error_class is expected
    assert error.after_response
    assert error.provider_code == code
    if not isinstance(fault, NoDoneFault):
        assert sum(isinstance(c, TextDelta) for c in received) == 2


async def test_passthrough_params_and_forced_fields_reach_the_wire(
    adapter: OpenAIAdapter, fake: FakeServer
) -> None:
    options = {"include_obfuscation": False}
    await collect(adapter, request(True, temperature=0.3, stream_options=options))
    body = await last_body(fake, "m-1")
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 64
    # include_usage is forced on: without it a stream's cost would be unknown.
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert "Authorization" not in (await fake.control.requests("m-1"))[-1].headers


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "context_length_exceeded", "", ErrorClass.CONTEXT_OVERFLOW),
        (
            400,
            None,
            "This model's maximum context length is 128000 tokens.",
            ErrorClass.CONTEXT_OVERFLOW,
        ),
        (401, "invalid_api_key", "", ErrorClass.AUTH),
        (429, "insufficient_quota", "", ErrorClass.RATE_LIMITED),
        (400, "invalid_prompt", "", ErrorClass.CONTENT_FILTERED),
        (408, None, "", ErrorClass.TIMEOUT),
        (409, None, "", ErrorClass.SERVER_ERROR),
        (422, None, "", ErrorClass.BAD_REQUEST),
        (None, None, "The engine is currently overloaded", ErrorClass.OVERLOADED),
        (None, "rate_limit_exceeded", "", ErrorClass.RATE_LIMITED),
        (None, None, "boom", ErrorClass.SERVER_ERROR),
    ],
)
def test_classification_table(
    status: int | None, code: str | None, message: str, expected: ErrorClass
) -> None:
    assert classify_openai_error(status, None, code, message)[0] is expected


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=now.timestamp()) == 30.0
    assert parse_wait_in_message("Please try again in 2s.") == 2.0
    assert parse_wait_in_message("Please retry in 34.2s") == 34.2
    assert parse_wait_in_message("try again in 120ms") == 0.12
    assert parse_wait_in_message("no hint here") is None


def test_usage_struct_defaults_are_zero() -> None:
    assert Usage() == Usage(0, 0, 0, 0, 0)


async def test_anthropic_cache_control_is_not_sent_to_openai(
    adapter: OpenAIAdapter, fake: FakeServer
) -> None:
    marked = Message(
        role="user",
        content=[TextPart(text="A long, reused preamble.", cache_control={"type": "ephemeral"})],
    )
    req = ChatRequest(model="m-1", messages=[marked], max_tokens=16, stream=False)
    await collect(adapter, req)
    body = await last_body(fake, "m-1")
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "A long, reused preamble."}]}
    ]
