"""The fake Anthropic server's raw wire: SSE framing, headers, validation and the faults a parser
must survive. A plain aiohttp client shows the bytes as sent (the SDK hides pings, for one)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from adapters.fakes import FakeOpenAISettings, FakeServer, serve_fake_anthropic

KEY = "sk-ant-api03-wire-test-key-0123456789"
MODEL = "claude-fake-1"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Tell me a story."}],
}
STREAM: dict[str, Any] = {**BODY, "stream": True}
LEGACY = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MODERN = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2026-10-21"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_anthropic(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    fake: FakeServer,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, CIMultiDict[str]]:
    async with http.post(
        fake.url + "/v1/messages", json=body, headers=LEGACY if headers is None else headers
    ) as resp:
        # Case-insensitive, as HTTP headers are (aiohttp sends Retry-After capitalized).
        return resp.status, await resp.read(), CIMultiDict(resp.headers)


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event, asserting Anthropic's framing on the way."""
    assert body.endswith(b"\n\n")
    out = []
    for raw in body[:-2].split(b"\n\n"):
        event_line, data_line = raw.split(b"\n")
        assert event_line.startswith(b"event: ")
        assert data_line.startswith(b"data: ")
        name = event_line[len(b"event: ") :].decode()
        data = json.loads(data_line[len(b"data: ") :])
        assert data["type"] == name  # every event's data names its own type
        out.append((name, data))
    return out


async def set_model(fake: FakeServer, **fields: Any) -> None:
    await fake.control.set_model(MODEL, fields)


async def test_stream_framing_is_exact(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    status, body, headers = await post(http, fake, STREAM)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["request-id"].startswith("req_")
    parsed = events(body)
    names = [name for name, _ in parsed]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("message_stop") == 1
    start = parsed[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    deltas = [d["delta"]["text"] for n, d in parsed if n == "content_block_delta"]
    assert len(deltas) == 16
    message_delta = parsed[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    # Cumulative: the final output count, with the input counts repeated.
    assert message_delta["usage"]["output_tokens"] == 16
    assert message_delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]


async def test_tool_use_stream_has_an_empty_first_input_delta(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    tool = {
        "name": "lookup",
        "input_schema": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    }
    body = {**STREAM, "tools": [tool], "tool_choice": {"type": "tool", "name": "lookup"}}
    status, raw, _ = await post(http, fake, body)
    assert status == 200
    parsed = events(raw)
    block = next(d["content_block"] for n, d in parsed if n == "content_block_start")
    assert block["type"] == "tool_use" and block["input"] == {}
    pieces = [d["delta"] for n, d in parsed if n == "content_block_delta"]
    assert all(p["type"] == "input_json_delta" for p in pieces)
    assert pieces[0]["partial_json"] == ""
    assert set(json.loads("".join(p["partial_json"] for p in pieces))) == {"q"}


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "x-api-key header is required"),
        ({**LEGACY, "x-api-key": "sk-ant-wrong"}, 401, "invalid x-api-key"),
        # x-api-key wins when both are present.
        ({**MODERN, "x-api-key": "sk-ant-wrong"}, 401, "invalid x-api-key"),
        ({"x-api-key": KEY}, 400, "anthropic-version: header is required"),
        ({**LEGACY, "anthropic-version": "2024-01-01"}, 400, "anthropic-version"),
        (LEGACY, 200, None),
        (MODERN, 200, None),
        ({"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}, 200, None),
    ],
)
async def test_auth_and_version_headers(
    http: aiohttp.ClientSession,
    fake: FakeServer,
    headers: dict[str, str],
    status: int,
    message: str | None,
) -> None:
    got, body, response_headers = await post(http, fake, BODY, headers)
    assert got == status
    if message is not None:
        error = json.loads(body)
        assert error["type"] == "error"
        assert error["error"]["message"].startswith(message)
        assert error["request_id"] == response_headers["request-id"]
        expected_type = "authentication_error" if status == 401 else "invalid_request_error"
        assert error["error"]["type"] == expected_type


@pytest.mark.parametrize(
    ("patch", "version", "message"),
    [
        ({"max_tokens": None}, "2023-06-01", "max_tokens: Field required"),
        ({"temperature": 1.0}, "2026-10-21", "temperature: Extra inputs are not permitted"),
        ({"top_p": 0.5}, "2026-10-21", "top_p: Extra inputs are not permitted"),
        ({"top_k": 5}, "2026-10-21", "top_k: Extra inputs are not permitted"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 512}, "max_tokens": 4096},
            "2023-06-01",
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
            "2023-06-01",
            "`max_tokens` must be greater than `thinking.budget_tokens`.",
        ),
        ({"messages": []}, "2023-06-01", "messages: at least one message is required"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
            "2023-06-01",
            "messages.0.content.0: text content blocks must be non-empty",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
                        ],
                    },
                    {"role": "user", "content": "No result?"},
                ]
            },
            "2023-06-01",
            "messages.2: `tool_use` ids were found without `tool_result` blocks",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}
                        ],
                    }
                ]
            },
            "2023-06-01",
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks",
        ),
        (
            {"tool_choice": {"type": "any"}},
            "2023-06-01",
            "tool_choice may only be specified while providing tools.",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/bmp",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            },
            "2023-06-01",
            "messages.0.content.0.source.base64.media_type",
        ),
    ],
)
async def test_invalid_requests_get_anthropics_400(
    http: aiohttp.ClientSession,
    fake: FakeServer,
    patch: dict[str, Any],
    version: str,
    message: str,
) -> None:
    body = {**BODY, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"x-api-key": KEY, "anthropic-version": version}
    status, raw, _ = await post(http, fake, body, headers)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)
    assert (await fake.control.stats()).models[MODEL].outcomes == {"http_400": 1}


