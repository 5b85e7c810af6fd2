"""The fake OpenAI server's raw wire: SSE framing, headers, and the faults a parser must survive.

These use a plain aiohttp client, which (unlike the SDK) shows the bytes as sent.
"""

import asyncio
import json
import time
from typing import Any

import aiohttp
import msgspec
import pytest

from adapters.fakes import FakeServer

BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Tell me a story."}],
}
STREAM: dict[str, Any] = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


def chat_url(fake: FakeServer) -> str:
    return fake.base_url + "/chat/completions"


def events(body: bytes) -> list[bytes]:
    """The SSE events' payloads, asserting the data-only framing on the way."""
    assert body.endswith(b"\n\n")
    out = []
    for event in body[:-2].split(b"\n\n"):
        assert event.startswith(b"data: "), event
        assert b"\n" not in event, event  # one data line per event, no event:/id: lines
        out.append(event[len(b"data: ") :])
    return out


async def post(http: aiohttp.ClientSession, fake: FakeServer, body: Any) -> tuple[int, bytes]:
    async with http.post(chat_url(fake), json=body) as resp:
        return resp.status, await resp.read()


async def read_into(resp: aiohttp.ClientResponse, received: bytearray) -> None:
    """Read the body as it arrives, keeping what came before a failure."""
    async for data in resp.content.iter_any():
        received += data


async def test_sse_framing_is_exact(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    async with http.post(chat_url(fake), json=STREAM) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        request_id = resp.headers["x-request-id"]
        body = await resp.read()

    payloads = events(body)
    assert payloads[-1] == b"[DONE]"
    assert payloads.count(b"[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "gpt-4o", "chat.completion.chunk")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 16
    # With include_usage every other chunk says "usage": null.
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])

    async with http.post(chat_url(fake), json=STREAM) as again:
        assert again.headers["x-request-id"] != request_id
        await again.read()


async def test_without_include_usage_chunks_omit_usage(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    status, body = await post(http, fake, {**BODY, "stream": True})
    assert status == 200
    payloads = events(body)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_chunks_setting_groups_tokens(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model("gpt-4o", {"answer_tokens": 10, "chunks": 4})
    _, body = await post(http, fake, STREAM)
    chunks = [json.loads(p) for p in events(body)[:-1]]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    content = [t for t in texts[1:] if t]  # after the role chunk's ""
    assert [len(t.split()) for t in content] == [3, 3, 2, 2]
    assert chunks[-1]["usage"]["completion_tokens"] == 10


async def test_drop_cuts_the_stream_without_terminator(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "drop", "after_chunks": 2}]})
    received = bytearray()
    async with http.post(chat_url(fake), json=STREAM) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(resp, received)
    payloads = events(bytes(received))
    assert len(payloads) == 3  # the role chunk and two answer chunks
    assert b"[DONE]" not in received
    assert b'finish_reason":"stop' not in received


async def test_drop_before_anything_is_sent(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "drop"}]})
    received = bytearray()
    async with http.post(chat_url(fake), json=STREAM) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(resp, received)
    assert received == b""


async def test_drop_cuts_a_non_streaming_body(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "drop"}]})
    async with http.post(chat_url(fake), json=BODY) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_no_done_ends_cleanly_without_terminator(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "no_done"}]})
    status, body = await post(http, fake, STREAM)
    assert status == 200
    payloads = events(body)
    assert b"[DONE]" not in payloads
    last = json.loads(payloads[-1])
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 16


async def test_no_done_does_not_touch_non_streaming(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "no_done", "times": 1}]})
    status, _ = await post(http, fake, BODY)
    assert status == 200
    # The fault is still armed for the next stream: non-streaming requests do not consume it.
    _, body = await post(http, fake, STREAM)
    assert b"[DONE]" not in body
    _, body = await post(http, fake, STREAM)
    assert body.endswith(b"data: [DONE]\n\n")


