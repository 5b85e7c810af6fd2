"""The fake Gemini server, driven by the official `google-genai` SDK: if the SDK parses it, the
wire format is faithful (testing doctrine). Nothing may leave the machine: name resolution and
connections are limited to loopback for every test here."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from adapters.fakes import (
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    StatusFault,
    serve_fake_gemini,
)

# google-genai subclasses aiohttp.ClientSession for its async client, which aiohttp frowns on;
# the suite turns warnings into errors, so this one (the SDK's, not ours) is let through.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"
)

API_KEY = "AIzaFakeGeminiTestKey0123456789"
MODEL = "gemini-2.5-flash"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)


def _loopback(host: object) -> bool:
    if host in ("localhost", None):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve or reach a host other than loopback, and keep the SDK's
    environment variables (keys, API version, a proxy) out of the tests."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(host):
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not _loopback(address[0]):
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in (
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_offline_guard_blocks_the_real_api() -> None:
    with pytest.raises(AssertionError, match="tried to resolve"):
        socket.getaddrinfo("generativelanguage.googleapis.com", 443)
    with socket.socket() as sock, pytest.raises(AssertionError, match="tried to connect"):
        sock.connect(("142.250.1.95", 443))


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_gemini(FakeOpenAISettings(api_key=API_KEY)) as server:
        yield server


@pytest.fixture(params=["v1beta", "v1"])
async def client(fake: FakeServer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    sdk = genai.Client(
        api_key=API_KEY,
        http_options=types.HttpOptions(base_url=fake.base_url, api_version=request.param),
    )
    try:
        yield sdk
    finally:
        await sdk.aio.aclose()
        sdk.close()


async def test_non_streaming_generate_content(client: Any, fake: FakeServer) -> None:
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="Say something.",
        config=types.GenerateContentConfig(system_instruction="Be brief."),
    )
    assert response.text is not None
    assert len(response.text.split(" ")) == 16  # the shared default answer length
    [candidate] = response.candidates
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content.role == "model"
    usage = response.usage_metadata
    # 3 + [4 + ceil(9 / 4)] (system) + [4 + ceil(14 / 4)] (user): the shared token rule.
    assert usage.prompt_token_count == 18
    assert usage.candidates_token_count == 16
    assert usage.total_token_count == 34
    assert response.model_version == MODEL
    assert response.response_id
    [logged] = await fake.control.requests(MODEL)
    # The SDK's version choice reaches the path: both are routed.
    assert not logged.stream


async def test_streaming_reassembles_the_whole_answer(client: Any) -> None:
    whole = await client.aio.models.generate_content(model=MODEL, contents="Hello")
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODEL, contents="Hello"
        )
    ]
    assert len(chunks) == 16
    assert "".join(c.text for c in chunks) == whole.text
    # Cumulative usage on every chunk, the finish reason only on the last.
    counts = [c.usage_metadata.candidates_token_count for c in chunks]
    assert counts == list(range(1, 17))
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * 15
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata == whole.usage_metadata


async def test_function_call_comes_whole_without_an_id(client: Any) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    response = await client.aio.models.generate_content(
        model=MODEL, contents="Weather in Paris?", config=config
    )
    [call] = response.function_calls
    assert call.name == "get_weather"
    assert call.id is None
    assert set(call.args) == {"city", "days"}
    assert call.args["days"] == 0
    assert response.candidates[0].finish_reason == types.FinishReason.STOP

    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(
            model=MODEL, contents="Weather in Paris?", config=config
        )
    ]
    assert [c.function_calls for c in chunks] == [response.function_calls]


async def test_rate_limit_error_carries_retry_info(client: Any, fake: FakeServer) -> None:
    fault = StatusFault(status=429, retry_after_s=34)
    await fake.control.set_model(MODEL, ModelBehaviour(faults=(fault,)))
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model=MODEL, contents="Hi")
    error = info.value
    assert error.code == 429
    assert error.status == "RESOURCE_EXHAUSTED"
    assert error.message is not None and "Please retry in 34s." in error.message
    details = error.details["error"]["details"]
    kinds = {d["@type"].rpartition(".")[2]: d for d in details}
    assert kinds["RetryInfo"]["retryDelay"] == "34s"
    violation = kinds["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    # The SDK makes one attempt by default: the fault fired once.
    stats = await fake.control.stats()
    assert stats.models[MODEL].outcomes == {"http_429": 1}


async def test_mid_stream_error_raises_server_error(client: Any, fake: FakeServer) -> None:
    await fake.control.set_model(
        MODEL, {"faults": [{"kind": "mid_stream_error", "after_chunks": 2, "error": "overloaded"}]}
    )
    received: list[str] = []
    with pytest.raises(errors.ServerError) as info:
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODEL, contents="Hi"
        ):
            received.append(chunk.text)
    assert info.value.code == 503
    assert info.value.status == "UNAVAILABLE"
    assert len(received) == 2


async def test_wrong_key_is_a_400_api_key_invalid(fake: FakeServer) -> None:
    sdk = genai.Client(
        api_key="AIzaWrongKey",
        http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta"),
    )
    try:
        with pytest.raises(errors.ClientError) as info:
            await sdk.aio.models.generate_content(model=MODEL, contents="Hi")
    finally:
        await sdk.aio.aclose()
        sdk.close()
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    [error_info, _] = info.value.details["error"]["details"]
    assert error_info["reason"] == "API_KEY_INVALID"


async def test_prompt_block_is_a_200_without_candidates(client: Any, fake: FakeServer) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "content_filter"}]})
    response = await client.aio.models.generate_content(model=MODEL, contents="Hi")
    assert response.candidates is None
    assert response.text is None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


async def test_safety_finish_after_some_text(client: Any, fake: FakeServer) -> None:
    await fake.control.set_model(MODEL, {"faults": [{"kind": "content_filter", "after_chunks": 3}]})
    chunks = [
        c async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="Hi")
    ]
    assert len(chunks) == 4
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.SAFETY
    assert any(r.blocked for r in chunks[-1].candidates[0].safety_ratings)


async def test_thoughts_and_cached_tokens_are_reported(client: Any, fake: FakeServer) -> None:
    await fake.control.set_model(
        MODEL, ModelBehaviour(answer_tokens=5, reasoning_tokens=40, cached_prompt_tokens=4)
    )
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=30)
    )
    response = await client.aio.models.generate_content(
        model=MODEL, contents="Think first.", config=config
    )
    usage = response.usage_metadata
    assert usage.thoughts_token_count == 30  # capped by the budget
    assert usage.cached_content_token_count == 4
    assert usage.total_token_count == usage.prompt_token_count + 5 + 30
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True
    # response.text leaves thoughts out.
    assert response.text is not None and len(response.text.split()) == 5
