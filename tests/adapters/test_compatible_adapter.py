"""The adapter for self-hosted OpenAI-compatible servers: against the OpenAI fake (it is one),
and against a small scripted server in the manner of vLLM, llama.cpp and Ollama: streams
without usage or ids, and error bodies of every shape they use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from adapter_helpers import (
    cases,
    chat_request,
    closing,
    collect,
    failure,
    failure_after,
    finishes,
    last_body,
    reports,
    serve_app,
    text_of,
)
from aiohttp import web

from adapters import (
    ChatRequest,
    ErrorClass,
    Finish,
    TextDelta,
    Usage,
    UsageReport,
)
from adapters._compatible import OpenAICompatibleAdapter, classify_compatible_error
from adapters.fakes import (
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    StatusFault,
    serve_fake_openai,
)


def request(stream: bool, max_tokens: int = 64, **params: Any) -> ChatRequest:
    return chat_request("llama-3", stream, max_tokens, **params)


# -- against the OpenAI fake ----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_openai() as server:
        yield server


@pytest.fixture
async def adapter(fake: FakeServer) -> AsyncIterator[OpenAICompatibleAdapter]:
    built = OpenAICompatibleAdapter("local", base_url=fake.base_url, api_version="ignored")
    async with closing(built) as adapter:
        yield adapter


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_with_max_tokens_in_the_max_tokens_field(
    adapter: OpenAICompatibleAdapter, fake: FakeServer, stream: bool
) -> None:
    await fake.control.set_model("llama-3", ModelBehaviour(answer_tokens=30, reasoning_tokens=2))
    chunks = await collect(adapter, request(stream, max_tokens=9))
    assert len(text_of(chunks).split()) == 9 - 2
    assert finishes(chunks) == [Finish("length", raw="length")]
    [report] = reports(chunks)
    assert report.usage.output_tokens == 9  # OpenAI's convention: reasoning included
    body = await last_body(fake, "llama-3")
    assert body["max_tokens"] == 9
    assert "max_completion_tokens" not in body
    if stream:
        # Still asked for: without it no server reports a stream's usage.
        assert body["stream_options"] == {"include_usage": True}


async def test_the_max_tokens_field_is_configurable(fake: FakeServer) -> None:
    adapter = OpenAICompatibleAdapter(
        "local", base_url=fake.base_url, max_tokens_field="max_completion_tokens"
    )
    async with closing(adapter):
        await collect(adapter, request(False, max_tokens=7))
    body = await last_body(fake, "llama-3")
    assert body["max_completion_tokens"] == 7
    assert "max_tokens" not in body


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (StatusFault(status=429, retry_after_s=1), ErrorClass.RATE_LIMITED),
        (StatusFault(error="context_length_exceeded"), ErrorClass.CONTEXT_OVERFLOW),
        (StatusFault(error="model_not_found"), ErrorClass.NOT_FOUND),
        (StatusFault(status=503), ErrorClass.OVERLOADED),
        (StatusFault(error="request_too_large"), ErrorClass.BAD_REQUEST),
    ],
)
async def test_openai_shaped_errors(
    adapter: OpenAICompatibleAdapter,
    fake: FakeServer,
    fault: StatusFault,
    expected: ErrorClass,
) -> None:
    await fake.control.set_model("llama-3", ModelBehaviour(faults=(fault,)))
    error = await failure(adapter, request(True))
    assert error.error_class is expected
    assert error.provider == "local"
    assert not error.after_response


async def test_a_key_is_sent_when_configured() -> None:
    key = "sk-local-0123456789abcdef"
    async with (
        serve_fake_openai(FakeOpenAISettings(api_key=key)) as fake,
        closing(OpenAICompatibleAdapter("local", base_url=fake.base_url, api_key=key)) as keyed,
        closing(OpenAICompatibleAdapter("local", base_url=fake.base_url)) as keyless,
    ):
        assert text_of(await collect(keyed, request(False)))
        error = await failure(keyless, request(False))
    assert error.error_class is ErrorClass.AUTH
    assert "didn't provide an API key" in error.message


# -- against a scripted server, in the manner of self-hosted ones -----------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


@dataclass
class Scripted:
    """Answers each POST with the next scripted reply; keeps what it received."""

    base_url: str = ""
    replies: list[Reply] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.bodies.append(msgspec.json.decode(await request.read()))
        reply = self.replies.pop(0)
        if reply.content_type != "text/event-stream":
            return web.Response(
                status=reply.status, body=reply.body, content_type=reply.content_type
            )
        # Streamed event by event, as a server generating tokens does.
        resp = web.StreamResponse(status=reply.status)
        resp.content_type = reply.content_type
        await resp.prepare(request)
        for event in reply.body.split(b"\n\n")[:-1]:
            await resp.write(event + b"\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", scripted.handle)
    async with serve_app(app) as url:
        scripted.base_url = url + "/v1"
        yield scripted


@pytest.fixture
async def local(server: Scripted) -> AsyncIterator[OpenAICompatibleAdapter]:
    async with closing(OpenAICompatibleAdapter("local", base_url=server.base_url)) as adapter:
        yield adapter


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)


# vLLM-style chunks, trimmed further: no id, model or object, no usage even though asked for.
STREAM_WITHOUT_USAGE = (
    sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": None}]},
        {
            "choices": [
                {"index": 0, "delta": {"content": ""}, "finish_reason": "stop", "stop_reason": None}
            ]
        },
    )
    + b"data: [DONE]\n\n"
)


async def test_a_stream_without_usage_or_ids(
    server: Scripted, local: OpenAICompatibleAdapter
) -> None:
    server.replies.append(Reply(body=STREAM_WITHOUT_USAGE, content_type="text/event-stream"))
    chunks = await collect(local, request(True))
    assert text_of(chunks) == "Hello there"
    assert finishes(chunks) == [Finish("stop", raw="stop")]
    assert reports(chunks) == []
    assert server.bodies[-1]["max_tokens"] == 64
    assert server.bodies[-1]["stream_options"] == {"include_usage": True}


async def test_a_whole_answer_without_usage(
    server: Scripted, local: OpenAICompatibleAdapter
) -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]}
    server.replies.append(Reply(body=msgspec.json.encode(answer)))
    chunks = await collect(local, request(False))
    assert chunks == [TextDelta("Hi"), Finish("other", raw="")]


async def test_usage_on_the_last_content_chunk_is_reported(
    server: Scripted, local: OpenAICompatibleAdapter
) -> None:
    # llama.cpp's way: usage rides on the finish chunk, with choices still present.
    usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    body = (
        sse(
            {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
        )
        + b"data: [DONE]\n\n"
    )
    server.replies.append(Reply(body=body, content_type="text/event-stream"))
    chunks = await collect(local, request(True))
    assert chunks[-1] == UsageReport(Usage(input_tokens=11, output_tokens=2))


async def test_no_authorization_header_without_a_key(
    server: Scripted, local: OpenAICompatibleAdapter
) -> None:
    server.replies.append(Reply(body=STREAM_WITHOUT_USAGE, content_type="text/event-stream"))
    await collect(local, request(True))
    assert "Authorization" not in server.headers[-1]

    keyed = OpenAICompatibleAdapter("local", base_url=server.base_url, api_key="local-key")
    server.replies.append(Reply(body=STREAM_WITHOUT_USAGE, content_type="text/event-stream"))
    async with closing(keyed):
        await collect(keyed, request(True))
    assert server.headers[-1]["Authorization"] == "Bearer local-key"


VLLM_OVERFLOW = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4936 in the messages, 64 in the completion). Please reduce the length of the messages "
    "or completion."
)
LLAMA_CPP_OVERFLOW = (
    "the request exceeds the available context size. try increasing the context size or "
    "enable context shift"
)

ERROR_BODIES: list[tuple[str, Reply, ErrorClass, str]] = [
    (
        "old-server-rejects-stream-options",
        Reply(400, b'{"detail": "stream_options: Extra inputs are not permitted"}'),
        ErrorClass.BAD_REQUEST,
        "stream_options: Extra inputs are not permitted",
    ),
    (
        "fastapi-validation",
        Reply(
            422,
            b'{"detail": [{"loc": ["body", "messages", 0, "role"], "msg": "Field required",'
            b' "type": "missing"}]}',
        ),
        ErrorClass.BAD_REQUEST,
        "body.messages.0.role: Field required",
    ),
    (
        "ollama-string-error",
        Reply(404, b'{"error": "model \'llama-3\' not found, try pulling it first"}'),
        ErrorClass.NOT_FOUND,
        "model 'llama-3' not found, try pulling it first",
    ),
    (
        "vllm-top-level-error",
        Reply(
            400,
            msgspec.json.encode(
                {
                    "object": "error",
                    "message": VLLM_OVERFLOW,
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            ),
        ),
        ErrorClass.CONTEXT_OVERFLOW,
        VLLM_OVERFLOW,
    ),
    (
        "llama-cpp-overflow-as-500",
        Reply(
            500,
            msgspec.json.encode(
                {
                    "error": {
                        "code": 500,
                        "message": LLAMA_CPP_OVERFLOW,
                        "type": "exceed_context_size_error",
                        "n_prompt_tokens": 1407,
                        "n_ctx": 256,
                    }
                }
            ),
        ),
        ErrorClass.CONTEXT_OVERFLOW,
        LLAMA_CPP_OVERFLOW,
    ),
    (
        "detail-auth",
        Reply(401, b'{"detail": "Invalid API key"}'),
        ErrorClass.AUTH,
        "Invalid API key",
    ),
    (
        "nested-rate-limit",
        Reply(429, b'{"error": {"message": "Too many requests"}}'),
        ErrorClass.RATE_LIMITED,
        "Too many requests",
    ),
    (
        "plain-text-unavailable",
        Reply(503, b"Service Unavailable", "text/plain"),
        ErrorClass.OVERLOADED,
        "Service Unavailable",
    ),
    (
        "detail-internal",
        Reply(500, b'{"detail": "Internal Server Error"}'),
        ErrorClass.SERVER_ERROR,
        "Internal Server Error",
    ),
    (
        "html-gateway-timeout",
        Reply(504, b"<html><body>504 Gateway Time-out</body></html>", "text/html"),
        ErrorClass.TIMEOUT,
        "<html><body>504 Gateway Time-out</body></html>",
    ),
    ("empty-bad-gateway", Reply(502, b"", "text/plain"), ErrorClass.SERVER_ERROR, "HTTP 502"),
]


@pytest.mark.parametrize(("reply", "expected", "message"), cases(ERROR_BODIES))
async def test_error_bodies_of_every_shape(
    server: Scripted,
    local: OpenAICompatibleAdapter,
    reply: Reply,
    expected: ErrorClass,
    message: str,
) -> None:
    server.replies.append(reply)
    error = await failure(local, request(True))
    assert error.error_class is expected
    assert error.status == reply.status
    assert error.message == message
    assert not error.after_response


@pytest.mark.parametrize(
    ("code", "expected"),
    [(500, ErrorClass.SERVER_ERROR), (503, ErrorClass.OVERLOADED), (400, ErrorClass.BAD_REQUEST)],
)
async def test_mid_stream_error_uses_its_numeric_code(
    server: Scripted, local: OpenAICompatibleAdapter, code: int, expected: ErrorClass
) -> None:
    error_event = {
        "error": {"object": "error", "message": "engine died", "type": "X", "code": code}
    }
    body = sse({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, error_event)
    server.replies.append(Reply(body=body + b"data: [DONE]\n\n", content_type="text/event-stream"))
    error, received = await failure_after(local, request(True))
    assert received == [TextDelta("Hi")]
    assert error.error_class is expected
    assert error.after_response
    assert error.status is None
    assert error.message == "engine died"


async def test_a_stream_without_done_is_truncated(
    server: Scripted, local: OpenAICompatibleAdapter
) -> None:
    body = STREAM_WITHOUT_USAGE.removesuffix(b"data: [DONE]\n\n")
    server.replies.append(Reply(body=body, content_type="text/event-stream"))
    error = await failure(local, request(True))
    assert error.error_class is ErrorClass.SERVER_ERROR
    assert error.provider_code == "stream_truncated"


@pytest.mark.parametrize(
    ("status", "error_type", "code", "message", "expected"),
    [
        (500, "exceed_context_size_error", "500", "", ErrorClass.CONTEXT_OVERFLOW),
        (
            400,
            None,
            None,
            "Requested tokens (2285) exceed context window of 2048",
            ErrorClass.CONTEXT_OVERFLOW,
        ),
        (
            422,
            None,
            None,
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: "
            "4000 `inputs` tokens and 200 `max_new_tokens`",
            ErrorClass.CONTEXT_OVERFLOW,
        ),
        (400, None, None, "maximum context length is 4096 tokens", ErrorClass.CONTEXT_OVERFLOW),
        (403, None, None, "", ErrorClass.AUTH),
        (408, None, None, "", ErrorClass.TIMEOUT),
        (413, None, None, "", ErrorClass.BAD_REQUEST),
        (None, "X", "429", "", ErrorClass.RATE_LIMITED),
        (None, None, None, "boom", ErrorClass.SERVER_ERROR),
    ],
)
def test_classification_table(
    status: int | None,
    error_type: str | None,
    code: str | None,
    message: str,
    expected: ErrorClass,
) -> None:
    assert classify_compatible_error(status, error_type, code, message) == (expected, False)
