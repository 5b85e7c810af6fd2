"""The fake Anthropic Messages server: the application and running it on a TCP port.

It shares the OpenAI fake's machinery, so both are scripted the same way: the same settings
struct, per-model ``ModelBehaviour`` and ``*Fault`` structs, answers and token rule, counters,
request log and ``/_fake/`` control API (``FakeOpenAIControl`` is its client). Only the wire
encoding is Anthropic's (``_anthropic_*`` modules; shared reference §3 and §9).

Usage: ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens`` is the shared
rule's ``prompt_tokens`` for the conversation the request stands for (split as described in
``_anthropic_request``); ``output_tokens`` is the shared answer's completion tokens, thinking
included (``reasoning_tokens``, shown as a short thinking block and reported in
``output_tokens_details.thinking_tokens``). Stop sequences cut a text answer where they occur.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ._anthropic_messages import count_tokens, messages
from ._behaviour import FakeOpenAISettings
from ._client import FakeOpenAIControl
from ._control import add_control_routes
from ._http import IDS_KEY, STATE_KEY, Ids
from ._state import FakeState

__all__ = ["FakeAnthropicServer", "create_anthropic_app", "serve_fake_anthropic"]


async def _release_hangs(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()


def create_anthropic_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake Anthropic application (its own state) for any aiohttp runner.

    Routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and the control API
    under ``/_fake/``. ``settings.api_key``, when set, must come as ``x-api-key`` or as
    ``Authorization: Bearer``.
    """
    settings = settings or FakeOpenAISettings()
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[STATE_KEY] = FakeState(settings)
    app[IDS_KEY] = Ids()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    add_control_routes(app)
    app.on_shutdown.append(_release_hangs)
    return app


@dataclass(frozen=True, slots=True)
class FakeAnthropicServer:
    """A running fake: ``url`` is its root, ``control`` scripts it over HTTP."""

    url: str
    port: int
    app: web.Application
    control: FakeOpenAIControl

    @property
    def base_url(self) -> str:
        """What ``AnthropicAdapter`` and ``anthropic.AsyncAnthropic`` take: the root, no /v1."""
        return self.url


@contextlib.asynccontextmanager
async def serve_fake_anthropic(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[FakeAnthropicServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block."""
    app = create_anthropic_app(settings)
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
            yield FakeAnthropicServer(url, bound_port, app, control)
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()
