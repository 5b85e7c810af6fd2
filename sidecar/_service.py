"""Assembly: config in, a serving sidecar out (store, adapters, executor, transports)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import TypedDict

import anyio
import msgspec
from aiohttp import web

from adapters import (
    Adapter,
    AnthropicAdapter,
    GeminiAdapter,
    OpenAIAdapter,
    OpenAICompatibleAdapter,
    XAIAdapter,
)
from events import EventStore, open_jetstream_store, open_sqlite_store
from projections import ProjectionRunner

from ._admin import add_admin_routes, add_observability_routes
from ._boundary import CostBoundary
from ._config import Config, ProviderConfig, config_hash
from ._executor import Executor
from ._http import LISTEN_BACKLOG, bind_unix_socket, create_app
from ._nats import NatsTransport, serve_nats
from ._nats_connect import NatsLink, open_nats_link
from ._observe import build_projections
from ._secrets import resolve_api_key

__all__ = ["Sidecar", "build_adapter", "open_sidecar"]


class Sidecar(msgspec.Struct, frozen=True):
    config: Config
    config_hash: str
    socket_path: str
    store: EventStore
    boundary: CostBoundary
    # The NATS transport, when ``nats.enabled``.
    nats: NatsTransport | None = None
    # Usage, alerts and budgets folded from the log (metrics, ``/admin/usage``, alerts).
    projections: ProjectionRunner | None = None


class _Transport(TypedDict):
    """What every adapter takes, whatever its provider."""

    base_url: str
    api_key: str | None
    connect_timeout_s: float
    max_connections: int


def build_adapter(name: str, provider: ProviderConfig, api_key: str | None) -> Adapter:
    """The adapter for the provider's kind; nothing else differs between providers."""
    common = _Transport(
        base_url=provider.base_url,
        api_key=api_key,
        connect_timeout_s=provider.connect_timeout_s,
        max_connections=provider.max_connections,
    )
    match provider.kind:
        case "openai":
            field = provider.max_tokens_field or "max_completion_tokens"
            return OpenAIAdapter(name, max_tokens_field=field, **common)
        case "openai_compatible":
            field = provider.max_tokens_field or "max_tokens"
            return OpenAICompatibleAdapter(name, max_tokens_field=field, **common)
        case "xai":
            return XAIAdapter(name, **common)
        case "anthropic":
            return AnthropicAdapter(name, api_version=provider.api_version, **common)
        case "gemini":
            return GeminiAdapter(name, api_version=provider.api_version, **common)


def _open_store(
    config: Config, link: NatsLink | None
) -> contextlib.AbstractAsyncContextManager[EventStore]:
    """The event log: the embedded SQLite file, or the deployment's JetStream stream on the
    sidecar's NATS connection (which ``open_nats_link`` has made before returning)."""
    if config.store.kind != "jetstream":
        return open_sqlite_store(config.store.path)
    assert link is not None
    assert link.client is not None
    return open_jetstream_store(
        link.client, stream=config.store.stream, replicas=config.store.replicas
    )


SWEEP_INTERVAL_S = 1.0
FORGET_AFTER_NS = 86_400 * 10**9


@contextlib.asynccontextmanager
async def _projecting(runner: ProjectionRunner) -> AsyncIterator[None]:
    """Fold the log into the projections while the sidecar serves (checkpointed on exit)."""
    await runner.load_checkpoint()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _admin_listener(
    config: Config, runner: ProjectionRunner, store: EventStore
) -> AsyncIterator[None]:
    """The optional TCP listener for probes and scrapers (``server.admin_address``)."""
    address = config.server.admin_address
    if address is None:
        yield
        return
    host, _, port = address.rpartition(":")
    app = web.Application()
    add_observability_routes(app, config, runner, store, probes_only=True)
    admin = web.AppRunner(app, access_log=None, handle_signals=False)
    await admin.setup()
    try:
        await web.TCPSite(admin, host.strip("[]"), int(port)).start()
        yield
    finally:
        await admin.cleanup()


@contextlib.asynccontextmanager
async def _sweeping(boundary: CostBoundary, store: EventStore, digest: str) -> AsyncIterator[None]:
    """Expire reservations past their time, every second, while the sidecar serves."""

    async def sweep() -> None:
        while True:
            now = time.time_ns()
            events = boundary.expire_due(now, digest)
            if events:
                await store.append(events)
            # Closed reservations are remembered only to ignore a late copy of their events;
            # a day is far past any redelivery, so memory stays bounded.
            boundary.book.forget(now - FORGET_AFTER_NS)
            await anyio.sleep(SWEEP_INTERVAL_S)

    async with anyio.create_task_group() as tasks:
        # On a shared JetStream stream the budget book follows every sidecar's budget events
        # and decides holds; with one sidecar this returns at once.
        tasks.start_soon(boundary.run)
        tasks.start_soon(sweep)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def open_sidecar(
    config: Config, *, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Sidecar]:
    """Start serving ``config`` on its Unix socket; stop gracefully on exit.

    Keys are resolved first, so a missing key fails start-up before anything listens.
    """
    env = os.environ if environ is None else environ
    keys = {name: resolve_api_key(name, p, env) for name, p in config.providers.items()}
    adapters = {name: build_adapter(name, p, keys[name]) for name, p in config.providers.items()}
    digest = config_hash(config)
    server = config.server
    try:
        async with (
            open_nats_link(config, env) as link,
            _open_store(config, link) as store,
        ):
            boundary = await CostBoundary.open(config, store)
            executor = Executor(config, digest, adapters, store, boundary)
            app = create_app(
                executor,
                max_body_bytes=server.max_body_bytes,
                default_tenant=server.default_tenant,
            )
            add_admin_routes(app, boundary, store, digest)
            projections = ProjectionRunner(
                store,
                build_projections(config),
                checkpoint_path=config.store.checkpoint,
                checkpoint_interval_s=config.store.checkpoint_interval_s,
            )
            add_observability_routes(app, config, projections, store)
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                # aiohttp reads a zero timeout as "no limit": a grace of 0 means almost none.
                shutdown_timeout=max(server.shutdown_grace_s, 0.001),
            )
            await runner.setup()
            bound = False
            try:
                sock = bind_unix_socket(server.socket, server.socket_mode)
                bound = True
                # aiohttp listens again with its own backlog: give it ours.
                await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
                async with (
                    _sweeping(boundary, store, digest),
                    _projecting(projections),
                    serve_nats(link, executor, config) as nats,
                    _admin_listener(config, projections, store),
                ):
                    yield Sidecar(config, digest, server.socket, store, boundary, nats, projections)
            finally:
                # Stops accepting, lets requests in flight finish (up to the grace period), and
                # only then is the store closed, so their terminal events are written.
                await runner.cleanup()
                if bound:
                    await anyio.Path(server.socket).unlink(missing_ok=True)
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
