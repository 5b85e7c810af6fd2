"""The fake OpenAI application: Chat Completions, the model list and the control API.

:func:`create_app` builds it for any :class:`~._http.Dialect`; the xAI fake is this application
with xAI's dialect.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from ._behaviour import FakeOpenAISettings
from ._chat import chat_completions
from ._control import add_control_routes
from ._errors import ErrorContext
from ._http import (
    DIALECT_KEY,
    IDS_KEY,
    STATE_KEY,
    Dialect,
    Ids,
    base_headers,
    json_response,
)
from ._state import FakeState

__all__ = ["create_app", "create_openai_app"]

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


async def _release_hangs(app: web.Application) -> None:
    app[STATE_KEY].stopping.set()


def create_openai_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake OpenAI server application (its own state) for any aiohttp runner.

    Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{model}``,
    and the control API under ``/_fake/`` (see ``_control``).
    """
    return create_app(settings or FakeOpenAISettings(), Dialect())


def create_app(settings: FakeOpenAISettings, dialect: Dialect) -> web.Application:
    """The Chat Completions fake speaking ``dialect``, with its own state."""
    # Bodies over the limit get aiohttp's own 413 (what a fronting proxy sends), uncounted.
    app = web.Application(client_max_size=settings.max_request_bytes)
    app[STATE_KEY] = FakeState(settings)
    app[IDS_KEY] = Ids()
    app[DIALECT_KEY] = dialect
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model:.+}", _get_model)
    add_control_routes(app)
    app.on_shutdown.append(_release_hangs)
    return app
