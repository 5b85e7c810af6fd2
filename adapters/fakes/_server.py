"""A fake's application skeleton and running it on a real TCP port (every provider's fake)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._client import FakeOpenAIControl
from ._control import add_control_routes
from ._http import IDS_KEY, STATE_KEY, Ids
from ._state import FakeState

__all__ = ["FakeServer", "new_fake_app", "serve_app"]


async def _release_hangs(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()


def new_fake_app(settings: FakeOpenAISettings) -> web.Application:
    """An application with its own fake state, the control API under ``/_fake/`` and hangs
    released on shutdown; the provider's module adds its routes."""
    # Bodies over the limit get aiohttp's own 413 (what a fronting proxy sends), uncounted.
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[STATE_KEY] = FakeState(settings)
    app[IDS_KEY] = Ids()
    add_control_routes(app)
    app.on_shutdown.append(_release_hangs)
    return app


@dataclass(frozen=True, slots=True)
class FakeServer:
    """A running fake: ``url`` is its root, ``control`` scripts it over HTTP."""

    url: str
    port: int
    app: web.Application
    control: FakeOpenAIControl
    # Where the provider's API sits under the root: "/v1" for Chat Completions, "" for
    # Anthropic (its paths carry /v1) and Gemini (the API version is in the path).
    api_path: str = ""

    @property
    def base_url(self) -> str:
        """What the provider's clients (SDK or adapter) take as their base URL."""
        return self.url + self.api_path


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, *, api_path: str, host: str, port: int, shutdown_timeout: float
) -> AsyncIterator[FakeServer]:
    """Serve a fake's ``app`` on ``host:port`` (0: a free port) for the duration of the block.

    Handlers are cancelled when their client disconnects, and requests still running at exit
    get ``shutdown_timeout`` seconds to finish.
    """
    # No access log: formatting a line per request would cost more than the fake's own work.
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        # A burst of connections (load tests) must queue, not be refused: the default is 128.
        await web.TCPSite(runner, host, port, backlog=4096).start()
        bound_port = int(runner.addresses[0][1])
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
        control = FakeOpenAIControl(url)
        try:
            yield FakeServer(url, bound_port, app, control, api_path)
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()
