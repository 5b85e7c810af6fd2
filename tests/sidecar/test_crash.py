"""A sidecar killed with SIGKILL under load: no reservation is lost, none is settled twice."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
from anyio.abc import Process
from e2e_helpers import config_text, make_config

from adapters import Message
from adapters.fakes import FakeOpenAIServer, ModelBehaviour
from events import BudgetReservationExpired, BudgetReserved, read_log
from projections import BudgetBook
from sidecar._admin import budget_report
from sidecar._boundary import budget_specs
from sidecar._config import load_config
from sidecar._estimate import measure_prompt
from sidecar._prices import PriceTable

TOLLGATE = [sys.executable, "-c", "import sys; from sidecar._cli import main; sys.exit(main())"]
MESSAGES: list[Any] = [{"role": "user", "content": "Still there?"}]
BODY = msgspec.json.encode({"model": "task:chat", "messages": MESSAGES})
# Calls in flight when it dies: fewer than the provider's connection pool (256), or the rest
# would be waiting for a connection rather than for the provider.
ADMITTED = 200
ENV = {**os.environ, "TEST_PROVIDER_KEY": "fake-key", "TEST_BACKUP_KEY": "fake-key"}


@asynccontextmanager
async def serving(config: Path, socket: Path) -> AsyncIterator[Process]:
    process = await anyio.open_process(
        [*TOLLGATE, "--log-level", "WARNING", "serve", "--config", str(config)], env=ENV
    )
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    await get(socket, "/healthz")
                    break
                except (aiohttp.ClientError, OSError):
                    await anyio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def get(socket: Path, path: str) -> Any:
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as s, s.get(f"http://t{path}") as r:
        return await r.json()


async def post(socket: Path, path: str, body: bytes) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(f"http://t{path}", data=body) as r,
    ):
        return r.status, await r.json()


def folded(log: Path, config_file: Path) -> BudgetBook:
    book = BudgetBook(budget_specs(load_config(config_file)))
    for stored in read_log(log):
        book.apply(stored.event)
    return book


def figures(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (b["budget"], b["limit_micros"], b["reserved_micros"], b["spent_micros"])
        for b in report["budgets"]
    ]


async def test_sigkill_with_requests_in_flight_then_restart(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    estimate = measure_prompt(msgspec.convert(MESSAGES, list[Message])).estimated_tokens
    prices = PriceTable.from_config(make_config(short_dir, fake.base_url))
    hold = prices.worst_case_micros("alpha", estimate, 64)
    limit = ADMITTED * hold + hold // 2
    budgets = f'[budgets.all]\nscope = "global"\nperiod = "day"\nlimit_usd = {limit / 1e6}\n'
    config = short_dir / "tollgate.toml"
    config.write_text(
        config_text(
            fake.base_url,
            budgets=budgets,
            route_extra="deadline_s = 10",
            server_extra="reservation_grace_s = 0.5",
        )
    )
    socket, log = short_dir / "s.sock", short_dir / "events.db"
    # The provider takes its time: the admitted requests are in flight when the sidecar dies.
    await fake.control.set_model("alpha-1", ModelBehaviour(ttft_s=30))

    connector = aiohttp.UnixConnector(path=str(socket), limit=0)
    async with serving(config, socket) as first, aiohttp.ClientSession(connector=connector) as s:

        async def one() -> None:
            # The sidecar is killed under it.
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with s.post("http://t/v1/chat/completions", data=BODY) as response:
                    await response.read()

        async with anyio.create_task_group() as clients:
            for _ in range(500):
                clients.start_soon(one)
            with anyio.fail_after(30):
                while (await fake.control.stats()).requests < ADMITTED:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            await first.wait()
    assert (await fake.control.stats()).requests == ADMITTED  # the refused never reached it

    # Every admitted request's reservation was durable before its call.
    reservations = [s.event for s in read_log(log) if isinstance(s.event, BudgetReserved)]
    assert len(reservations) == ADMITTED
    book = folded(log, config)
    [budget] = book.snapshot().budgets
    assert (budget.reserved_micros, budget.spent_micros) == (ADMITTED * hold, 0)

    await fake.control.clear_model("alpha-1")
    async with serving(config, socket) as second:
        # The restarted sidecar rebuilt exactly the state the log holds...
        report = await get(socket, "/admin/budgets")
        assert figures(report) == figures(budget_report(folded(log, config)))
        # ... the unsettled reservations expire by policy, counted as spent at what they held...
        with anyio.fail_after(20):
            while (await get(socket, "/admin/budgets"))["budgets"][0]["reserved_micros"]:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        report = await get(socket, "/admin/budgets")
        [(_, limit_seen, reserved, spent)] = figures(report)
        assert (limit_seen, reserved, spent) == (limit, 0, ADMITTED * hold)
        expired = [s.event for s in read_log(log) if isinstance(s.event, BudgetReservationExpired)]
        assert len(expired) == ADMITTED
        assert {e.reservation_id for e in expired} == {r.reservation_id for r in reservations}
        # ... the budget stays within its limit: the next request is refused, typed...
        status, body = await post(socket, "/v1/chat/completions", BODY)
        assert (status, body["error"]["type"]) == (429, "budget_exceeded")
        # ... and once an operator raises the limit (an event, durable), requests go on.
        status, _ = await post(
            socket,
            "/admin/budgets/limit",
            msgspec.json.encode({"budget": "all", "limit_usd": 2 * limit / 1e6}),
        )
        assert status == 200
        status, body = await post(socket, "/v1/chat/completions", BODY)
        assert status == 200
        assert body["choices"][0]["message"]["content"]
        second.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await second.wait() == 0

    # Offline, `tollgate budget` folds the log to the same figures.
    result = subprocess.run(  # noqa: ASYNC221 - the sidecar is gone; nothing else to serve
        [*TOLLGATE, "budget", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    [(_, limit_after, reserved_after, spent_after)] = figures(msgspec.json.decode(result.stdout))
    assert limit_after == 2 * limit
    assert reserved_after == 0
    assert ADMITTED * hold < spent_after <= ADMITTED * hold + hold
