"""The fake Gemini (generativelanguage) server: application and runner.

Scripted exactly like the OpenAI fake: the same settings struct, :class:`ModelBehaviour` and
fault structs, the same ``/_fake/`` control API and :class:`FakeOpenAIControl` client, the same
deterministic answers and token rule (see ``_gemini_request`` for how a Gemini request maps
onto it). Only the wire encoding is Gemini's. How the shared vocabulary reads in Gemini terms:

* ``StatusFault``: the Gemini error for the preset or status (``rate_limit_exceeded``: 429
  with a per-minute ``QuotaFailure``; ``insufficient_quota``: a per-day one;
  ``invalid_api_key``: 400 ``API_KEY_INVALID``; ...). ``retry_after_s``/``retry_after_ms``
  become ``RetryInfo.retryDelay`` (a 429 always has one, 1 s by default); Gemini sends no
  ``retry-after`` header, so only ``headers`` adds one; ``should_retry`` is ignored.
* ``MidStreamErrorFault``: ``data: {"error": {...}}`` then EOF. ``NoDoneFault``: the last
  chunk without ``finishReason``. ``MalformedSSEFault``: a broken ``data:`` line.
* ``ContentFilterFault``: ``finishReason: SAFETY`` after ``after_chunks`` chunks; with
  ``after_chunks=0`` the prompt itself is blocked (HTTP 200, ``promptFeedback.blockReason``).
* ``reasoning_tokens`` are ``thoughtsTokenCount`` (capped by ``thinkingBudget``; thoughts are
  sent as a summary part when ``includeThoughts`` is set), ``cached_prompt_tokens`` are
  ``cachedContentTokenCount``, ``context_window`` gives Gemini's input-token-count 400.
* Stream-only faults apply to ``alt=sse`` streams, not to the JSON-array stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._client import FakeOpenAIControl
from ._control import add_control_routes
from ._gemini_generate import generate_content
from ._http import IDS_KEY, STATE_KEY, Ids
from ._state import FakeState

__all__ = ["FakeGeminiServer", "create_gemini_app", "serve_fake_gemini"]


async def _release_hangs(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()


def create_gemini_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake Gemini server application (its own state) for any aiohttp runner.

    Routes: ``POST /{v1|v1beta}/models/{model}:generateContent`` and
    ``:streamGenerateContent`` (``?alt=sse`` for SSE, else a JSON array), and the control API
    under ``/_fake/``. ``settings.api_key``, when set, must come as ``x-goog-api-key`` or
    ``?key=``; ``settings.models``, when set, are the only models that exist.
    """
    settings = settings or FakeOpenAISettings()
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[STATE_KEY] = FakeState(settings)
    app[IDS_KEY] = Ids()
    # The model may contain '/', so the target is everything after models/ (up to the method).
    app.router.add_post("/{version:v1|v1beta}/models/{target:.+}", generate_content)
    add_control_routes(app)
    app.on_shutdown.append(_release_hangs)
    return app


@dataclass(frozen=True, slots=True)
class FakeGeminiServer:
    """A running fake: ``url`` is its root, ``control`` scripts it over HTTP."""

    url: str
    port: int
    app: web.Application
    control: FakeOpenAIControl

    @property
    def base_url(self) -> str:
        """What ``GeminiAdapter`` and google-genai's ``HttpOptions.base_url`` take: the root;
        the API version goes in the path."""
        return self.url


@contextlib.asynccontextmanager
async def serve_fake_gemini(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[FakeGeminiServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block."""
    app = create_gemini_app(settings)
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
            yield FakeGeminiServer(url, bound_port, app, control)
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()
