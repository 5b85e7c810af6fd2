"""The control API under ``/_fake/``: tests script the fake over HTTP, like any other client.

    PUT    /_fake/models/{model}   body: ModelBehaviour fields, overlaid on the server default
    GET    /_fake/models/{model}   the model's effective behaviour
    DELETE /_fake/models/{model}   back to the server default (fault counters re-armed)
    POST   /_fake/reset            every model back to the default; counters and log cleared
    GET    /_fake/stats            FakeStats
    GET    /_fake/requests         {"requests": [LoggedRequest, ...]}, oldest first;
                                   ?model=<m> filters by model

It is not authenticated: the fake is a test double bound to loopback.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from ._http import STATE_KEY, json_response
from ._state import LoggedRequest, overlay

__all__ = ["add_control_routes"]

_json = msgspec.json.Encoder()


class _RequestLog(msgspec.Struct):
    requests: list[LoggedRequest]


def _bad(message: str) -> web.Response:
    return json_response(
        _json.encode({"error": {"message": message, "type": "invalid_request_error"}}), 400
    )


async def _put_model(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        behaviour = overlay(state.settings.default, await request.read())
    except msgspec.MsgspecError as exc:
        return _bad(f"invalid behaviour: {exc}")
    state.put(request.match_info["model"], behaviour)
    return json_response(_json.encode(behaviour))


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return json_response(_json.encode(state.behaviour(request.match_info["model"])))


async def _delete_model(request: web.Request) -> web.Response:
    request.app[STATE_KEY].delete(request.match_info["model"])
    return web.Response(status=204)


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.Response(status=204)


async def _stats(request: web.Request) -> web.Response:
    return json_response(_json.encode(request.app[STATE_KEY].stats))


async def _requests(request: web.Request) -> web.Response:
    model = request.query.get("model")
    log = request.app[STATE_KEY].log
    entries = [e for e in log if model is None or e.model == model]
    return json_response(_json.encode(_RequestLog(entries)))


def add_control_routes(app: web.Application) -> None:
    app.router.add_put("/_fake/models/{model:.+}", _put_model)
    app.router.add_get("/_fake/models/{model:.+}", _get_model)
    app.router.add_delete("/_fake/models/{model:.+}", _delete_model)
    app.router.add_post("/_fake/reset", _reset)
    app.router.add_get("/_fake/stats", _stats)
    app.router.add_get("/_fake/requests", _requests)
