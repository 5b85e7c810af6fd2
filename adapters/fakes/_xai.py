"""The fake xAI server: the Chat Completions fake speaking xAI's dialect (reference §5, §9).

Everything but the dialect is shared with the OpenAI fake: the answer rules (token counts,
word cycle, tool calls), ``ModelBehaviour`` and the fault structs, the control API under
``/_fake/`` and its client. What xAI changes:

* completion ids are UUIDs;
* usage: ``completion_tokens`` excludes reasoning, ``total_tokens`` includes it,
  ``completion_tokens_details.reasoning_tokens`` and ``num_sources_used`` are reported;
* every error is flat, ``{"code": "<gRPC status text>", "error": "<message>"}``, and so is a
  ``MidStreamErrorFault``'s data event;
* a wrong key is a **400** "Incorrect API key provided: xa***yz. ..." (a missing one a 401);
  spent credits (``error="insufficient_quota"``) a **403**, or a 429 with ``status=429``; a
  content-policy refusal is ``StatusFault(status=403, message="Content violates usage
  guidelines.")``; a model outside ``settings.models`` gets xAI's 404 for a retired model.

Drop, malformed-SSE, no-[DONE], hang and content-filter faults behave as for OpenAI.
"""

from __future__ import annotations

import hmac
import uuid
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from ._answer import AnswerPlan
from ._behaviour import ErrorPreset, FakeOpenAISettings, StatusFault
from ._errors import ErrorContext, Preset
from ._http import Dialect, Ids, bearer_key
from ._openai import create_app
from ._server import FakeServer, serve_app
from ._wire import ChunkEncoder
from ._xai_errors import (
    XAI_PRESETS,
    XAI_STATUS_PRESETS,
    flat_error_body,
    xai_key_hint,
)
from ._xai_wire import XAIChunkEncoder, xai_completion_body

__all__ = ["XAIDialect", "create_xai_app", "serve_fake_xai"]


class XAIDialect(Dialect):
    def preset(self, name: ErrorPreset) -> Preset:
        return XAI_PRESETS[name]

    def fault_preset(self, fault: StatusFault) -> Preset:
        if fault.error is None and fault.status in XAI_STATUS_PRESETS:
            return XAI_STATUS_PRESETS[fault.status]
        return super().fault_preset(fault)

    def error_body(
        self, preset: Preset, ctx: ErrorContext, message: str | None, status: int
    ) -> bytes:
        return flat_error_body(preset, ctx, message, status)

    def auth_error(
        self, request: web.Request, expected: str | None, headers: dict[str, str]
    ) -> web.Response | None:
        if expected is None:
            return None
        key = bearer_key(request)
        if not key:
            return self.error_response(XAI_STATUS_PRESETS[401], ErrorContext(), headers)
        if hmac.compare_digest(key.encode(), expected.encode()):
            return None
        # xAI answers a wrong key with a 400, not a 401.
        ctx = ErrorContext(key_hint=xai_key_hint(key))
        return self.error_response("invalid_api_key", ctx, headers)

    def key_hint(self, key: str) -> str:
        return xai_key_hint(key)

    def completion_id(self, ids: Ids, seq: int) -> str:
        return str(uuid.uuid4())

    def chunk_encoder(
        self, completion_id: str, created: int, model: str, include_usage: bool
    ) -> ChunkEncoder:
        return XAIChunkEncoder(completion_id, created, model, include_usage)

    def completion_body(
        self, completion_id: str, created: int, model: str, plan: AnswerPlan
    ) -> bytes:
        return xai_completion_body(completion_id, created, model, plan)


def create_xai_app(settings: FakeOpenAISettings | None = None) -> web.Application:
    """A fresh fake xAI application (its own state) for any aiohttp runner.

    Routes as the OpenAI fake's: ``POST /v1/chat/completions``, ``GET /v1/models[/{model}]``
    and the control API under ``/_fake/``.
    """
    return create_app(settings or FakeOpenAISettings(), XAIDialect())


def serve_fake_xai(
    settings: FakeOpenAISettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
) -> AbstractAsyncContextManager[FakeServer]:
    """Serve a fresh fake xAI on ``host:port`` (0: a free port) for the duration of the block;
    ``base_url`` is what an OpenAI client (or :class:`~adapters.XAIAdapter`) takes."""
    return serve_app(
        create_xai_app(settings),
        api_path="/v1",
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
    )
