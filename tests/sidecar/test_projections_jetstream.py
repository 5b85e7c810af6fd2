"""Projections over a JetStream log shared by two sidecars: each sidecar's usage view covers
both sidecars' requests, equals a rebuild, and the commands read the stream too."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from e2e_helpers import config_text
from nats_server import NatsServer

from adapters.fakes import FakeOpenAIServer
from events import RequestCompleted
from sidecar._cli import main
from sidecar._config import Config, parse_config
from sidecar._observe import build_projections
from sidecar._service import Sidecar, open_sidecar

ENV = {"TEST_PROVIDER_KEY": "fake-key", "TEST_BACKUP_KEY": "fake-key"}


def jetstream_config_text(fake: FakeOpenAIServer, nats_server: NatsServer) -> str:
    text = config_text(fake.base_url).replace(
        "[store]\n",
        '[store]\nkind = "jetstream"\nstream = "TG_PROJ"\ncheckpoint_interval_s = 0.2\n',
    )
    return text + f'\n[nats]\nservers = ["{nats_server.url}"]\n'


def config_in(directory: Path, text: str) -> Config:
    directory.mkdir()
    (directory / "tollgate.toml").write_text(text)
    return parse_config(text, base_dir=directory)


async def ask(sidecar: Sidecar, tenant: str) -> None:
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tollgate/v1/chat/completions",
            json={"model": "task:chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-tollgate-tenant": tenant},
        ) as response,
    ):
        assert response.status == 200


async def caught_up(sidecar: Sidecar, requests: int) -> None:
    runner = sidecar.projections
    assert runner is not None
    with anyio.fail_after(20):
        while True:
            log = await sidecar.store.read(0, 100_000)
            if sum(isinstance(s.event, RequestCompleted) for s in log) >= requests:
                await runner.wait_for(log[-1].seq)
                return
            await anyio.sleep(0.05)


async def test_each_sidecar_projects_the_whole_shared_log(
    short_dir: Path,
    fake: FakeOpenAIServer,
    nats_server: NatsServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = jetstream_config_text(fake, nats_server)
    one, two = config_in(short_dir / "a", text), config_in(short_dir / "b", text)
    async with (
        open_sidecar(one, environ=ENV) as first,
        open_sidecar(two, environ=ENV) as second,
    ):
        for _ in range(3):
            await ask(first, "acme")
        for _ in range(2):
            await ask(second, "globex")
        for sidecar in (first, second):
            await caught_up(sidecar, 5)
        views = []
        for sidecar in (first, second):
            assert sidecar.projections is not None
            usage = sidecar.projections.projections.usage
            views.append({g["tenant"]: r.requests for g, r in usage.query(by=("tenant",))})
            # Live equals a rebuild from the stream, at the same position.
            rebuilt = build_projections(sidecar.config)
            for stored in await sidecar.store.read(0, 100_000):
                if stored.seq <= sidecar.projections.position:
                    rebuilt.apply(stored)
            assert msgspec.msgpack.encode(rebuilt.state()) == msgspec.msgpack.encode(
                sidecar.projections.projections.state()
            )
        assert views == [{"acme": 3, "globex": 2}] * 2
        request_id = next(
            s.event.request_id
            for s in await first.store.read(0, 1000)
            if isinstance(s.event, RequestCompleted) and s.event.tenant == "globex"
        )

    # The commands read the stream, on a connection of their own.
    config = str(short_dir / "a" / "tollgate.toml")
    usage = ["usage", "--config", config, "--by", "tenant", "--json"]
    assert await anyio.to_thread.run_sync(main, usage) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["tenant"], r["requests"]) for r in report["rows"]] == [("acme", 3), ("globex", 2)]
    assert await anyio.to_thread.run_sync(main, ["audit", request_id, "--config", config]) == 0
    assert "completed by alpha" in capsys.readouterr().out
    tail = ["tail", "--config", config, "--from-start", "--type", "request_completed"]
    assert await anyio.to_thread.run_sync(main, [*tail, "--count", "5", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert await anyio.to_thread.run_sync(main, ["budget", "--config", config]) == 0
    assert "From the JetStream stream TG_PROJ." in capsys.readouterr().out
