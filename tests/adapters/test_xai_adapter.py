"""The xAI adapter against the fake xAI server: xAI's usage convention, its flat errors and the
statuses it reuses (a bad key is a 400, credits a 403), normalized like every provider's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from adapter_helpers import (
    TOOLS,
    cases,
    chat_request,
    closing,
    collect,
    failure,
    failure_after,
    finishes,
    last_body,
    serve_app,
    text_of,
    usages,
)
from aiohttp import web

from adapters import (
    ChatRequest,
    ErrorClass,
    Finish,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from adapters._xai import XAIAdapter, classify_xai_error
from adapters.fakes import (
    DropFault,
    FakeOpenAISettings,
    FakeServer,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    serve_fake_xai,
)

KEY = "xai-test-0123456789abcdefSECRET"

GRPC_INVALID = "Client specified an invalid argument"
GRPC_DENIED = "The caller does not have permission to execute the specified operation"
GRPC_EXHAUSTED = "Some resource has been exhausted"
GRPC_UNAVAILABLE = "The service is currently unavailable"


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_xai(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeServer) -> AsyncIterator[XAIAdapter]:
    built = XAIAdapter("xai", base_url=fake.base_url, api_key=KEY, api_version="ignored")
    async with closing(built) as adapter:
        yield adapter


def request(stream: bool, max_tokens: int = 64, **params: Any) -> ChatRequest:
    return chat_request("grok-4", stream, max_tokens, **params)


@pytest.mark.parametrize("stream", [False, True])
async def test_text_answer_with_reasoning_and_cached_usage_normalized(
    adapter: XAIAdapter, fake: FakeServer, stream: bool
) -> None:
    await fake.control.set_model(
        "grok-4", ModelBehaviour(answer_tokens=12, reasoning_tokens=5, cached_prompt_tokens=4)
    )
    chunks = await collect(adapter, request(stream))
    assert len(text_of(chunks).split()) == 12
    assert finishes(chunks) == [Finish("stop", raw="stop")]
    [usage] = usages(chunks)
    # xAI's completion_tokens (12) leaves reasoning out; the normalized output puts it in.
    assert usage.output_tokens == 12 + 5
    assert usage.reasoning_tokens == 5
    assert usage.cached_input_tokens == 4
    assert usage.input_tokens > 4
    assert isinstance(chunks[-1], UsageReport)


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call(adapter: XAIAdapter, stream: bool) -> None:
    chunks = await collect(adapter, request(stream, tools=TOOLS, tool_choice="required"))
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].id is not None
    assert calls[0].name == "get_weather"
    assert all(c.id is None and c.name is None for c in calls[1:])
    assert set(msgspec.json.decode("".join(c.arguments for c in calls))) == {"city"}
    assert finishes(chunks)[0].reason == "tool_calls"


async def test_request_fields_reach_the_wire_as_given(
    adapter: XAIAdapter, fake: FakeServer
) -> None:
    await collect(
        adapter, request(True, reasoning_effort="low", stop=["END"], presence_penalty=0.5)
    )
    body = await last_body(fake, "grok-4")
    assert body["reasoning_effort"] == "low"
    # Rejected by xAI's reasoning models, but which model takes what is not the adapter's call.
    assert body["stop"] == ["END"]
    assert body["presence_penalty"] == 0.5
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}


class Case(msgspec.Struct, frozen=True):
    id: str
    fault: StatusFault
    status: int
    error_class: ErrorClass
    quota: bool = False
    # The flat body's gRPC text, where the body is JSON.
    code: str | None = None


ERROR_CASES = [
    Case("rate", StatusFault(status=429, retry_after_s=2), 429, ErrorClass.RATE_LIMITED),
    Case(
        "capacity-429",
        StatusFault(status=429, message="The service is temporarily at capacity. Retry shortly."),
        429,
        ErrorClass.RATE_LIMITED,
        code=GRPC_EXHAUSTED,
    ),
    Case(
        "credits-403",
        StatusFault(error="insufficient_quota"),
        403,
        ErrorClass.RATE_LIMITED,
        quota=True,
        code=GRPC_DENIED,
    ),
    Case(
        "credits-429",
        StatusFault(status=429, error="insufficient_quota"),
        429,
        ErrorClass.RATE_LIMITED,
        quota=True,
        code=GRPC_EXHAUSTED,
    ),
    Case(
        "content-policy",
        StatusFault(status=403, message="Content violates usage guidelines."),
        403,
        ErrorClass.CONTENT_FILTERED,
        code=GRPC_DENIED,
    ),
    Case("forbidden", StatusFault(status=403), 403, ErrorClass.AUTH, code=GRPC_DENIED),
    Case("bad-key", StatusFault(error="invalid_api_key"), 400, ErrorClass.AUTH, code=GRPC_INVALID),
    Case("unauthenticated", StatusFault(status=401), 401, ErrorClass.AUTH),
    Case(
        "overflow",
        StatusFault(error="context_length_exceeded"),
        400,
        ErrorClass.CONTEXT_OVERFLOW,
        code=GRPC_INVALID,
    ),
    Case("bad-request", StatusFault(status=400), 400, ErrorClass.BAD_REQUEST, code=GRPC_INVALID),
    Case("unsupported-type", StatusFault(status=415), 415, ErrorClass.BAD_REQUEST),
    Case("unprocessable", StatusFault(status=422), 422, ErrorClass.BAD_REQUEST),
    Case("too-large", StatusFault(error="request_too_large"), 413, ErrorClass.BAD_REQUEST),
    Case("retired", StatusFault(error="model_not_found"), 404, ErrorClass.NOT_FOUND),
    Case("internal", StatusFault(status=500), 500, ErrorClass.SERVER_ERROR, code="Internal error"),
    Case(
        "capacity-503", StatusFault(status=503), 503, ErrorClass.OVERLOADED, code=GRPC_UNAVAILABLE
    ),
    Case(
        "grammar",
        StatusFault(status=503, message="Grammar is too complex."),
        503,
        ErrorClass.BAD_REQUEST,
        code=GRPC_UNAVAILABLE,
    ),
    Case("deadline", StatusFault(status=504), 504, ErrorClass.TIMEOUT),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.id for case in ERROR_CASES])
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors_are_classified(
    adapter: XAIAdapter, fake: FakeServer, case: Case, stream: bool
) -> None:
    await fake.control.set_model("grok-4", ModelBehaviour(faults=(case.fault,)))
    error = await failure(adapter, request(stream))
    assert error.error_class is case.error_class
    assert error.quota is case.quota
    assert error.provider == "xai"
    assert error.status == case.status
    assert not error.after_response
    if case.code is not None:
        assert error.provider_code == case.code
    if case.fault.message is not None:
        assert error.message == case.fault.message
    if case.fault.retry_after_s is not None:
        assert error.retry_after_s == case.fault.retry_after_s


async def test_overflow_from_the_context_window(adapter: XAIAdapter, fake: FakeServer) -> None:
    await fake.control.set_model("grok-4", ModelBehaviour(context_window=5))
    error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.CONTEXT_OVERFLOW
    assert error.status == 400
    assert "maximum prompt length is 5 but the request contains" in error.message


async def test_retry_after_ms(adapter: XAIAdapter, fake: FakeServer) -> None:
    fault = StatusFault(status=429, retry_after_s=5, retry_after_ms=1500)
    await fake.control.set_model("grok-4", ModelBehaviour(faults=(fault,)))
    assert (await failure(adapter, request(True))).retry_after_s == 1.5


async def test_wrong_key_is_auth_though_xai_says_400_and_the_key_never_shows(
    fake: FakeServer,
) -> None:
    wrong = "xai-live-WRONGKEY0123456789abcdef"
    async with closing(XAIAdapter("xai", base_url=fake.base_url, api_key=wrong)) as adapter:
        error = await failure(adapter, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert error.status == 400
    assert error.provider_code == GRPC_INVALID
    assert error.message.startswith("Incorrect API key provided: xa***ef.")
    for text in (str(error), error.message, repr(error), repr(adapter)):
        assert "WRONGKEY" not in text
        assert "0123456789" not in text


async def test_a_percent_encoded_message_is_decoded(adapter: XAIAdapter, fake: FakeServer) -> None:
    encoded = "Incorrect%20API%20key%20provided:%20ba***na."
    fault = StatusFault(status=400, message=encoded)
    await fake.control.set_model("grok-4", ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(False))
    assert error.message == "Incorrect API key provided: ba***na."
    assert error.error_class is ErrorClass.AUTH


MID_STREAM: list[tuple[str, object, ErrorClass, str | None]] = [
    (
        "unavailable",
        MidStreamErrorFault(after_chunks=2, error="overloaded"),
        ErrorClass.OVERLOADED,
        GRPC_UNAVAILABLE,
    ),
    (
        "internal",
        MidStreamErrorFault(after_chunks=2),
        ErrorClass.SERVER_ERROR,
        "Internal error",
    ),
    (
        "exhausted",
        MidStreamErrorFault(after_chunks=2, error="rate_limit_exceeded"),
        ErrorClass.RATE_LIMITED,
        GRPC_EXHAUSTED,
    ),
    (
        "content",
        MidStreamErrorFault(
            after_chunks=2, error="invalid_request_error", message="Rejected by content moderation"
        ),
        ErrorClass.CONTENT_FILTERED,
        GRPC_INVALID,
    ),
    ("drop", DropFault(after_chunks=2), ErrorClass.SERVER_ERROR, None),
    ("truncated", NoDoneFault(), ErrorClass.SERVER_ERROR, "stream_truncated"),
    ("malformed", MalformedSSEFault(after_chunks=2), ErrorClass.SERVER_ERROR, "malformed_sse"),
]


@pytest.mark.parametrize(("fault", "expected", "code"), cases(MID_STREAM))
async def test_failures_after_the_headers_are_classified(
    adapter: XAIAdapter,
    fake: FakeServer,
    fault: Any,
    expected: ErrorClass,
    code: str | None,
) -> None:
    await fake.control.set_model("grok-4", ModelBehaviour(faults=(fault,)))
    error, received = await failure_after(adapter, request(True))
    assert error.error_class is expected
    assert error.after_response
    assert error.status is None
    assert error.provider_code == code
    if not isinstance(fault, NoDoneFault):
        assert sum(isinstance(c, TextDelta) for c in received) == 2


# A stream as litellm #17136 saw it: usage on the finish chunk, then a chunk with empty choices
# and no usage. Served by a scripted server, since the fake sends usage last.
_EARLY_USAGE = (
    b'data: {"id":"u","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n'
    b'data: {"id":"u","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":14,'
    b'"completion_tokens_details":{"reasoning_tokens":4}}}\n\n'
    b'data: {"id":"u","choices":[],"usage":null}\n\n'
    b"data: [DONE]\n\n"
)


async def test_the_last_non_null_usage_wins() -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_EARLY_USAGE)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with (
        serve_app(app) as url,
        closing(XAIAdapter("xai", base_url=url + "/v1", api_key=KEY)) as adapter,
    ):
        chunks = await collect(adapter, request(True))
    assert text_of(chunks) == "Hi"
    assert usages(chunks) == [Usage(input_tokens=9, output_tokens=1 + 4, reasoning_tokens=4)]


@pytest.mark.parametrize(
    ("status", "code", "message", "expected", "quota"),
    [
        (400, GRPC_INVALID, "Incorrect API key provided: xa***yz.", ErrorClass.AUTH, False),
        (
            400,
            GRPC_INVALID,
            "This model's maximum prompt length is 131072 but the request contains 179111 tokens.",
            ErrorClass.CONTEXT_OVERFLOW,
            False,
        ),
        (400, GRPC_INVALID, "Invalid request content.", ErrorClass.BAD_REQUEST, False),
        (415, None, "", ErrorClass.BAD_REQUEST, False),
        (422, None, "Failed to deserialize the JSON body", ErrorClass.BAD_REQUEST, False),
        (401, None, "", ErrorClass.AUTH, False),
        (
            403,
            GRPC_DENIED,
            "Your team t has either used all available credits or reached its monthly "
            "spending limit.",
            ErrorClass.RATE_LIMITED,
            True,
        ),
        (
            403,
            GRPC_DENIED,
            "Content violates usage guidelines.",
            ErrorClass.CONTENT_FILTERED,
            False,
        ),
        (403, GRPC_DENIED, "Your team is blocked.", ErrorClass.AUTH, False),
        (404, None, "The model grok-beta was deprecated", ErrorClass.NOT_FOUND, False),
        (429, GRPC_EXHAUSTED, "Too many requests", ErrorClass.RATE_LIMITED, False),
        (429, GRPC_EXHAUSTED, "...used all available credits...", ErrorClass.RATE_LIMITED, True),
        (
            429,
            GRPC_EXHAUSTED,
            "The service is temporarily at capacity. Please retry your request shortly.",
            ErrorClass.RATE_LIMITED,
            False,
        ),
        (500, "Internal error", "Internal error", ErrorClass.SERVER_ERROR, False),
        (502, None, "", ErrorClass.SERVER_ERROR, False),
        (503, GRPC_UNAVAILABLE, "The model is at capacity", ErrorClass.OVERLOADED, False),
        (503, GRPC_UNAVAILABLE, "Grammar is too complex.", ErrorClass.BAD_REQUEST, False),
        (504, None, "", ErrorClass.TIMEOUT, False),
        # Mid-stream: no status, the gRPC code (text or number) stands in for it.
        (None, GRPC_UNAVAILABLE, "The model did not respond.", ErrorClass.OVERLOADED, False),
        (None, GRPC_EXHAUSTED, "slow down", ErrorClass.RATE_LIMITED, False),
        (None, "Internal error", "boom", ErrorClass.SERVER_ERROR, False),
        (None, "14", "unavailable", ErrorClass.OVERLOADED, False),
        (None, "8", "exhausted", ErrorClass.RATE_LIMITED, False),
        (None, "503", "unavailable", ErrorClass.OVERLOADED, False),
        (None, "4", "deadline", ErrorClass.TIMEOUT, False),
        (None, None, "something odd", ErrorClass.SERVER_ERROR, False),
        (None, GRPC_INVALID, "Grammar is too complex.", ErrorClass.BAD_REQUEST, False),
    ],
)
def test_classification_table(
    status: int | None, code: str | None, message: str, expected: ErrorClass, quota: bool
) -> None:
    assert classify_xai_error(status, code, message) == (expected, quota)
