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

from contextlib import AbstractAsyncContextManager

from aiohttp import web

from ._anthropic_messages import count_tokens, messages
from ._behaviour import FakeOpenAISettings
from ._server import FakeServer, new_fake_app, serve_app

__all__ = ["create_anthropic_app", "serve_fake_anthropic"]


def create_anthropic_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake Anthropic application (its own state) for any aiohttp runner.

    Routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and the control API
    under ``/_fake/``. ``settings.api_key``, when set, must come as ``x-api-key`` or as
    ``Authorization: Bearer``.
    """
    app = new_fake_app(settings or FakeOpenAISettings())
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    return app


def serve_fake_anthropic(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AbstractAsyncContextManager[FakeServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block;
    ``base_url`` is what ``AnthropicAdapter`` and ``anthropic.AsyncAnthropic`` take: the root,
    no /v1."""
    return serve_app(
        create_anthropic_app(settings),
        api_path="",
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
    )
