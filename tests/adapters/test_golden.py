"""Golden transcripts from the shared reference (provider protocols §2 and §5), served byte for
byte by a real HTTP server and read by the adapters. (Anthropic's and Gemini's are in their own
stream tests.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from adapter_helpers import collect, failure
from aiohttp import web

from adapters import (
    ChatRequest,
    ErrorClass,
    Finish,
    Message,
    OpenAIAdapter,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
    XAIAdapter,
)

# §2.4: a streamed tool call with usage, from the OpenAI SDK's recorded snapshot.
OPENAI_TOOL_STREAM = b"""\
data: {"id":"chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr","object":"chat.completion.chunk","created":1727346176,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_c91SqDXlYFuETYv8mUHzz6pp","type":"function","function":{"name":"GetWeatherArgs","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr","object":"chat.completion.chunk","created":1727346176,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":\\"Edinburgh\\"}"}}]},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr","object":"chat.completion.chunk","created":1727346176,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr","object":"chat.completion.chunk","created":1727346176,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7568d46099","choices":[],"usage":{"prompt_tokens":76,"completion_tokens":24,"total_tokens":100,"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"""  # noqa: E501
# §2.3: a non-streamed answer.
OPENAI_WHOLE = b"""{"id":"chatcmpl-abc123","object":"chat.completion","created":1760000000,"model":"gpt-4o-2024-08-06",
 "system_fingerprint":"fp_7568d46099","service_tier":"default",
 "choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,"annotations":[]},
             "logprobs":null,"finish_reason":"stop"}],
 "usage":{"prompt_tokens":14,"completion_tokens":3,"total_tokens":17,
          "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
          "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,
                                       "accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"""  # noqa: E501
# §5.3: a real xAI capture; completion_tokens leave out the 250 reasoning tokens.
XAI_WHOLE = b"""{"id":"eae95cea-0e45-a31b-af52-ab2f32db7d56","object":"chat.completion","created":1762581623,"model":"grok-4-0709",
 "choices":[{"index":0,"message":{"role":"assistant","content":"hi  \\nhello world","refusal":null},"finish_reason":"stop"}],
 "usage":{"prompt_tokens":703,"completion_tokens":4,"total_tokens":957,
   "prompt_tokens_details":{"text_tokens":703,"audio_tokens":0,"image_tokens":0,"cached_tokens":679},
   "completion_tokens_details":{"reasoning_tokens":250,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},
   "num_sources_used":0},
 "system_fingerprint":"fp_794271b43e"}"""  # noqa: E501
# §5.4: xAI's flat mid-stream error event.
XAI_STREAM_ERROR = (
    b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":"Hel"}}]}\n\n'
    b'data: {"code":"The service is currently unavailable","error":"Service temporarily '
    b'unavailable. The model did not respond to this request."}\n\n'
)

Replay = Callable[[bytes, str], AbstractAsyncContextManager[str]]


@pytest.fixture
def replay() -> Replay:
    """A real HTTP server answering every chat completion with ``body``; yields its base URL."""

    @asynccontextmanager
    async def serve(body: bytes, content_type: str) -> AsyncIterator[str]:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            await runner.cleanup()

    return serve


def request(stream: bool) -> ChatRequest:
    return ChatRequest(
        model="m", messages=[Message(role="user", content="hi")], max_tokens=50, stream=stream
    )


async def test_openai_streamed_tool_call(replay: Replay) -> None:
    async with replay(OPENAI_TOOL_STREAM, "text/event-stream") as url:
        adapter = OpenAIAdapter("openai", base_url=url, api_key="k")
        chunks = await collect(adapter, request(True))
        await adapter.aclose()
    assert chunks == [
        ToolCallDelta(index=0, id="call_c91SqDXlYFuETYv8mUHzz6pp", name="GetWeatherArgs"),
        ToolCallDelta(index=0, arguments='{"city":"Edinburgh"}'),
        Finish("tool_calls", raw="tool_calls"),
        UsageReport(Usage(input_tokens=76, output_tokens=24)),
    ]


async def test_openai_whole_answer(replay: Replay) -> None:
    async with replay(OPENAI_WHOLE, "application/json") as url:
        adapter = OpenAIAdapter("openai", base_url=url, api_key="k")
        chunks = await collect(adapter, request(False))
        await adapter.aclose()
    assert chunks == [
        TextDelta("Hello!"),
        Finish("stop", raw="stop"),
        UsageReport(Usage(input_tokens=14, output_tokens=3)),
    ]


async def test_xai_capture_counts_reasoning_as_output(replay: Replay) -> None:
    async with replay(XAI_WHOLE, "application/json") as url:
        adapter = XAIAdapter("xai", base_url=url, api_key="k")
        chunks = await collect(adapter, request(False))
        await adapter.aclose()
    assert chunks == [
        TextDelta("hi  \nhello world"),
        Finish("stop", raw="stop"),
        UsageReport(
            Usage(
                input_tokens=703, cached_input_tokens=679, output_tokens=254, reasoning_tokens=250
            )
        ),
    ]


async def test_xai_flat_mid_stream_error(replay: Replay) -> None:
    async with replay(XAI_STREAM_ERROR, "text/event-stream") as url:
        adapter = XAIAdapter("xai", base_url=url, api_key="k")
        error = await failure(adapter, request(True))
        await adapter.aclose()
    assert error.error_class is ErrorClass.OVERLOADED
    assert error.after_response
    assert "did not respond" in error.message
