"""The fake OpenAI server: Chat Completions, the model list and the control API.

:func:`create_app` builds it for any :class:`~._http.Dialect`; the xAI fake is this application
with xAI's dialect.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager

import msgspec
from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._chat import chat_completions
from ._errors import ErrorContext
from ._http import DIALECT_KEY, IDS_KEY, STATE_KEY, Dialect, base_headers, json_response
from ._server import FakeServer, new_fake_app, serve_app

__all__ = ["create_app", "create_openai_app", "serve_fake_openai"]

_json = msgspec.json.Encoder()
_MODEL_CREATED = 1_700_000_000


class _Model(msgspec.Struct, frozen=True):
    id: str
    object: str = "model"
    created: int = _MODEL_CREATED
    owned_by: str = "tollgate-fake"


class _ModelList(msgspec.Struct, frozen=True):
    data: list[_Model]
    object: str = "list"


async def _list_models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    headers = base_headers(request.app[IDS_KEY].request_id(state.next_seq()), time.monotonic())
    denied = request.app[DIALECT_KEY].auth_error(request, state.settings.api_key, headers)
    if denied is not None:
        return denied
    models = [_Model(m) for m in state.known_models()]
    return json_response(_json.encode(_ModelList(models)), headers=headers)


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    dialect = request.app[DIALECT_KEY]
    headers = base_headers(request.app[IDS_KEY].request_id(state.next_seq()), time.monotonic())
    denied = dialect.auth_error(request, state.settings.api_key, headers)
    if denied is not None:
        return denied
    model = request.match_info["model"]
    if state.settings.models and model not in state.settings.models:
        return dialect.error_response("model_not_found", ErrorContext(model=model), headers)
    return json_response(_json.encode(_Model(model)), headers=headers)


def create_openai_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake OpenAI server application (its own state) for any aiohttp runner.

    Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{model}``,
    and the control API under ``/_fake/`` (see ``_control``).
    """
    return create_app(settings or FakeOpenAISettings(), Dialect())


def create_app(settings: FakeOpenAISettings, dialect: Dialect) -> web.Application:
    """The Chat Completions fake speaking ``dialect``, with its own state."""
    app = new_fake_app(settings)
    app[DIALECT_KEY] = dialect
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _get_model)
    return app


def serve_fake_openai(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AbstractAsyncContextManager[FakeServer]:
    """Serve a fresh fake on ``host:port`` (0: a free port) for the duration of the block;
    ``base_url`` (the root + ``/v1``) is what an OpenAI client takes."""
    return serve_app(
        create_openai_app(settings),
        api_path="/v1",
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
    )
