"""Several sidecar processes on one JetStream stream share one budget.

Real parts only: a nats-server process, three ``tollgate serve`` processes with the JetStream
store, the fake OpenAI server, and clients over the sidecars' Unix sockets. After each run the
whole stream is folded event by event, and ``spent + reserved <= limit`` is checked at every
point of the log: the invariant must hold for the log as a whole, not only at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import nats
import pytest
from aiohttp import web
from anyio.abc import Process, TaskGroup
from e2e_helpers import config_text, make_config
from nats.aio.client import Client
from nats_server import NatsServer

from adapters import Message
from adapters.fakes import (
    FakeOpenAIControl,
    FakeOpenAISettings,
    FakeServer,
    ModelBehaviour,
    create_openai_app,
)
from events import (
    BudgetRefused,
    BudgetReservationExpired,
    BudgetReserved,
    CostSettled,
    RequestCompleted,
    StoredEvent,
    open_jetstream_store,
)
from projections import BudgetBook
from sidecar._boundary import budget_specs
from sidecar._config import config_hash, load_config
from sidecar._estimate import measure_prompt
from sidecar._prices import PriceTable

TOLLGATE = [sys.executable, "-c", "import sys; from sidecar._cli import main; sys.exit(main())"]
MESSAGES: list[Any] = [{"role": "user", "content": "How much is left?"}]
BODY = msgspec.json.encode({"model": "task:chat", "messages": MESSAGES})
ENV = {**os.environ, "TEST_PROVIDER_KEY": "fake-key", "TEST_BACKUP_KEY": "fake-key"}
STREAM = "TOLLGATE"


class Cluster:
    """Three sidecars on one stream and one global budget of ``limit_micros`` a day, each in its
    own directory with its own socket."""

    def __init__(
        self,
        root: Path,
        fake: FakeServer,
        nats_url: str,
        *,
        limit_micros: int,
        deadline_s: float,
        grace_s: float,
        shutdown_grace_s: float = 10,
    ) -> None:
        self.configs: list[Path] = []
        self.sockets: list[Path] = []
        for name in ("a", "b", "c"):
            directory = root / name
            directory.mkdir()
            text = config_text(
                fake.base_url,
                budgets=global_budget(limit_micros),
                route_extra=f"deadline_s = {deadline_s}",
                server_extra=(
                    f"reservation_grace_s = {grace_s}\nshutdown_grace_s = {shutdown_grace_s}"
                ),
            )
            store = '[store]\npath = "events.db"'
            assert store in text
            # Room for every admitted call of the test in one sidecar's connection pool.
            text = text.replace('kind = "openai"\n', 'kind = "openai"\nmax_connections = 1024\n')
            text = text.replace(
                store,
                f'[store]\nkind = "jetstream"\nstream = "{STREAM}"\npath = "events.db"\n\n'
                f'[nats]\nservers = ["{nats_url}"]\nreconnect_wait_s = 0.05',
            )
            config = directory / "tollgate.toml"
            config.write_text(text)
            self.configs.append(config)
            self.sockets.append(directory / "s.sock")
        self.hashes = [config_hash(load_config(c)) for c in self.configs]
        self.processes: list[Process] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        """Start the sidecars, wait until each answers, and yield a load over their sockets.

        On exit the load's connections close and any sidecar still running is killed.
        """
        load = Load(self.sockets)
        try:
            for config in self.configs:
                # The log goes to a file: a pipe nobody reads would block the sidecar once full.
                with (config.parent / "sidecar.log").open("ab") as log:
                    self.processes.append(
                        await anyio.open_process(
                            [*TOLLGATE, "--log-level", "INFO", "serve", "--config", str(config)],
                            env=ENV,
                            stdout=subprocess.DEVNULL,
                            stderr=log,
                        )
                    )
            with anyio.fail_after(30):
                for socket in self.sockets:
                    while True:
                        try:
                            await get(socket, "/healthz")
                            break
                        except (aiohttp.ClientError, OSError):
                            await anyio.sleep(0.05)
            yield load
        finally:
            for process in self.processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await load.aclose()

    async def stop(self, indexes: Sequence[int] = (0, 1, 2)) -> None:
        """SIGTERM: requests in flight end (typed), the store flushes, the process exits 0."""
        for i in indexes:
            self.processes[i].send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            for i in indexes:
                assert await self.processes[i].wait() == 0


async def get(socket: Path, path: str) -> Any:
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as s, s.get(f"http://t{path}") as r:
        return await r.json()


class Load:
    """Concurrent chat requests spread over the sidecars' sockets; outcomes by sidecar."""

    def __init__(self, sockets: Sequence[Path]) -> None:
        self.sessions = [
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(s), limit=0))
            for s in sockets
        ]
        # (sidecar, HTTP status, error type or None, request id or None) per finished request.
        self.outcomes: list[tuple[int, int, str | None, str | None]] = []
        self.broken: list[int] = []  # sidecars whose connection broke under a request

    def start(self, tg: TaskGroup, count: int, sidecars: Sequence[int] = (0, 1, 2)) -> None:
        """Start ``count`` requests in ``tg``, spread over ``sidecars`` in turn."""
        for i in range(count):
            tg.start_soon(self.one, sidecars[i % len(sidecars)])

    async def one(self, sidecar: int) -> None:
        session = self.sessions[sidecar]
        try:
            async with session.post("http://t/v1/chat/completions", data=BODY) as response:
                body = msgspec.json.decode(await response.read())
                error = body.get("error", {}).get("type") if response.status != 200 else None
                request_id = response.headers.get("x-tollgate-request-id")
                self.outcomes.append((sidecar, response.status, error, request_id))
        except (aiohttp.ClientError, OSError):
            self.broken.append(sidecar)

    async def aclose(self) -> None:
        for session in self.sessions:
            await session.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_deep_fake() as server:
        yield server


