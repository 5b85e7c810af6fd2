"""The sidecar end to end: real fake provider, real sidecar, real Unix socket, real clients."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import msgspec
import openai
import pytest
from e2e_helpers import SidecarFactory, kinds, only, request_events

from adapters.fakes import (
    FakeOpenAIServer,
    MidStreamErrorFault,
    ModelBehaviour,
    StatusFault,
)
from events import (
    AttemptFailed,
    AttemptStarted,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RouteDecided,
    TaskUnrouted,
)
from sidecar._service import Sidecar

MESSAGES: list[Any] = [{"role": "user", "content": "Say something deterministic."}]
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def raw_post(
    sidecar: Sidecar, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tollgate/v1/chat/completions",
            # A stream, so that aiohttp doesn't warn about megabytes of bytes in one write.
            data=io.BytesIO(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response,
    ):
        payload = msgspec.json.decode(await response.read())
        return response.status, payload, dict(response.headers)


def good_body(**extra: Any) -> bytes:
    return msgspec.json.encode({"model": "task:chat", "messages": MESSAGES, **extra})


async def test_non_streaming_with_the_openai_client(
    client: openai.AsyncOpenAI, direct: openai.AsyncOpenAI
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="task:chat", messages=MESSAGES
    )
    completion = raw.parse()
    assert raw.headers["x-tollgate-model"] == "alpha"
    assert raw.headers["x-tollgate-provider"] == "primary"
    assert raw.headers["x-tollgate-route"] == "chat"
    assert UUID7.match(raw.headers["x-tollgate-request-id"])
    # The sidecar is transparent: the same answer and usage as a direct call to the provider.
    baseline = await direct.chat.completions.create(
        model="alpha-1", messages=MESSAGES, max_completion_tokens=64
    )
    assert completion.choices[0].message.content == baseline.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "alpha"
    assert completion.usage is not None and baseline.usage is not None
    assert completion.usage.prompt_tokens == baseline.usage.prompt_tokens
    assert completion.usage.completion_tokens == baseline.usage.completion_tokens


async def test_streaming_with_the_openai_client(
    client: openai.AsyncOpenAI, direct: openai.AsyncOpenAI
) -> None:
    async with client.chat.completions.with_streaming_response.create(
        model="task:chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-tollgate-model"] == "alpha"
        assert response.headers["x-tollgate-provider"] == "primary"
        chunks = [chunk async for chunk in await response.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    baseline = await direct.chat.completions.create(
        model="alpha-1", messages=MESSAGES, max_completion_tokens=64
    )
    assert text == baseline.choices[0].message.content
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    # The usage chunk comes last, with no choices, as OpenAI sends it.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and baseline.usage is not None
    assert chunks[-1].usage.completion_tokens == baseline.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


async def test_tools_and_response_format_reach_the_provider(
    client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    tool = {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    await client.chat.completions.create(
        model="task:chat",
        messages=MESSAGES,
        tools=[tool],  # type: ignore[list-item]
        tool_choice="auto",
        response_format=schema,  # type: ignore[arg-type]
        temperature=0.25,
    )
    sent = (await fake.control.requests("alpha-1"))[-1].body_json()
    assert sent["tools"] == [tool]
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"] == schema
    assert sent["temperature"] == 0.25


async def test_stream_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(model="task:chat", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_one_request_logs_its_events_in_order(
    client: openai.AsyncOpenAI, sidecar: Sidecar
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto",
        messages=MESSAGES,
        extra_headers={"x-tollgate-tenant": "acme", "x-tollgate-task": "chat"},
    )
    request_id = raw.headers["x-tollgate-request-id"]
    events = await request_events(sidecar, request_id)
    # Each attempt's cost is settled, finally, before the terminal event.
    assert kinds(events) == [
        "RequestReceived",
        "RouteDecided",
        "AttemptStarted",
        "AttemptSucceeded",
        "CostSettled",
        "RequestCompleted",
    ]
    seqs = [s.seq for s in events]
    assert seqs == sorted(seqs)
    for stored in events:
        event = stored.event
        assert (event.request_id, event.tenant, event.task) == (request_id, "acme", "chat")
        assert event.config_hash == sidecar.config_hash
    stamps = [s.event.ts_ns for s in events]
    assert stamps == sorted(stamps)
    received = events[0].event
    assert isinstance(received, RequestReceived)
    assert received.prompt is None  # content is not logged unless the operator opts in
    assert received.prompt_chars == len(MESSAGES[0]["content"])
    done = events[-1].event
    assert isinstance(done, RequestCompleted)
    assert (done.model, done.provider, done.attempts, done.fallbacks) == ("alpha", "primary", 1, 0)
    assert done.usage.output_tokens > 0
    assert done.ttft_ns is not None and 0 < done.ttft_ns <= done.ttlt_ns <= done.latency_ns


async def test_unknown_and_missing_tasks_take_the_default_route(
    client: openai.AsyncOpenAI, sidecar: Sidecar
) -> None:
    for task_headers, requested in (({"x-tollgate-task": "mystery"}, "mystery"), ({}, "")):
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, extra_headers=task_headers
        )
        events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
        assert kinds(events)[:3] == ["RequestReceived", "TaskUnrouted", "RouteDecided"]
        unrouted = only(events, TaskUnrouted)[0]
        assert isinstance(unrouted, TaskUnrouted)
        assert (unrouted.requested_task, unrouted.default_route) == (requested, "chat")
        decided = only(events, RouteDecided)[0]
        assert isinstance(decided, RouteDecided)
        assert decided.selector == "default"


async def test_overload_is_retried_then_falls_back_to_the_next_candidate(
    client: openai.AsyncOpenAI, sidecar: Sidecar, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=503),)))
    raw = await client.chat.completions.with_raw_response.create(
        model="task:chat", messages=MESSAGES
    )
    assert raw.headers["x-tollgate-model"] == "beta"
    assert raw.headers["x-tollgate-provider"] == "backup"
    events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
    # overloaded: two retries of the same model (the policy's default), then the next one.
    # Each attempt's cost is settled as the next one starts, the last before the end.
    assert kinds(events) == [
        "RequestReceived",
        "RouteDecided",
        "AttemptStarted",
        "AttemptFailed",
        "RetryScheduled",
        "CostSettled",
        "AttemptStarted",
        "AttemptFailed",
        "RetryScheduled",
        "CostSettled",
        "AttemptStarted",
        "AttemptFailed",
        "FallbackTaken",
        "CostSettled",
        "AttemptStarted",
        "AttemptSucceeded",
        "CostSettled",
        "RequestCompleted",
    ]
    failed = only(events, AttemptFailed)
    assert {(f.error_class, f.status, f.mid_stream) for f in failed} == {  # type: ignore[attr-defined]
        ("overloaded", 503, False)
    }
    fallback = only(events, FallbackTaken)[0]
    assert isinstance(fallback, FallbackTaken)
    assert (fallback.from_model, fallback.to_model) == ("alpha", "beta")
    last = only(events, AttemptStarted)[-1]
    assert isinstance(last, AttemptStarted)
    assert (last.attempt, last.upstream_model) == (4, "beta-1")
    done = events[-1].event
    assert isinstance(done, RequestCompleted)
    assert (done.attempts, done.fallbacks) == (4, 1)
    assert (await fake.control.stats()).models["alpha-1"].requests == 3


async def test_bad_request_from_the_provider_is_not_retried_elsewhere(
    client: openai.AsyncOpenAI, sidecar: Sidecar, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=400),)))
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="task:chat", messages=MESSAGES)
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("invalid_request", "upstream_bad_request")
    stats = await fake.control.stats()
    assert "beta-1" not in stats.models  # never called
    request_id = info.value.response.headers["x-tollgate-request-id"]
    events = await request_events(sidecar, request_id)
    assert kinds(events)[-3:] == ["AttemptFailed", "CostSettled", "RequestFailed"]


async def test_every_candidate_failing_is_a_typed_error(
    client: openai.AsyncOpenAI, sidecar: Sidecar, fake: FakeOpenAIServer
) -> None:
    for model in ("alpha-1", "beta-1"):
        await fake.control.set_model(model, ModelBehaviour(faults=(StatusFault(status=500),)))
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="task:chat", messages=MESSAGES)
    assert info.value.status_code == 502
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "all_candidates_failed"
    # server_error: one retry of each model, then the next.
    assert [(a["model"], a["error_class"], a["status"]) for a in body["tollgate"]["attempts"]] == [
        ("alpha", "server_error", 500),
        ("alpha", "server_error", 500),
        ("beta", "server_error", 500),
        ("beta", "server_error", 500),
    ]
    events = await request_events(sidecar, info.value.response.headers["x-tollgate-request-id"])
    assert len(only(events, RequestFailed)) == 1 and len(only(events, RequestCompleted)) == 0


async def test_stream_broken_after_chunks_ends_with_a_typed_error(
    client: openai.AsyncOpenAI, sidecar: Sidecar, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model(
        "alpha-1",
        ModelBehaviour(answer_tokens=10, faults=(MidStreamErrorFault(after_chunks=3),)),
    )
    received: list[str] = []
    async with client.chat.completions.with_streaming_response.create(
        model="task:chat", messages=MESSAGES, stream=True
    ) as response:
        request_id = response.headers["x-tollgate-request-id"]
        with pytest.raises(openai.APIError) as info:
            async for chunk in await response.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert len(received) == 3
    assert "upstream_stream_broken" in str(info.value.body)
    events = await request_events(sidecar, request_id)
    failed = only(events, AttemptFailed)[0]
    assert isinstance(failed, AttemptFailed)
    assert failed.mid_stream and failed.chunks_delivered == 3
    end = events[-1].event
    assert isinstance(end, RequestFailed)
    assert (end.error_type, end.chunks_delivered) == ("upstream_stream_broken", 3)
    assert "beta-1" not in (await fake.control.stats()).models  # no fallback once committed


BAD_BODIES: list[tuple[str, bytes, str | None]] = [
    ("malformed JSON", b'{"model": "task:chat", "messages": [', None),
    ("not an object", b"[1, 2, 3]", None),
    ("messages of the wrong type", good_body(messages="hello"), "messages"),
    ("missing messages", msgspec.json.encode({"model": "task:chat"}), None),
    ("empty messages", good_body(messages=[]), "messages"),
    ("unknown role", good_body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("max_tokens of the wrong type", good_body(max_tokens="ten"), "max_tokens"),
    ("max_tokens zero", good_body(max_tokens=0), "max_tokens"),
    ("n > 1", good_body(n=2), "n"),
    ("stream not a bool", good_body(stream="yes"), "stream"),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_input_gets_a_typed_error_and_the_sidecar_keeps_serving(
    sidecar: Sidecar, case: str, body: bytes, param: str | None
) -> None:
    status, payload, _ = await raw_post(sidecar, body)
    assert status == 400, case
    assert payload["error"]["type"] == "invalid_request"
    assert payload["error"]["message"]
    if param is not None:
        assert payload["error"]["param"] == param
    status, payload, _ = await raw_post(sidecar, good_body())
    assert status == 200 and payload["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("model", "code"),
    [("gpt-99", "model_not_found"), ("class:premium", "class_not_found")],
)
async def test_unknown_model_or_class_is_404(sidecar: Sidecar, model: str, code: str) -> None:
    status, payload, headers = await raw_post(sidecar, good_body(model=model))
    assert status == 404
    assert (payload["error"]["type"], payload["error"]["code"]) == ("invalid_request", code)
    events = await request_events(sidecar, headers["x-tollgate-request-id"])
    assert kinds(events) == ["RequestReceived", "RequestFailed"]


async def test_invalid_tenant_header_is_rejected(sidecar: Sidecar) -> None:
    status, payload, _ = await raw_post(sidecar, good_body(), {"x-tollgate-tenant": "a b/c"})
    assert status == 400 and payload["error"]["param"] == "tenant"


async def test_oversized_body_is_refused_without_reading_it(sidecar: Sidecar) -> None:
    huge = good_body(messages=[{"role": "user", "content": "x" * (20 * 1024 * 1024)}])
    status, payload, _ = await raw_post(sidecar, huge)
    assert status == 413
    assert payload["error"]["code"] == "body_too_large"
    # Without a Content-Length (chunked), the limit is enforced while reading.

    async def chunked() -> Any:
        for _ in range(21):
            yield b"x" * (1024 * 1024)

    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://tollgate/v1/chat/completions", data=chunked()) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "body_too_large"
    status, _, _ = await raw_post(sidecar, good_body())
    assert status == 200


async def test_unknown_paths_and_methods_get_typed_errors(sidecar: Sidecar) -> None:
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://tollgate/v1/nothing") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with session.get("http://tollgate/v1/chat/completions") as response:
            assert response.status == 405
            assert (await response.json())["error"]["code"] == "method_not_allowed"
        async with session.get("http://tollgate/healthz") as response:
            assert response.status == 200


async def test_client_disconnecting_mid_stream_is_logged_and_harmless(
    sidecar: Sidecar, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(answer_tokens=50, chunk_delay_s=0.02))
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.post(
            "http://tollgate/v1/chat/completions", data=good_body(stream=True)
        )
        request_id = response.headers["x-tollgate-request-id"]
        await response.content.readline()
        response.close()  # drop the connection mid-stream
    events = await request_events(sidecar, request_id)
    end = events[-1].event
    assert isinstance(end, RequestFailed)
    assert end.error_type == "client_disconnected"
    assert 0 < end.chunks_delivered < 50
    await fake.control.reset()
    status, _, _ = await raw_post(sidecar, good_body())
    assert status == 200


async def test_socket_is_owner_only(sidecar: Sidecar) -> None:
    mode = os.stat(sidecar.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_a_second_sidecar_refuses_a_live_socket(
    sidecar: Sidecar, start_sidecar: SidecarFactory
) -> None:
    with pytest.raises(OSError, match="in use"):
        async with start_sidecar():
            pass
    status, _, _ = await raw_post(sidecar, good_body())
    assert status == 200  # the first one is untouched


def log_bytes(sidecar: Sidecar) -> bytes:
    database = Path(sidecar.config.store.path)
    return b"".join(
        p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file()
    )


async def test_prompts_are_not_logged_unless_opted_in(start_sidecar: SidecarFactory) -> None:
    secret = "the-launch-code-is-4242"
    body = good_body(messages=[{"role": "user", "content": secret}])
    for log_content in (False, True):
        async with start_sidecar(log_content=log_content) as sidecar:
            status, payload, headers = await raw_post(sidecar, body)
            assert status == 200
            events = await request_events(sidecar, headers["x-tollgate-request-id"])
            received = events[0].event
            completed = events[-1].event
            assert isinstance(received, RequestReceived)
            assert isinstance(completed, RequestCompleted)
            answer = payload["choices"][0]["message"]["content"]
            assert completed.completion_chars == len(answer)
            if log_content:
                assert received.prompt is not None and secret in received.prompt
                assert completed.completion == answer
            else:
                assert received.prompt is None and completed.completion is None
                assert secret.encode() not in log_bytes(sidecar)


async def test_api_keys_never_reach_clients_or_the_log(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    key = "sk-proj-TOPSECRET0123456789abcdef"
    async with start_sidecar(key=key) as sidecar:
        # The fake expects another key, so "primary" answers 401; "backup" has no key at all.
        status, payload, headers = await raw_post(sidecar, good_body())
        assert status == 200
        assert headers["x-tollgate-provider"] == "backup"
        await anyio.lowlevel.checkpoint()
        events = await request_events(sidecar, headers["x-tollgate-request-id"])
        failed = only(events, AttemptFailed)[0]
        assert isinstance(failed, AttemptFailed)
        assert failed.error_class == "auth"
        assert "TOPSECRET" not in msgspec.json.encode(payload).decode()
        assert b"TOPSECRET" not in log_bytes(sidecar)
        assert "TOPSECRET" not in repr(failed)
