"""The cost boundary end to end: reserve before the call, refuse at the limit, settle the cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import openai
import pytest
from e2e_helpers import SidecarFactory, kinds, make_config, only, request_events

from adapters import Message
from adapters.fakes import FakeOpenAIServer, MidStreamErrorFault, ModelBehaviour, StatusFault
from events import (
    BudgetRefused,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    RequestCompleted,
    read_log,
)
from sidecar._estimate import measure_prompt
from sidecar._prices import PriceTable
from sidecar._service import Sidecar

MESSAGES: list[Any] = [{"role": "user", "content": "What does this cost?"}]
# The test config prices alpha at $1 / $4 and beta at $2 / $8 per million tokens: 1 and 4
# (2 and 8) micro-dollars per input and output token.
ALPHA = (1, 4)


def worst_case(short_dir: Path, fake: FakeOpenAIServer, model: str, max_tokens: int = 64) -> int:
    """What the boundary will hold for one request of MESSAGES on ``model``."""
    config = make_config(short_dir, fake.base_url)
    estimate = measure_prompt(msgspec.convert(MESSAGES, list[Message])).estimated_tokens
    return PriceTable.from_config(config).worst_case_micros(model, estimate, max_tokens)


def global_budget(limit_micros: int) -> str:
    return f'[budgets.all]\nscope = "global"\nperiod = "day"\nlimit_usd = {limit_micros / 1e6}\n'


async def client_for(sidecar: Sidecar) -> openai.AsyncOpenAI:
    import httpx2

    transport = httpx2.AsyncHTTPTransport(uds=sidecar.socket_path)
    return openai.AsyncOpenAI(
        base_url="http://tollgate/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport, timeout=60),
    )


async def test_cost_is_reported_and_matches_a_hand_calculation(
    sidecar: Sidecar, client: openai.AsyncOpenAI
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="task:chat", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.usage is not None
    by_hand = (
        completion.usage.prompt_tokens * ALPHA[0] + completion.usage.completion_tokens * ALPHA[1]
    )
    assert raw.headers["x-tollgate-cost-usd"] == f"{by_hand / 1e6:.6f}"
    assert completion.usage.model_extra is not None
    assert completion.usage.model_extra["cost_usd"] == pytest.approx(by_hand / 1e6)
    # Streamed, the same call costs the same; the usage chunk carries it.
    stream = await client.chat.completions.create(
        model="task:chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra is not None
    assert usage.model_extra["cost_usd"] == pytest.approx(by_hand / 1e6)
    events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
    settled = only(events, CostSettled)
    assert [(s.cost_micros, s.final) for s in settled] == [(by_hand, True)]  # type: ignore[attr-defined]
    done = events[-1].event
    assert isinstance(done, RequestCompleted)
    assert done.cost_micros == by_hand


async def test_a_request_over_the_budget_is_refused_before_any_call(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, short_dir: Path
) -> None:
    limit = worst_case(short_dir, fake, "alpha") - 1
    async with start_sidecar(budgets=global_budget(limit)) as sidecar:
        client = await client_for(sidecar)
        async with client:
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(model="task:chat", messages=MESSAGES)
        body = info.value.body
        assert isinstance(body, dict)
        assert body["type"] == "budget_exceeded"
        events = await request_events(sidecar, info.value.response.headers["x-tollgate-request-id"])
        assert kinds(events) == [
            "RequestReceived",
            "RouteDecided",
            "BudgetRefused",
            "RequestFailed",
        ]
        refused = only(events, BudgetRefused)[0]
        assert isinstance(refused, BudgetRefused)
        assert refused.limit_micros == limit
        assert refused.needed_micros == limit + 1
    assert (await fake.control.stats()).models == {}  # no provider was called


async def test_a_pricier_fallback_tops_up_or_is_refused(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, short_dir: Path
) -> None:
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(faults=(StatusFault(error="model_not_found"),))
    )
    alpha, beta = worst_case(short_dir, fake, "alpha"), worst_case(short_dir, fake, "beta")
    assert beta > alpha
    # Room for beta: the reservation grows before the fallback.
    async with start_sidecar(budgets=global_budget(beta)) as sidecar:
        client = await client_for(sidecar)
        async with client:
            raw = await client.chat.completions.with_raw_response.create(
                model="task:chat", messages=MESSAGES
            )
        assert raw.headers["x-tollgate-model"] == "beta"
        events = await request_events(sidecar, raw.headers["x-tollgate-request-id"])
        reserved = only(events, BudgetReserved)[0]
        topped = only(events, BudgetToppedUp)[0]
        assert isinstance(reserved, BudgetReserved) and isinstance(topped, BudgetToppedUp)
        assert (reserved.amount_micros, topped.amount_micros) == (alpha, beta - alpha)
        assert kinds(events).index("BudgetToppedUp") < kinds(events).index("AttemptStarted", 4)
        snapshot = sidecar.boundary.book.snapshot()
        assert [b.reserved_micros for b in snapshot.budgets] == [0]
    # No room for beta: refused at the fallback, beta never called.
    await fake.control.reset()
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(faults=(StatusFault(error="model_not_found"),))
    )
    async with start_sidecar(budgets=global_budget(beta - 1)) as sidecar:
        client = await client_for(sidecar)
        async with client:
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="task:chat", messages=MESSAGES)
    assert "beta-1" not in (await fake.control.stats()).models


async def test_a_stream_broken_midway_is_charged_its_hold(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, short_dir: Path
) -> None:
    alpha = worst_case(short_dir, fake, "alpha")
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=20, faults=(MidStreamErrorFault(after_chunks=3),))
    )
    async with start_sidecar(budgets=global_budget(10 * alpha)) as sidecar:
        client = await client_for(sidecar)
        async with (
            client,
            client.chat.completions.with_streaming_response.create(
                model="task:chat", messages=MESSAGES, stream=True
            ) as response,
        ):
            with pytest.raises(openai.APIError):
                async for _ in await response.parse():
                    pass
            request_id = response.headers["x-tollgate-request-id"]
        events = await request_events(sidecar, request_id)
        settled = only(events, CostSettled)
        # The provider billed something it did not report: the conservative charge is the hold.
        assert [(s.cost_micros, s.final) for s in settled] == [(alpha, True)]  # type: ignore[attr-defined]
        [budget] = sidecar.boundary.book.snapshot().budgets
        assert (budget.spent_micros, budget.reserved_micros) == (alpha, 0)


async def test_two_thousand_concurrent_requests_never_pass_the_budget(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, short_dir: Path
) -> None:
    hold = worst_case(short_dir, fake, "alpha")
    fits = 300
    limit = fits * hold + hold // 2
    # Slow answers: every request reserves before any settles, so exactly `fits` get in.
    await fake.control.set_model("alpha-1", ModelBehaviour(answer_tokens=8, ttft_s=3.0))
    body = msgspec.json.encode({"model": "task:chat", "messages": MESSAGES})
    statuses: list[int] = []
    worst_seen = 0
    async with start_sidecar(
        budgets=global_budget(limit), route_extra="deadline_s = 30"
    ) as sidecar:
        book = sidecar.boundary.book
        done = anyio.Event()

        async def sample() -> None:
            nonlocal worst_seen
            while not done.is_set():
                for budget in book.snapshot().budgets:
                    worst_seen = max(worst_seen, budget.spent_micros + budget.reserved_micros)
                await anyio.sleep(0.005)

        connector = aiohttp.UnixConnector(path=sidecar.socket_path, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                async with session.post("http://tollgate/v1/chat/completions", data=body) as r:
                    await r.read()
                    statuses.append(r.status)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as sampler:
                    sampler.start_soon(sample)
                    async with anyio.create_task_group() as tg:
                        for _ in range(2000):
                            tg.start_soon(one)
                    done.set()
        [budget] = book.snapshot().budgets
    # Read once the sidecar has stopped: the last settlements may still be queued for commit
    # when the last reply arrives.
    settled = sum(
        stored.event.cost_micros
        for stored in read_log(sidecar.config.store.path)
        if isinstance(stored.event, CostSettled)
    )
    assert worst_seen <= limit
    assert statuses.count(200) == fits
    assert statuses.count(429) == 2000 - fits
    # Refused requests made no provider call.
    assert (await fake.control.stats()).models["alpha-1"].requests == fits
    # Everything settled: nothing held, and spent is the sum of the settlements in the log.
    assert budget.reserved_micros == 0
    assert budget.spent_micros == settled <= limit