@asynccontextmanager
async def serve_deep_fake() -> AsyncIterator[FakeServer]:
    """The fake OpenAI server, listening with a deep backlog: the admitted calls of three
    sidecars open hundreds of connections at once, past the default backlog of 128 (Linux
    then drops connections, and a call can hang)."""
    app = create_openai_app(FakeOpenAISettings(api_key="fake-key"))
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        port = int(runner.addresses[0][1])
        url = f"http://127.0.0.1:{port}"
        control = FakeOpenAIControl(url)
        try:
            yield FakeServer(url, port, app, control, "/v1")
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05
    )
    try:
        yield client
    finally:
        await client.close()


async def read_stream(nc: Client) -> list[StoredEvent]:
    async with open_jetstream_store(nc, stream=STREAM) as store:
        result: list[StoredEvent] = []
        while page := await store.read(result[-1].seq if result else 0, 1000):
            result.extend(page)
        return result


def hold_of(short_dir: Path, fake: FakeServer) -> int:
    """The worst-case price the boundary holds for one request of this test (alpha, 64 out)."""
    estimate = measure_prompt(msgspec.convert(MESSAGES, list[Message])).estimated_tokens
    prices = PriceTable.from_config(make_config(short_dir, fake.base_url))
    return prices.worst_case_micros("alpha", estimate, 64)


def global_budget(limit_micros: int) -> str:
    return f'[budgets.all]\nscope = "global"\nperiod = "day"\nlimit_usd = {limit_micros / 1e6}\n'


def assert_never_over(log: Sequence[StoredEvent], config: Path) -> BudgetBook:
    """Fold the log event by event; at every point every budget has spent + reserved <= limit."""
    assert [s.seq for s in log] == list(range(1, len(log) + 1))
    book = BudgetBook(budget_specs(load_config(config)))
    keys: set[str] = set()
    for stored in log:
        book.apply(stored.event)
        if isinstance(stored.event, BudgetReserved):
            keys.update(stored.event.budgets)
        for key in keys:
            state = book.state(key)
            assert state.limit_micros is not None
            assert state.spent_micros + state.reserved_micros <= state.limit_micros, (
                stored.seq,
                state,
            )
    return book


