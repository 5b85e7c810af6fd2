"""Retries, fallback, breakers and deadlines end to end (issue: no request fails when a path
exists, none hangs). Every scenario checks the client's result and the events logged."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import msgspec
import openai
import pytest
from e2e_helpers import SidecarFactory, kinds, only, request_events

from adapters.fakes import (
    DropFault,
    FakeOpenAIServer,
    HangBeforeFirstTokenFault,
    HangBeforeHeadersFault,
    MidStreamErrorFault,
    ModelBehaviour,
    StatusFault,
)
from events import (
    AttemptFailed,
    AttemptStarted,
    CandidateSkipped,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    RouteDecided,
)
from sidecar._service import Sidecar

MESSAGES: list[Any] = [{"role": "user", "content": "Be resilient."}]
# The load: a thousand concurrent streams.
N_STREAMS = 1000


@contextlib.asynccontextmanager
async def openai_client(sidecar: Sidecar) -> AsyncIterator[openai.AsyncOpenAI]:
    import httpx2

    transport = httpx2.AsyncHTTPTransport(uds=sidecar.socket_path)
    async with openai.AsyncOpenAI(
        base_url="http://tollgate/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport, timeout=60),
    ) as client:
        yield client


async def served_by(client: openai.AsyncOpenAI, model: str = "task:chat", **kw: Any) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kw
    )


async def test_rate_limit_with_retry_after_is_retried_on_the_same_model(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    fault = StatusFault(status=429, error="rate_limit_exceeded", retry_after_s=1, times=1)
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(fault,)))
    raw = await served_by(client)
    assert raw.headers["x-tollgate-model"] == "alpha"
    events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
    assert kinds(events) == [
        "RequestReceived",
        "RouteDecided",
        "AttemptStarted",
        "AttemptFailed",
        "RetryScheduled",
        "CostSettled",
        "AttemptStarted",
        "AttemptSucceeded",
        "CostSettled",
        "RequestCompleted",
    ]
    retry = only(events, RetryScheduled)[0]
    assert isinstance(retry, RetryScheduled)
    assert (retry.error_class, retry.wait_ms) == ("rate_limited", 1000)
    second = only(events, AttemptStarted)[1]
    # Retry-After is honoured: the second attempt starts at least a second after the failure.
    failed = only(events, AttemptFailed)[0]
    assert isinstance(failed, AttemptFailed)
    assert failed.retry_after_ms == 1000
    assert second.ts_ns - failed.ts_ns >= 1_000_000_000
    assert (await fake.control.stats()).models["alpha-1"].requests == 2
    assert "beta-1" not in (await fake.control.stats()).models


async def test_breaker_opens_skips_the_provider_then_a_probe_closes_it(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=503),)))
    async with (
        start_sidecar(breaker_threshold=3, breaker_cooldown_s=0.5) as sidecar,
        openai_client(sidecar) as client,
    ):
        # Three overload failures (one try and two retries) open the breaker; beta serves.
        first = await served_by(client)
        assert first.headers["x-tollgate-model"] == "beta"
        events = await request_events(sidecar, first.headers["x-tollgate-request-id"])
        opened = only(events, CircuitOpened)
        assert len(opened) == 1
        assert opened[0].provider == "primary"  # type: ignore[attr-defined]
        assert (await fake.control.stats()).models["alpha-1"].requests == 3

        # While open the router skips the provider: no attempt is made.
        for _ in range(3):
            raw = await served_by(client)
            assert raw.headers["x-tollgate-model"] == "beta"
            events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
            decided = only(events, RouteDecided)[0]
            assert isinstance(decided, RouteDecided)
            assert [(d.model, d.reason) for d in decided.dropped] == [
                ("alpha", "provider_unavailable")
            ]
        assert (await fake.control.stats()).models["alpha-1"].requests == 3

        # After the cooldown the provider has recovered; a probe goes through and closes it.
        await fake.control.clear_model("alpha-1")
        await anyio.sleep(0.6)
        probe = await served_by(client)
        assert probe.headers["x-tollgate-model"] == "alpha"
        events = await request_events(sidecar, probe.headers["x-tollgate-request-id"])
        assert kinds(events)[2:6] == [
            "CircuitHalfOpened",
            "AttemptStarted",
            "CircuitClosed",
            "AttemptSucceeded",
        ]
        after = await served_by(client)
        assert after.headers["x-tollgate-model"] == "alpha"


async def test_a_failed_probe_reopens_the_breaker(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=500),)))
    async with (
        start_sidecar(breaker_threshold=2, breaker_cooldown_s=0.3) as sidecar,
        openai_client(sidecar) as client,
    ):
        await served_by(client)  # two server errors: open
        await anyio.sleep(0.4)
        raw = await served_by(client)
        events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
        assert len(only(events, CircuitHalfOpened)) == 1
        assert len(only(events, CircuitOpened)) == 1
        assert len(only(events, CircuitClosed)) == 0
        # The probe failed, so this request's retry of alpha is refused by the breaker.
        skipped = only(events, CandidateSkipped)
        assert [(s.model, s.reason) for s in skipped] == [  # type: ignore[attr-defined]
            ("alpha", "breaker_open")
        ]
        assert raw.headers["x-tollgate-model"] == "beta"


@pytest.mark.parametrize(
    ("fault", "timeout_key", "phase_code"),
    [
        (HangBeforeHeadersFault(), "header_timeout_s", "response_headers_timeout"),
        (HangBeforeFirstTokenFault(), "ttft_timeout_s", "first_token_timeout"),
    ],
)
async def test_a_provider_that_never_answers_costs_at_most_its_deadline(
    start_sidecar: SidecarFactory,
    fake: FakeOpenAIServer,
    fault: Any,
    timeout_key: str,
    phase_code: str,
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(fault,)))
    async with (
        start_sidecar(route_extra=f"{timeout_key} = 0.3") as sidecar,
        openai_client(sidecar) as client,
    ):
        started = anyio.current_time()
        async with client.chat.completions.with_streaming_response.create(
            model="task:chat", messages=MESSAGES, stream=True
        ) as response:
            chunks = [c async for c in await response.parse() if c.choices]
            request_id = response.headers["x-tollgate-request-id"]
            assert response.headers["x-tollgate-model"] == "beta"
        elapsed = anyio.current_time() - started
        events = await request_events(sidecar, request_id)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    failed = only(events, AttemptFailed)
    # A timeout gets one retry of the same model, then the next candidate.
    assert [(f.error_class, f.provider_code) for f in failed] == [  # type: ignore[attr-defined]
        ("timeout", phase_code),
        ("timeout", phase_code),
    ]
    assert elapsed < 5  # two 0.3 s deadlines and a short backoff, not a hang


async def test_stream_cut_after_five_chunks_reports_what_was_delivered(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=20, faults=(DropFault(after_chunks=5),))
    )
    received: list[str] = []
    async with client.chat.completions.with_streaming_response.create(
        model="task:chat", messages=MESSAGES, stream=True
    ) as response:
        with pytest.raises(openai.APIError) as info:
            async for chunk in await response.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
        request_id = response.headers["x-tollgate-request-id"]
    assert len(received) == 5
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "upstream_stream_broken"
    assert body["tollgate"]["chunks_delivered"] == 5
    events = await request_events(sidecar, request_id)
    assert "FallbackTaken" not in kinds(events)
    assert "RetryScheduled" not in kinds(events)
    assert "beta-1" not in (await fake.control.stats()).models


async def test_context_overflow_falls_back_to_a_larger_window_only(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    overflow = StatusFault(error="context_length_exceeded")
    await fake.control.set_model("beta-1", ModelBehaviour(faults=(overflow,)))
    # Route "wide" tries beta (16k), then alpha (8k), then gamma (32k).
    raw = await served_by(client, "task:wide")
    assert raw.headers["x-tollgate-model"] == "gamma"
    events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
    skipped = only(events, CandidateSkipped)
    assert [(s.model, s.reason) for s in skipped] == [  # type: ignore[attr-defined]
        ("alpha", "smaller_context")
    ]
    stats = await fake.control.stats()
    assert "alpha-1" not in stats.models
    assert stats.models["beta-1"].requests == 1  # an overflow is not retried


async def test_every_candidate_hanging_ends_with_deadline_exceeded(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    for model in ("alpha-1", "beta-1"):
        await fake.control.set_model(model, ModelBehaviour(faults=(HangBeforeHeadersFault(),)))
    async with (
        start_sidecar(route_extra="deadline_s = 1.0") as sidecar,
        openai_client(sidecar) as client,
    ):
        started = anyio.current_time()
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="task:chat", messages=MESSAGES)
        elapsed = anyio.current_time() - started
        request_id = info.value.response.headers["x-tollgate-request-id"]
        events = await request_events(sidecar, request_id)
    assert info.value.status_code == 504
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "deadline_exceeded"
    assert elapsed < 4  # the deadline, not the providers, decides
    end = events[-1].event
    assert isinstance(end, RequestFailed)
    assert end.error_type == "deadline_exceeded"


async def test_max_degrade_zero_fails_loudly_instead_of_degrading(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=500),)))
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="task:strict", messages=MESSAGES)
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "all_candidates_failed"
    assert "beta-1" not in (await fake.control.stats()).models
    # The same failure on a route allowed to degrade is served by the degraded class.
    raw = await served_by(client, "task:lenient")
    assert raw.headers["x-tollgate-model"] == "beta"


async def test_auth_failure_skips_the_providers_other_models(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    async with (
        start_sidecar(key="sk-wrong-key-0000000000") as sidecar,
        openai_client(sidecar) as client,
    ):
        raw = await served_by(client, "task:lenient")
        assert raw.headers["x-tollgate-model"] == "beta"
        events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
        failed = only(events, AttemptFailed)
        assert [f.error_class for f in failed] == ["auth"]  # type: ignore[attr-defined]
        assert "RetryScheduled" not in kinds(events)


async def test_a_thousand_streams_against_a_flaky_primary_all_end_typed(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    faults = (
        StatusFault(status=503, rate=0.08),
        StatusFault(status=429, retry_after_s=0.05, rate=0.06),
        StatusFault(status=500, rate=0.06),
        DropFault(after_chunks=3, rate=0.05),
        MidStreamErrorFault(after_chunks=0, rate=0.03),
        HangBeforeFirstTokenFault(rate=0.03),
    )
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=12, chunk_delay_s=0.001, faults=faults, seed=7)
    )
    outcomes: dict[str, str] = {}
    body = msgspec.json.encode({"model": "task:chat", "messages": MESSAGES, "stream": True})
    async with start_sidecar(
        route_extra="ttft_timeout_s = 1.0\ndeadline_s = 8.0", breaker_threshold=100_000
    ) as sidecar:
        connector = aiohttp.UnixConnector(path=sidecar.socket_path, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(index: int) -> None:
                async with session.post(
                    "http://tollgate/v1/chat/completions", data=body
                ) as response:
                    request_id = response.headers["x-tollgate-request-id"]
                    payload = await response.read()
                if response.status != 200:
                    error = msgspec.json.decode(payload)["error"]["type"]
                    outcomes[request_id] = f"http {response.status} {error}"
                elif payload.endswith(b"data: [DONE]\n\n"):
                    outcomes[request_id] = "served"
                else:
                    last = payload.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: ")
                    outcomes[request_id] = "stream " + msgspec.json.decode(last)["error"]["type"]

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for index in range(N_STREAMS):
                        tg.start_soon(one, index)
        # Every request ended, served or with a typed error...
        assert len(outcomes) == N_STREAMS
        assert set(outcomes.values()) <= {"served", "stream upstream_stream_broken"}
        assert list(outcomes.values()).count("served") > 0.9 * N_STREAMS
        # ... and the log holds exactly one terminal event for each.
        terminal: dict[str, int] = {}
        with anyio.fail_after(10):
            while sum(terminal.values()) < N_STREAMS:
                terminal.clear()
                for stored in await sidecar.store.read(0, 100_000):
                    if isinstance(stored.event, RequestCompleted | RequestFailed):
                        terminal[stored.event.request_id] = (
                            terminal.get(stored.event.request_id, 0) + 1
                        )
                await anyio.sleep(0.05)
        assert set(terminal) == set(outcomes)
        assert set(terminal.values()) == {1}