async def test_malformed_sse_line_then_the_stream_goes_on(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "malformed_sse", "after_chunks": 1, "line": "data: {oops"}]}
    )
    status, body = await post(http, fake, STREAM)
    assert status == 200
    payloads = events(body)
    assert payloads[2] == b"{oops"  # after the role chunk and one answer chunk
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:2] + payloads[3:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 16


async def test_mid_stream_error_event(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o",
        {"faults": [{"kind": "mid_stream_error", "after_chunks": 1, "error": "overloaded"}]},
    )
    status, body = await post(http, fake, STREAM)
    assert status == 200
    payloads = events(body)
    assert len(payloads) == 3
    assert json.loads(payloads[-1]) == {
        "error": {
            "message": "The engine is currently overloaded, please try again later.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def test_hang_before_headers(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "hang_before_headers", "times": 1}]}
    )
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            chat_url(fake), json=BODY, timeout=aiohttp.ClientTimeout(total=0.3)
        ) as resp:
            await resp.read()
    status, _ = await post(http, fake, BODY)
    assert status == 200
    stats = await fake.control.stats()
    assert stats.models["gpt-4o"].outcomes == {"hang_before_headers": 1, "ok": 1}


async def test_hang_before_first_token(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "hang_before_first_token"}]})
    async with http.post(chat_url(fake), json=STREAM) as resp:
        assert resp.status == 200  # the headers arrive...
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await resp.content.readany()  # ...the first event never does


async def test_delays_hold_back_the_answer(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o",
        {"answer_tokens": 3, "header_delay_s": 0.05, "ttft_s": 0.05, "chunk_delay_s": 0.05},
    )
    started = time.monotonic()
    async with http.post(chat_url(fake), json=STREAM) as resp:
        headers_at = time.monotonic() - started
        first = await resp.content.readuntil(b"\n\n")
        first_at = time.monotonic() - started
        rest = await resp.read()
        done_at = time.monotonic() - started
    # Lower bounds only: a delay is a floor, never a promise about the upper end.
    assert headers_at >= 0.05
    assert first_at >= 0.10
    assert done_at >= 0.20
    assert b'"role":"assistant"' in first
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_status_fault_headers(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model(
        "gpt-4o",
        {
            "faults": [
                {
                    "kind": "status",
                    "status": 429,
                    "retry_after_ms": 1500,
                    "should_retry": False,
                    "headers": {"x-ratelimit-remaining-tokens": "0"},
                }
            ]
        },
    )
    async with http.post(chat_url(fake), json=BODY) as resp:
        assert resp.status == 429
        assert resp.headers["retry-after-ms"] == "1500"
        assert "retry-after" not in resp.headers
        assert resp.headers["x-should-retry"] == "false"
        assert resp.headers["x-ratelimit-reset-requests"] == "1.5s"
        assert resp.headers["x-ratelimit-remaining-tokens"] == "0"
        assert resp.headers["x-request-id"].startswith("req_")
        body = await resp.json()
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_request_too_large_is_not_json(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await fake.control.set_model("gpt-4o", {"faults": [{"kind": "status", "status": 413}]})
    async with http.post(chat_url(fake), json=BODY) as resp:
        assert resp.status == 413
        assert resp.content_type == "text/html"
        assert "413 Request Entity Too Large" in await resp.text()


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, None),
        (b'{"model": "gpt-4o"}', "messages", "missing_required_parameter"),
        (b'{"model": "gpt-4o", "messages": []}', "messages", "empty_array"),
        (b'{"model": "gpt-4o", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n", None),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            b'"tools": [{"type": "function", "function": {"name": "noop"}}], '
            b'"tool_choice": {"type": "function", "function": {"name": "missing"}}}',
            "tool_choice",
            "invalid_value",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], '
            b'"max_completion_tokens": 0}',
            "max_completion_tokens",
            "integer_below_min_value",
        ),
    ],
)
async def test_invalid_requests_get_400(
    http: aiohttp.ClientSession,
    fake: FakeServer,
    body: bytes,
    param: str | None,
    code: str | None,
) -> None:
    # Armed faults are not consumed by a request that is rejected first.
    await fake.control.set_model(
        "gpt-4o", {"faults": [{"kind": "status", "status": 500, "times": 1}]}
    )
    async with http.post(
        chat_url(fake), data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    status, _ = await post(http, fake, BODY)
    assert status == 500


async def test_missing_key_is_401_without_code(fake: FakeServer) -> None:
    async with aiohttp.ClientSession() as anonymous:
        status, body = await post(anonymous, fake, BODY)
    assert status == 401
    error = msgspec.json.decode(body)["error"]
    assert error["code"] is None
    assert error["message"].startswith("You didn't provide an API key.")


async def test_non_streaming_body_shape(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    status, body = await post(http, fake, BODY)
    assert status == 200
    completion = json.loads(body)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": completion["choices"][0]["message"]["content"],
        "refusal": None,
        "annotations": [],
    }
    assert completion["choices"][0]["logprobs"] is None
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
