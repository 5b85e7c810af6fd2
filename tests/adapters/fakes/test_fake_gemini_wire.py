"""The fake Gemini server on the wire: framing, auth, casing, validation, errors and faults, as
a plain HTTP client sees them (reference §4 and the §9 fidelity checklist)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from adapters.fakes import (
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    StatusFault,
    serve_fake_gemini,
)

KEY = "AIzaFakeWireKey0123456789"
MODEL = "gemini-2.5-flash"
HELLO: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_gemini(FakeOpenAISettings(api_key=KEY)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-goog-api-key": KEY}) as session:
        yield session


def url(fake: FakeServer, method: str = "generateContent", model: str = MODEL) -> str:
    return f"{fake.base_url}/v1beta/models/{model}:{method}"


async def post(
    http: aiohttp.ClientSession, target: str, body: Any = HELLO, **kwargs: Any
) -> tuple[int, bytes]:
    async with http.post(target, json=body, **kwargs) as resp:
        return resp.status, await resp.read()


def sse_objects(raw: bytes) -> list[dict[str, Any]]:
    """The events of a stream, checking Gemini's framing on the way: only `data: ` lines."""
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b""  # the body ends right after the last event
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: ")
        assert b"\n" not in event
        out.append(json.loads(event[6:]))
    return out


async def test_sse_stream_has_only_data_lines_and_cumulative_usage(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=4))
    async with http.post(
        url(fake, "streamGenerateContent"), params={"alt": "sse"}, json=HELLO
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_objects(await r.read())
    assert len(events) == 4
    assert [e["usageMetadata"]["candidatesTokenCount"] for e in events] == [1, 2, 3, 4]
    assert ["finishReason" in e["candidates"][0] for e in events] == [False] * 3 + [True]
    assert {e["responseId"] for e in events} == {events[0]["responseId"]}
    assert all(e["modelVersion"] == MODEL for e in events)


async def test_stream_without_alt_sse_is_a_json_array(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(answer_tokens=3))
    status, raw = await post(http, url(fake, "streamGenerateContent"))
    assert status == 200
    chunks = json.loads(raw)
    assert isinstance(chunks, list) and len(chunks) == 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_key_as_query_parameter_and_missing_key(fake: FakeServer) -> None:
    async with aiohttp.ClientSession() as anonymous:
        status, _ = await post(anonymous, url(fake), params={"key": KEY})
        assert status == 200
        status, raw = await post(anonymous, url(fake))
    assert status == 403
    assert json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
    for logged in await fake.control.requests(MODEL):
        assert KEY not in json.dumps(logged.headers)
        assert "x-goog-api-key" not in {k.lower() for k in logged.headers}


async def test_snake_case_fields_are_accepted(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    body = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "get_weather",
                        # Google's OpenAPI subset, uppercase types; its keys are user data.
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"max_days": {"type": "INTEGER"}},
                            "required": ["max_days"],
                        },
                    }
                ]
            }
        ],
        "tool_config": {"function_calling_config": {"mode": "ANY"}},
        "generation_config": {"max_output_tokens": 50, "thinking_config": {"thinking_budget": 0}},
    }
    status, raw = await post(http, url(fake), body)
    assert status == 200, raw
    [part] = json.loads(raw)["candidates"][0]["content"]["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": {"max_days": 0}}


@pytest.mark.parametrize(
    ("body", "wording"),
    [
        ({**HELLO, "temperature": 0.2}, 'Unknown name "temperature": Cannot find field.'),
        (
            {**HELLO, "generationConfig": {"max_tokens": 5}},
            "Unknown name \"maxTokens\" at 'generation_config': Cannot find field.",
        ),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f"}}]},
                ]
            },
            "number of function response parts",
        ),
    ],
)
async def test_invalid_requests_get_gemini_400s(
    fake: FakeServer, http: aiohttp.ClientSession, body: Any, wording: str
) -> None:
    status, raw = await post(http, url(fake), body)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert wording in error["message"]


async def test_unknown_model_is_404_naming_the_api_version(
    http: aiohttp.ClientSession,
) -> None:
    async with serve_fake_gemini(FakeOpenAISettings(api_key=KEY, models=("gemini-a",))) as fake:
        status, raw = await post(http, url(fake, model="gemini-b"))
        assert status == 404
        error = json.loads(raw)["error"]
        assert error["status"] == "NOT_FOUND"
        assert "models/gemini-b is not found for API version v1beta" in error["message"]
        stats = await fake.control.stats()
        assert stats.models["gemini-b"].outcomes == {"http_404": 1}