def assert_all_released(log: Sequence[StoredEvent], config: Path, limit_micros: int) -> None:
    """Never over the limit (see assert_never_over), and at the end nothing is held."""
    book = assert_never_over(log, config)
    [budget] = book.snapshot().budgets
    assert budget.reserved_micros == 0
    assert budget.spent_micros <= limit_micros


def closed_reservations(log: Sequence[StoredEvent]) -> set[str]:
    return {
        s.event.reservation_id for s in log if isinstance(s.event, CostSettled) and s.event.final
    } | {s.event.reservation_id for s in log if isinstance(s.event, BudgetReservationExpired)}


async def test_three_sidecars_admit_exactly_what_the_shared_budget_allows(
    short_dir: Path, fake: FakeServer, nats_server: NatsServer, nc: Client
) -> None:
    requests, admitted = 3000, 300
    hold = hold_of(short_dir, fake)
    limit = admitted * hold + hold // 2
    cluster = Cluster(
        short_dir,
        fake,
        nats_server.url,
        limit_micros=limit,
        deadline_s=60,
        grace_s=60,
        shutdown_grace_s=0.2,
    )
    # The provider holds every admitted call: all the refusals happen while they hold.
    await fake.control.set_model("alpha-1", ModelBehaviour(ttft_s=60))
    async with cluster.running() as load, anyio.create_task_group() as clients:
        load.start(clients, requests)
        # Every request is answered or held at the provider.
        with anyio.move_on_after(40):
            while len(load.outcomes) + (await fake.control.stats()).requests < requests:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        at_provider = (await fake.control.stats()).requests
        assert (len(load.outcomes), len(load.broken), at_provider) == (
            requests - admitted,
            0,
            admitted,
        )
        assert {(status, error) for _, status, error, _ in load.outcomes} == {
            (429, "budget_exceeded")
        }
        # Every sidecar took requests; the refusals came from all three.
        assert {sidecar for sidecar, *_ in load.outcomes} == {0, 1, 2}
        # Stop them: the held calls get 0.2 s, then end as cancelled and release their
        # holds. (0 would mean no limit: aiohttp waits forever on a zero shutdown timeout.)
        await cluster.stop()
        clients.cancel_scope.cancel()
    log = await read_stream(nc)
    reservations = [s.event for s in log if isinstance(s.event, BudgetReserved)]
    assert len(reservations) == admitted == limit // hold
    assert all(r.amount_micros == hold for r in reservations)
    assert sum(isinstance(s.event, BudgetRefused) for s in log) == requests - admitted
    # Every hold was released when its request ended: nothing is left reserved.
    assert closed_reservations(log) == {r.reservation_id for r in reservations}
    assert_all_released(log, cluster.configs[0], limit)


