"""Running a fake server (OpenAI's, or a variant's) on a real TCP port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._client import FakeOpenAIControl
from ._openai import create_openai_app

__all__ = ["FakeOpenAIServer", "serve_app", "serve_fake_openai"]


@dataclass(frozen=True, slots=True)
class FakeOpenAIServer:
    """A running fake: ``url`` is its root, ``control`` scripts it over HTTP."""

    url: str
    port: int
    app: web.Application
    control: FakeOpenAIControl

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as its base URL."""
        return self.url + "/v1"


@contextlib.asynccontextmanager
async def serve_fake_openai(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[FakeOpenAIServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block.

    Handlers are cancelled when their client disconnects, and requests still running at exit
    get ``shutdown_timeout`` seconds to finish.
    """
    async with serve_app(
        create_openai_app(settings), host=host, port=port, shutdown_timeout=shutdown_timeout
    ) as server:
        yield server


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, *, host: str, port: int, shutdown_timeout: float
) -> AsyncIterator[FakeOpenAIServer]:
    """Serve a fake's ``app`` (one with the control API) for the duration of the block."""
    # No access log: formatting a line per request would cost more than the fake's own work.
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = int(runner.addresses[0][1])
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
        control = FakeOpenAIControl(url)
        try:
            yield FakeOpenAIServer(url, bound_port, app, control)
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()
