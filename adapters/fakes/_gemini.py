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

from contextlib import AbstractAsyncContextManager

from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._gemini_generate import generate_content
from ._server import FakeServer, new_fake_app, serve_app

__all__ = ["create_gemini_app", "serve_fake_gemini"]


def create_gemini_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake Gemini server application (its own state) for any aiohttp runner.

    Routes: ``POST /{v1|v1beta}/models/{model}:generateContent`` and
    ``:streamGenerateContent`` (``?alt=sse`` for SSE, else a JSON array), and the control API
    under ``/_fake/``. ``settings.api_key``, when set, must come as ``x-goog-api-key`` or
    ``?key=``; ``settings.models``, when set, are the only models that exist.
    """
    app = new_fake_app(settings or FakeOpenAISettings())
    # The model may contain '/', so the target is everything after models/ (up to the method).
    app.router.add_post("/{version:v1|v1beta}/models/{target:.+}", generate_content)
    return app


def serve_fake_gemini(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AbstractAsyncContextManager[FakeServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block;
    ``base_url`` is what ``GeminiAdapter`` and google-genai's ``HttpOptions.base_url`` take:
    the root, the API version goes in the path."""
    return serve_app(
        create_gemini_app(settings),
        api_path="",
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
    )