async def test_a_sidecar_killed_mid_load_leaves_the_others_serving_and_its_holds_expire(
    short_dir: Path, fake: FakeServer, nats_server: NatsServer, nc: Client
) -> None:
    wave, admitted = 300, 150
    hold = hold_of(short_dir, fake)
    limit = admitted * hold + hold // 2
    cluster = Cluster(
        short_dir, fake, nats_server.url, limit_micros=limit, deadline_s=4, grace_s=0.5
    )
    await fake.control.set_model("alpha-1", ModelBehaviour(ttft_s=3))
    async with cluster.running() as load:
        async with anyio.create_task_group() as clients:
            load.start(clients, wave)
            # Once the budget is all held, kill the sidecar holding most of it, with its
            # calls in flight.
            with anyio.fail_after(30):
                while len(reserved := reservations_by(await read_stream(nc))) < admitted:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            by_sidecar = [
                {r for r, h in reserved.items() if h == cluster.hashes[i]} for i in range(3)
            ]
            victim = max(range(3), key=lambda i: len(by_sidecar[i]))
            dead = by_sidecar[victim]
            survivors = [i for i in range(3) if i != victim]
            cluster.processes[victim].send_signal(signal.SIGKILL)
            await cluster.processes[victim].wait()
            # The other two finish their share of the first wave...
            with anyio.fail_after(30):
                while len([o for o in load.outcomes if o[0] != victim]) < wave * 2 // 3:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            # ... and serve a second wave, on what their settled calls left of the budget.
            second = len(load.outcomes)
            load.start(clients, wave, survivors)
        # The dead sidecar's holds expire by policy (deadline + grace), swept by the others.
        with anyio.fail_after(30):
            while not dead <= closed_reservations(await read_stream(nc)):  # noqa: ASYNC110
                await anyio.sleep(0.2)
        await cluster.stop(survivors)
    mine = [o for o in load.outcomes if o[0] != victim]
    assert len(mine) == wave * 2 // 3 + wave
    assert not [b for b in load.broken if b != victim]
    assert {(status, error) for _, status, error, _ in mine} <= {
        (200, None),
        (429, "budget_exceeded"),
    }
    assert any(status == 200 for _, status, _, _ in load.outcomes[second:])

    log = await read_stream(nc)
    expiries = [s.event for s in log if isinstance(s.event, BudgetReservationExpired)]
    # One expiry each, although both sweepers saw them due; stored by the survivors.
    assert dead
    assert sorted(e.reservation_id for e in expiries) == sorted(dead)
    assert {e.config_hash for e in expiries} <= {cluster.hashes[i] for i in survivors}
    # The survivors' own requests settled (none of theirs had to expire).
    assert closed_reservations(log) == set(reservations_by(log))
    assert_all_released(log, cluster.configs[survivors[0]], limit)


def reservations_by(log: Sequence[StoredEvent]) -> dict[str, str]:
    """Reservation id -> the config hash (the sidecar) that made it."""
    return {
        s.event.reservation_id: s.event.config_hash
        for s in log
        if isinstance(s.event, BudgetReserved)
    }


async def test_nats_restarted_mid_load_loses_nothing_acknowledged(
    short_dir: Path, fake: FakeServer, nats_server: NatsServer, nc: Client
) -> None:
    per_wave = 150
    hold = hold_of(short_dir, fake)
    limit = 10_000 * hold  # every request fits: this test is about the restart
    cluster = Cluster(
        short_dir, fake, nats_server.url, limit_micros=limit, deadline_s=30, grace_s=30
    )
    await fake.control.set_model("alpha-1", ModelBehaviour(ttft_s=0.5))
    async with cluster.running() as load, anyio.create_task_group() as clients:
        load.start(clients, per_wave)
        with anyio.fail_after(30):
            while (await fake.control.stats()).requests < per_wave // 2:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        # What the stream holds right before the restart: all of it must survive.
        before = await read_stream(nc)
        assert before
        await anyio.to_thread.run_sync(nats_server.stop)
        # More requests while the server is down (their holds wait for it) and after.
        load.start(clients, per_wave)
        await anyio.sleep(1)
        await anyio.to_thread.run_sync(nats_server.start)
        with anyio.fail_after(40):
            while len(load.outcomes) + len(load.broken) < 2 * per_wave:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        await cluster.stop()
    # Each sidecar lost NATS and reconnected.
    for config in cluster.configs:
        text = (config.parent / "sidecar.log").read_text()
        assert "NATS connection lost" in text
        assert "NATS reconnected" in text
    # Every request ended with a result or a typed error; the sidecars never broke a connection.
    assert not load.broken
    assert all(status == 200 or error for _, status, error, _ in load.outcomes)
    served = {rid for _, status, _, rid in load.outcomes if status == 200}
    assert len(served) > per_wave  # the sidecars served on after the restart
    with anyio.fail_after(20):
        log = await read_stream(nc)
    # Nothing stored before the restart was lost or changed.
    assert log[: len(before)] == before
    # Every answer that was served has its terminal event; every hold was released.
    completed = {s.event.request_id for s in log if isinstance(s.event, RequestCompleted)}
    assert served <= completed
    reservations = {s.event.reservation_id for s in log if isinstance(s.event, BudgetReserved)}
    assert closed_reservations(log) == reservations
    assert served <= reservations  # a reservation's id is its request's id
    assert_never_over(log, cluster.configs[0])
