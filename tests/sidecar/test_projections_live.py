"""The projections of a running sidecar, checked against its log: a rebuild equals the live state
byte for byte, the usage totals equal sums over the raw events, the audit timeline of a request
that fell back twice, alerts fired (and not) by real traffic, and /metrics as Prometheus parses it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from e2e_helpers import SidecarFactory, request_events
from prometheus_client.parser import text_string_to_metric_families

from adapters.fakes import FakeOpenAIServer, ModelBehaviour, StatusFault
from events import (
    AlertRaised,
    AttemptFailed,
    AttemptSucceeded,
    BudgetReservationExpired,
    CascadeEscalated,
    CostSettled,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    StoredEvent,
    read_log,
)
from projections import Projections
from sidecar._cli import main
from sidecar._observe import build_projections
from sidecar._service import Sidecar

# A third provider and a class whose members are on three providers, dearest last, so a
# request that falls back twice tops its reservation up twice; and routes that never wait
# to retry, so each failure is one attempt.
EXTRA = """
[providers.third]
kind = "openai"
base_url = "{url}"
api_key_env = "TEST_BACKUP_KEY"

[models.delta]
provider = "third"
id = "delta-1"
context_window = 64000
price = {{ input = 5.0, output = 20.0 }}

[classes.trio]
members = ["alpha", "beta", "delta"]

[routes.trio]
class = "trio"
max_tokens = 64
max_retry_wait_s = 0

[routes.lean]
class = "solo"
max_degrade = 1
max_retry_wait_s = 0

[budgets.all]
scope = "global"
period = "day"
limit_usd = 100