async def test_context_window_gives_the_input_token_count_400(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model(MODEL, ModelBehaviour(context_window=5))
    status, raw = await post(http, url(fake))
    assert status == 400
    message = json.loads(raw)["error"]["message"]
    match = re.fullmatch(
        r"The input token count \((\d+)\) exceeds the maximum number of tokens allowed \(5\)\.",
        message,
    )
    assert match is not None and int(match.group(1)) > 5


PRESETS: list[tuple[dict[str, Any], int, str, set[str]]] = [
    ({"error": "invalid_api_key"}, 400, "INVALID_ARGUMENT", {"ErrorInfo", "LocalizedMessage"}),
    ({"error": "unsupported_country_region_territory"}, 400, "FAILED_PRECONDITION", set()),
    ({"error": "model_not_found"}, 404, "NOT_FOUND", set()),
    ({"status": 429}, 429, "RESOURCE_EXHAUSTED", {"QuotaFailure", "Help", "RetryInfo"}),
    (
        {"error": "insufficient_quota"},
        429,
        "RESOURCE_EXHAUSTED",
        {"QuotaFailure", "Help", "RetryInfo"},
    ),
    ({"status": 401}, 401, "UNAUTHENTICATED", set()),
    ({"status": 403}, 403, "PERMISSION_DENIED", {"ErrorInfo", "LocalizedMessage"}),
    ({"status": 500}, 500, "INTERNAL", set()),
    ({"status": 503}, 503, "UNAVAILABLE", set()),
    ({"status": 504}, 504, "DEADLINE_EXCEEDED", set()),
    ({"status": 503, "retry_after_ms": 1500}, 503, "UNAVAILABLE", {"RetryInfo"}),
]


@pytest.mark.parametrize(("fault", "status", "rpc", "details"), PRESETS)
async def test_status_faults_use_gemini_error_bodies(
    fake: FakeServer,
    http: aiohttp.ClientSession,
    fault: dict[str, Any],
    status: int,
    rpc: str,
    details: set[str],
) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "status", **fault}]})
    got, raw = await post(http, url(fake))
    assert got == status
    error = json.loads(raw)["error"]
    assert (error["code"], error["status"]) == (status, rpc)
    assert error["message"]
    assert {d["@type"].rpartition(".")[2] for d in error.get("details", [])} == details


async def test_daily_quota_and_retry_delays(fake: FakeServer, http: aiohttp.ClientSession) -> None:
    fault = StatusFault(error="insufficient_quota", retry_after_ms=20138)
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    _, raw = await post(http, url(fake))
    error = json.loads(raw)["error"]
    details = {d["@type"].rpartition(".")[2]: d for d in error["details"]}
    assert "PerDay" in details["QuotaFailure"]["violations"][0]["quotaId"]
    assert details["RetryInfo"]["retryDelay"] == "20.138s"
    assert error["message"].endswith("Please retry in 20.138s.")


async def test_bad_gateway_is_an_html_page(fake: FakeServer, http: aiohttp.ClientSession) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "status", "status": 502}]})
    async with http.post(url(fake), json=HELLO) as resp:
        assert resp.status == 502
        assert resp.headers["Content-Type"].startswith("text/html")


async def stream_events(fake: FakeServer, http: aiohttp.ClientSession) -> tuple[list[bytes], bool]:
    """The raw events of a stream and whether the body ended cleanly."""
    raw = b""
    clean = True
    async with http.post(
        url(fake, "streamGenerateContent"), params={"alt": "sse"}, json=HELLO
    ) as r:
        try:
            async for data in r.content.iter_any():
                raw += data
        except aiohttp.ClientPayloadError:
            clean = False
    return [e for e in raw.split(b"\r\n\r\n") if e], clean


async def test_mid_stream_error_event_then_eof(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model(
        MODEL, {"faults": [{"kind": "mid_stream_error", "after_chunks": 2, "error": "overloaded"}]}
    )
    events, clean = await stream_events(fake, http)
    assert clean
    assert len(events) == 3
    assert json.loads(events[-1][6:]) == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }


async def test_no_done_drops_the_finish_reason(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model(MODEL, {"answer_tokens": 3, "faults": [{"kind": "no_done"}]})
    events, clean = await stream_events(fake, http)
    assert clean and len(events) == 3
    assert all("finishReason" not in json.loads(e[6:])["candidates"][0] for e in events)


async def test_malformed_line_then_the_rest(fake: FakeServer, http: aiohttp.ClientSession) -> None:
    await fake.control.set_model(
        MODEL, {"answer_tokens": 3, "faults": [{"kind": "malformed_sse", "after_chunks": 1}]}
    )
    events, clean = await stream_events(fake, http)
    assert clean and len(events) == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[1][6:])
    assert json.loads(events[-1][6:])["candidates"][0]["finishReason"] == "STOP"


async def test_drop_cuts_the_connection(fake: FakeServer, http: aiohttp.ClientSession) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "drop", "after_chunks": 2}]})
    events, clean = await stream_events(fake, http)
    assert not clean
    assert len(events) == 2


async def test_model_names_may_contain_a_slash(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    model = "tuned/my-model"
    await fake.control.set_model(model, ModelBehaviour(text="fixed answer"))
    status, raw = await post(http, url(fake, model=model))
    assert status == 200
    assert json.loads(raw)["candidates"][0]["content"]["parts"] == [{"text": "fixed answer"}]
    stats = await fake.control.stats()
    assert stats.models[model].requests == 1
    [logged] = await fake.control.requests(model)
    assert logged.body_json() == HELLO


async def test_requests_are_counted_per_model(
    fake: FakeServer, http: aiohttp.ClientSession
) -> None:
    await fake.control.set_model("m-a", {"faults": [{"kind": "status", "status": 503, "times": 1}]})
    for model in ("m-a", "m-a", "m-b"):
        await post(http, url(fake, model=model))
    stats = await fake.control.stats()
    assert stats.requests == 3
    assert stats.models["m-a"].outcomes == {"http_503": 1, "ok": 1}
    assert stats.models["m-b"].outcomes == {"ok": 1}