async def test_sampling_params_are_fine_on_the_old_version(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    status, _, _ = await post(http, fake, {**BODY, "temperature": 0.7, "top_k": 3})
    assert status == 200


async def test_context_window_overflow_message(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await set_model(fake, context_window=5)
    status, raw, _ = await post(http, fake, BODY)
    assert status == 400
    # 3 + 4 + ceil(16 / 4) = 11 tokens by the shared rule.
    assert json.loads(raw)["error"]["message"] == "prompt is too long: 11 tokens > 5 maximum"


async def test_rate_limit_headers(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await set_model(
        fake,
        faults=[{"kind": "status", "status": 429, "retry_after_s": 2, "retry_after_ms": 1500,
                 "should_retry": False}],
    )  # fmt: skip
    status, raw, headers = await post(http, fake, BODY)
    assert status == 429
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-should-retry"] == "false"
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"


async def test_overload_status(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await set_model(fake, faults=[{"kind": "status", "status": 529}])
    status, raw, headers = await post(http, fake, BODY)
    assert status == 529
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": headers["request-id"],
    }


async def test_mid_stream_error_event(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await set_model(
        fake, faults=[{"kind": "mid_stream_error", "after_chunks": 2, "error": "overloaded"}]
    )
    status, raw, headers = await post(http, fake, STREAM)
    assert status == 200
    parsed = events(raw)
    assert sum(name == "content_block_delta" for name, _ in parsed) == 2
    name, data = parsed[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": headers["request-id"],
    }


async def test_no_done_fault_omits_message_stop(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await set_model(fake, faults=[{"kind": "no_done"}])
    _, raw, _ = await post(http, fake, STREAM)
    names = [name for name, _ in events(raw)]
    assert names[-1] == "message_delta"
    assert "message_stop" not in names


async def test_malformed_sse_line_is_an_event_and_the_stream_goes_on(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await set_model(fake, faults=[{"kind": "malformed_sse", "after_chunks": 1}])
    _, raw, _ = await post(http, fake, STREAM)
    bad = [e for e in raw.split(b"\n\n") if b"oops" in e]
    assert len(bad) == 1
    assert bad[0].startswith(b"event: content_block_delta\ndata: ")
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_drop_cuts_the_stream(http: aiohttp.ClientSession, fake: FakeServer) -> None:
    await set_model(fake, faults=[{"kind": "drop", "after_chunks": 3}])
    received = bytearray()
    async with http.post(fake.url + "/v1/messages", json=STREAM, headers=LEGACY) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"event: content_block_delta") == 3
    assert b"message_stop" not in received


async def test_hang_before_headers_holds_the_request(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await set_model(fake, faults=[{"kind": "hang_before_headers", "times": 1}])
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            fake.url + "/v1/messages",
            json=BODY,
            headers=LEGACY,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    status, _, _ = await post(http, fake, BODY)
    assert status == 200  # the fault fired once


async def test_requests_are_counted_and_logged_without_the_key(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    await post(http, fake, BODY)
    await post(http, fake, STREAM, MODERN)
    await post(http, fake, {**BODY, "model": "claude-other"})
    stats = await fake.control.stats()
    assert stats.requests == 3
    assert stats.models[MODEL].requests == 2
    assert stats.models["claude-other"].requests == 1
    logged = await fake.control.requests(MODEL)
    assert [entry.stream for entry in logged] == [False, True]
    for entry in logged:
        assert KEY not in repr(entry)
        assert entry.outcome == "ok"
    assert logged[0].body_json() == BODY


async def test_unknown_model_is_not_found() -> None:
    settings = FakeOpenAISettings(api_key=KEY, models=("claude-a",))
    async with serve_fake_anthropic(settings) as fake, aiohttp.ClientSession() as http:
        status, raw, _ = await post(http, fake, BODY)
    assert status == 404
    assert json.loads(raw)["error"] == {"type": "not_found_error", "message": f"model: {MODEL}"}


async def test_stop_sequence_in_the_raw_answer(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    _, raw, _ = await post(http, fake, BODY)
    text = json.loads(raw)["content"][0]["text"]
    stop = text.split()[3]
    _, raw, _ = await post(http, fake, {**BODY, "stop_sequences": ["NEVER", stop]})
    message = json.loads(raw)
    assert message["stop_reason"] == "stop_sequence"
    assert message["stop_sequence"] == stop
    assert message["content"][0]["text"] == text[: text.index(stop)]