[alerts]
degraded_min_requests = 10
unrouted_min_requests = 10
"""

MESSAGES = [{"role": "user", "content": "Say something short."}]


@contextlib.asynccontextmanager
async def running(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, **options: object
) -> AsyncIterator[tuple[Sidecar, aiohttp.ClientSession]]:
    async with start_sidecar(budgets=EXTRA.format(url=fake.base_url), **options) as sidecar:
        connector = aiohttp.UnixConnector(path=sidecar.socket_path)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield sidecar, session


async def chat(
    session: aiohttp.ClientSession,
    model: str,
    *,
    stream: bool = False,
    tenant: str = "acme",
    task: str | None = None,
) -> tuple[int, str]:
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    headers = {"x-tollgate-tenant": tenant}
    if task is not None:
        headers["x-tollgate-task"] = task
    async with session.post(
        "http://tollgate/v1/chat/completions", json=body, headers=headers
    ) as response:
        await response.read()
        return response.status, response.headers["x-tollgate-request-id"]


async def quiescent(sidecar: Sidecar, requests: int) -> list[StoredEvent]:
    """The whole log once every request has its terminal event and the projections (and any
    alerts they appended) have caught up with it."""
    runner = sidecar.projections
    assert runner is not None
    with anyio.fail_after(20):
        while True:
            log = await sidecar.store.read(0, 1_000_000)
            ended = sum(isinstance(s.event, RequestCompleted | RequestFailed) for s in log)
            if ended >= requests:
                last = log[-1].seq
                await runner.wait_for(last)
                await anyio.sleep(0.1)
                if await sidecar.store.last_seq() == last:
                    return log
            await anyio.sleep(0.02)


def rebuilt(sidecar: Sidecar) -> Projections:
    projections = build_projections(sidecar.config)
    for stored in read_log(sidecar.config.store.path):
        projections.apply(stored)
    return projections


async def mixed_run(session: aiohttp.ClientSession, fake: FakeOpenAIServer) -> int:
    """Traffic over every route, streamed and not, three tenants, faults and fallbacks."""
    await fake.control.set_model(
        "alpha-1",
        ModelBehaviour(
            seed=3,
            faults=(
                StatusFault(status=503, rate=0.2),
                StatusFault(status=429, retry_after_s=0.01, rate=0.1),
                StatusFault(status=500, rate=0.1),
            ),
        ),
    )
    await fake.control.set_model(
        "beta-1", ModelBehaviour(seed=4, faults=(StatusFault(status=500, rate=0.15),))
    )
    rng = random.Random(11)
    routes = ["task:chat", "task:wide", "task:trio", "task:lean", "task:cascade", "task:strict"]
    sent = 0
    async with anyio.create_task_group() as tasks:
        for i in range(120):
            route, tenant = rng.choice(routes), rng.choice(["acme", "globex", "initech"])
            tasks.start_soon(
                functools.partial(chat, session, route, stream=rng.random() < 0.5, tenant=tenant)
            )
            sent += 1
            if i % 20 == 0:
                await anyio.sleep(0.05)
        # Some with a task no route knows: the default route serves them, flagged unrouted.
        for _ in range(5):
            tasks.start_soon(functools.partial(chat, session, "tollgate", task="no-such-task"))
            sent += 1
    return sent


async def test_a_rebuild_equals_the_live_projections_byte_for_byte(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    async with running(start_sidecar, fake) as (sidecar, session):
        sent = await mixed_run(session, fake)
        log = await quiescent(sidecar, sent)
        runner = sidecar.projections
        assert runner is not None
        live = msgspec.msgpack.encode(runner.projections.state())
        kinds = Counter(type(s.event).__name__ for s in log)
        # The run exercised what the projections fold.
        assert kinds["FallbackTaken"] > 0 and kinds["RetryScheduled"] > 0
        assert kinds["AttemptFailed"] > 0 and kinds["CostSettled"] > 0
        assert kinds["TaskUnrouted"] == 5
        assert msgspec.msgpack.encode(rebuilt(sidecar).state()) == live
        # The budget view agrees with the cost boundary's own book.
        assert runner.projections.budgets.snapshot() == sidecar.boundary.book.snapshot()
        position = runner.position
    # On exit the runner checkpointed; restoring it gives the same state again.
    restored = build_projections(sidecar.config)
    assert sidecar.config.store.checkpoint is not None
    restored.restore(await anyio.Path(sidecar.config.store.checkpoint).read_bytes())
    assert restored.position == position
    assert msgspec.msgpack.encode(restored.state()) == live


async def test_usage_totals_equal_sums_over_the_raw_events(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    async with running(start_sidecar, fake) as (sidecar, session):
        sent = await mixed_run(session, fake)
        log = [s.event for s in await quiescent(sidecar, sent)]
        assert sidecar.projections is not None
        usage = sidecar.projections.projections.usage
    [(_, total)] = usage.query(by=())

    def of(kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in log if isinstance(e, kind)]

    settled = of(CostSettled)
    assert total.requests == len(of(RequestCompleted)) + len(of(RequestFailed)) == sent
    assert total.successes == len(of(RequestCompleted))
    assert total.failures == dict(Counter(e.error_type for e in of(RequestFailed)))
    assert total.attempts == len(of(AttemptSucceeded)) + len(of(AttemptFailed))
    assert total.attempt_errors == dict(Counter(e.error_class for e in of(AttemptFailed)))
    assert total.retries == len(of(RetryScheduled))
    assert total.fallbacks == len(of(FallbackTaken))
    assert total.cascade_escalations == len(of(CascadeEscalated))
    assert total.input_tokens == sum(e.usage.input_tokens for e in settled) > 0
    assert total.cached_input_tokens == sum(e.usage.cached_input_tokens for e in settled)
    assert total.output_tokens == sum(e.usage.output_tokens for e in settled) > 0
    assert total.reasoning_tokens == sum(e.usage.reasoning_tokens for e in settled)
    assert total.cost_micros == sum(e.cost_micros for e in settled) + sum(
        e.counted_micros for e in of(BudgetReservationExpired)
    )
    assert total.latency.count == total.requests
    assert total.ttlt.count == total.successes
    # Per tenant, the rows add up to the total too.
    by_tenant = usage.query(by=("tenant",))
    assert {g["tenant"] for g, _ in by_tenant} == {"acme", "globex", "initech"}
    assert sum(r.cost_micros for _, r in by_tenant) == total.cost_micros
    assert sum(r.requests for _, r in by_tenant) == total.requests


async def test_audit_shows_a_request_that_fell_back_twice(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(faults=(StatusFault(status=503),)))
    await fake.control.set_model("beta-1", ModelBehaviour(faults=(StatusFault(status=500),)))
    async with running(start_sidecar, fake, breaker_threshold=1) as (sidecar, session):
        status, request_id = await chat(session, "task:trio")
        assert status == 200
        await request_events(sidecar, request_id)
        async with session.get(f"http://tollgate/admin/audit/{request_id}") as response:
            timeline = await response.json()
        async with session.get("http://tollgate/admin/audit/no-such-request") as response:
            assert response.status == 404
            assert (await response.json())["error"]["type"] == "not_found"
    attempts = [(a["model"], a["outcome"]) for a in timeline["attempts"]]
    assert attempts == [("alpha", "overloaded"), ("beta", "server_error"), ("delta", "succeeded")]
    assert timeline["breakers"] == ["primary: open", "backup: open"]
    assert timeline["served_by"] == "delta (third)"
    assert timeline["outcome"] == "completed"
    types = [e["type"] for e in timeline["entries"]]
    assert types.count("budget_reserved.v1") == 1
    assert types.count("budget_topped_up.v1") == 2
    assert types.count("fallback_taken.v1") == 2
    assert timeline["reserved_micros"] > 0

    # The command prints the same story from the log file, with the sidecar stopped.
    config = Path(sidecar.config.store.path).parent / "tollgate.toml"
    config.write_text(_config_text(sidecar, fake))
    assert main(["audit", request_id, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "attempt 1: alpha (primary) → overloaded HTTP 503" in out
    assert "attempt 2: beta (backup) → server_error HTTP 500" in out
    assert "breakers primary: open; backup: open" in out
    assert "result  completed by delta (third)" in out
    assert "topped up the reservation" in out
    assert main(["audit", "no-such-request", "--config", str(config)]) == 1


def _config_text(sidecar: Sidecar, fake: FakeOpenAIServer) -> str:
    from e2e_helpers import config_text

    return config_text(fake.base_url, budgets=EXTRA.format(url=fake.base_url))


@pytest.mark.parametrize(("failing", "fires"), [(15, True), (4, False)])
async def test_the_degraded_share_alert_fires_only_above_its_threshold(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, failing: int, fires: bool
) -> None:
    # "lean" routes to class solo (alpha) and may degrade to spare (beta): the last
    # ``failing`` of 20 requests find alpha overloaded and are served off the class.
    async with running(start_sidecar, fake) as (sidecar, session):
        served: Counter[str] = Counter()
        for n in range(20):
            if n == 20 - failing:
                fault = StatusFault(status=503, times=failing)
                await fake.control.set_model("alpha-1", ModelBehaviour(faults=(fault,)))
            status, request_id = await chat(session, "task:lean")
            assert status == 200
            events = await request_events(sidecar, request_id)
            served[events[-1].event.model] += 1  # type: ignore[attr-defined]
        assert served == {"beta": failing, "alpha": 20 - failing}
        log = await quiescent(sidecar, 20)
        alerts = [s.event for s in log if isinstance(s.event, AlertRaised)]
        degraded = [a for a in alerts if a.alert == "degraded_share"]
        assert sidecar.projections is not None
        active = {(a.alert, a.subject) for a in sidecar.projections.projections.alerts.active()}
    if fires:
        assert [a.subject for a in degraded] == ["solo"]
        assert degraded[0].value > 0.3 and degraded[0].threshold == 0.3
        assert ("degraded_share", "solo") in active
    else:
        assert degraded == []
        assert ("degraded_share", "solo") not in active


async def test_metrics_are_valid_prometheus_exposition(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    async with running(
        start_sidecar, fake, breaker_threshold=2, server_extra='admin_address = "127.0.0.1:0"'
    ) as (sidecar, session):
        sent = await mixed_run(session, fake)
        await quiescent(sidecar, sent)
        async with session.get("http://tollgate/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = sum(s.value for s in families["tollgate_requests"].samples)
    assert requests == sent
    duration = families["gen_ai_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    counts = [s.value for s in duration.samples if s.name.endswith("_count")]
    assert sum(counts) == sent
    for family in ("tollgate_attempts", "tollgate_tokens", "tollgate_cost_usd"):
        assert families[family].type == "counter" and families[family].samples
    attempt_labels = families["tollgate_attempts"].samples[0].labels
    assert {"gen_ai_provider_name", "gen_ai_response_model", "error_type"} <= set(attempt_labels)
    breaker = {s.labels["tollgate_provider"] for s in families["tollgate_breaker_state"].samples}
    assert "primary" in breaker
    budget = {s.labels["budget"] for s in families["tollgate_budget_limit_usd"].samples}
    assert any(key.startswith("all/") for key in budget)


async def test_the_admin_port_serves_probes_and_metrics_only(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, free_tcp_port: int
) -> None:
    extra = f'admin_address = "127.0.0.1:{free_tcp_port}"'
    async with (
        running(start_sidecar, fake, server_extra=extra) as (_, session),
        aiohttp.ClientSession() as tcp,
    ):
        status, _ = await chat(session, "task:chat")
        assert status == 200
        base = f"http://127.0.0.1:{free_tcp_port}"
        async with tcp.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with tcp.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["ready"] is True
        async with tcp.get(f"{base}/metrics") as response:
            assert "tollgate_requests_total" in await response.text()
        # Nothing that spends money or shows a tenant's requests is reachable over TCP.
        for path in ("/admin/usage", "/admin/budgets", "/admin/audit/x"):
            async with tcp.get(f"{base}{path}") as response:
                assert response.status == 404
        async with tcp.post(f"{base}/v1/chat/completions", json={}) as response:
            assert response.status in (404, 405)


async def test_usage_over_the_admin_api_and_the_command(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(start_sidecar, fake) as (sidecar, session):
        for tenant in ("acme", "acme", "globex"):
            assert (await chat(session, "task:chat", tenant=tenant))[0] == 200
        await quiescent(sidecar, 3)
        async with session.get("http://tollgate/admin/usage?by=tenant") as response:
            report = await response.json()
        async with session.get("http://tollgate/admin/usage?by=bogus") as response:
            assert response.status == 400
    assert [(r["tenant"], r["requests"]) for r in report["rows"]] == [("acme", 2), ("globex", 1)]
    assert report["total"]["requests"] == 3
    config = Path(sidecar.config.store.path).parent / "tollgate.toml"
    config.write_text(_config_text(sidecar, fake))
    assert main(["usage", "--config", str(config), "--by", "tenant", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == report["rows"]
    assert main(["usage", "--config", str(config), "--tenant", "globex", "--by", "model"]) == 0
    table = capsys.readouterr().out
    assert "alpha" in table and "total" in table


async def test_health_fails_once_the_event_log_has_failed(
    start_sidecar: SidecarFactory, fake: FakeOpenAIServer
) -> None:
    async with running(start_sidecar, fake) as (sidecar, session):
        async with session.get("http://tollgate/healthz") as response:
            assert response.status == 200
        # The database refuses every write from now on (a full disk would, too).
        db = sqlite3.connect(sidecar.config.store.path)
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'x'); END"
        )
        db.commit()
        db.close()
        async with session.post(
            "http://tollgate/v1/chat/completions", json={"model": "task:chat", "messages": MESSAGES}
        ) as response:
            assert response.status == 503
            assert (await response.json())["error"]["type"] == "log_unavailable"
        for path in ("/healthz", "/readyz"):
            async with session.get(f"http://tollgate{path}") as response:
                assert response.status == 503
