"""aiohttp plumbing shared by the fake's routes: app keys, headers, error responses, hangs, and
the :class:`Dialect` that a provider's variant of the fake overrides."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time

import msgspec
from aiohttp import web

from ._answer import AnswerPlan
from ._behaviour import (
    DropFault,
    ErrorPreset,
    Fault,
    HangBeforeFirstTokenFault,
    ModelBehaviour,
    StatusFault,
)
from ._errors import (
    PRESETS,
    ErrorContext,
    Preset,
    error_payload,
    preset_for_status,
    redact_key,
)
from ._state import UNKNOWN_MODEL, FakeState
from ._wire import ChunkEncoder, completion_body

__all__ = [
    "DIALECT_KEY",
    "IDS_KEY",
    "STATE_KEY",
    "Dialect",
    "Ids",
    "auth_error_response",
    "auth_failure",
    "base_headers",
    "bearer_key",
    "error_response",
    "hang",
    "json_response",
    "loggable_body",
    "model_named_in",
    "retry_headers",
    "send_whole",
    "stamp_processing_time",
    "wait_for_generation",
]


class Ids:
    """Unique response ids: a random per-server prefix and a counter, so no per-request RNG."""

    __slots__ = ("_prefix",)

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)

    def request_id(self, seq: int) -> str:
        return f"req_{self._prefix}{seq:016x}"

    def completion_id(self, seq: int) -> str:
        return f"chatcmpl-F{self._prefix[:12]}{seq:016x}"


STATE_KEY = web.AppKey("tollgate_fake_openai_state", FakeState)
IDS_KEY = web.AppKey("tollgate_fake_openai_ids", Ids)

_OPENAI_VERSION = "2020-10-01"
_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def base_headers(
    request_id: str, started: float, extra: dict[str, str] | None = None
) -> dict[str, str]:
    headers = {
        "x-request-id": request_id,
        "openai-version": _OPENAI_VERSION,
        "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
    }
    if extra:
        headers.update(extra)
    return headers


def stamp_processing_time(headers: dict[str, str], started: float) -> None:
    """Refresh ``openai-processing-ms`` after a scripted delay, so it covers the delay."""
    headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def error_response(
    preset: Preset | ErrorPreset,
    ctx: ErrorContext,
    headers: dict[str, str],
    *,
    status: int | None = None,
    message: str | None = None,
) -> web.Response:
    p = PRESETS[preset] if isinstance(preset, str) else preset
    return web.Response(
        body=error_payload(p, ctx, message),
        status=status if status is not None else p.status,
        headers=headers,
        content_type="text/html" if p.html else "application/json",
    )


def bearer_key(request: web.BaseRequest) -> str:
    """The key in ``Authorization: Bearer <key>``, or "" when there is none."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def auth_failure(request: web.Request, expected: str | None) -> tuple[str | None, str] | None:
    """None when the request may proceed; else (message override, key hint) for a 401.

    A missing or non-Bearer header gets OpenAI's "You didn't provide an API key" wording;
    a wrong key gets ``invalid_api_key`` with the key redacted.
    """
    if expected is None:
        return None
    key = bearer_key(request)
    if not key:
        return _NO_KEY_MESSAGE, ""
    if hmac.compare_digest(key.encode(), expected.encode()):
        return None
    return None, redact_key(key)


def auth_error_response(failure: tuple[str | None, str], headers: dict[str, str]) -> web.Response:
    message, key_hint = failure
    if message is not None:
        # No key at all: OpenAI answers 401 without an error code.
        missing = Preset(401, "invalid_request_error", None, None, message)
        return error_response(missing, ErrorContext(), headers)
    return error_response("invalid_api_key", ErrorContext(key_hint=key_hint), headers)


class Dialect:
    """The provider-specific parts of the Chat Completions fake; these defaults are OpenAI's.

    A provider whose API is a variant of Chat Completions (xAI) subclasses it and keeps the
    rest: request checks, answer planning, streaming, faults, the control API.
    """

    def preset(self, name: ErrorPreset) -> Preset:
        """The status and wording of a named error."""
        return PRESETS[name]

    def fault_preset(self, fault: StatusFault) -> Preset:
        """The error a :class:`StatusFault` asks for: its named one, else the usual one for its
        status (whose own ``status`` still wins over the preset's)."""
        return self.preset(fault.error or preset_for_status(fault.status or 500))

    def error_body(
        self, preset: Preset, ctx: ErrorContext, message: str | None, status: int
    ) -> bytes:
        """The body of an error response with ``status`` (``message`` replaces the wording)."""
        return error_payload(preset, ctx, message)

    def error_response(
        self,
        preset: Preset | ErrorPreset,
        ctx: ErrorContext,
        headers: dict[str, str],
        *,
        status: int | None = None,
        message: str | None = None,
    ) -> web.Response:
        p = self.preset(preset) if isinstance(preset, str) else preset
        code = status if status is not None else p.status
        return web.Response(
            body=self.error_body(p, ctx, message, code),
            status=code,
            headers=headers,
            content_type="text/html" if p.html else "application/json",
        )

    def error_event(self, name: ErrorPreset, ctx: ErrorContext, message: str | None) -> bytes:
        """The JSON of a mid-stream error event."""
        preset = self.preset(name)
        if preset.html:  # an HTML page cannot be an SSE event: use the generic server error
            preset = self.preset("server_error")
        return self.error_body(preset, ctx, message, preset.status)

    def auth_error(
        self, request: web.Request, expected: str | None, headers: dict[str, str]
    ) -> web.Response | None:
        """None when the request's credentials pass; else the error response for them."""
        failure = auth_failure(request, expected)
        return None if failure is None else auth_error_response(failure, headers)

    def key_hint(self, key: str) -> str:
        """A presented key as the provider echoes it in an error: never the whole of it."""
        return redact_key(key)

    def completion_id(self, ids: Ids, seq: int) -> str:
        return ids.completion_id(seq)

    def chunk_encoder(
        self, completion_id: str, created: int, model: str, include_usage: bool
    ) -> ChunkEncoder:
        return ChunkEncoder(completion_id, created, model, include_usage)

    def completion_body(
        self, completion_id: str, created: int, model: str, plan: AnswerPlan
    ) -> bytes:
        return completion_body(completion_id, created, model, plan)


DIALECT_KEY = web.AppKey("tollgate_fake_dialect", Dialect)


async def hang(request: web.BaseRequest, state: FakeState) -> bool:
    """Wait until the client goes away (False) or the server stops (True).

    Checks the transport as well as relying on handler cancellation, so a hang also ends
    under runners that keep handlers running after a disconnect.
    """
    while not state.stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), 0.25)
    return True


class _ModelOnly(msgspec.Struct):
    model: str = UNKNOWN_MODEL


def model_named_in(body: bytes) -> str:
    """The model an invalid request body names, for the counters (``<unknown>`` if none)."""
    try:
        return msgspec.json.decode(body, type=_ModelOnly).model
    except msgspec.MsgspecError:
        return UNKNOWN_MODEL


def loggable_body(body: bytes) -> bytes:
    """``body`` if it is valid JSON, else JSON null: only valid JSON may be embedded as Raw."""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return b"null"
    return body


def retry_headers(fault: StatusFault, headers: dict[str, str]) -> None:
    """Add the retry hints a :class:`StatusFault` scripts, as OpenAI and Anthropic send them."""
    if fault.retry_after_s is not None:
        headers["retry-after"] = f"{fault.retry_after_s:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = "true" if fault.should_retry else "false"


async def wait_for_generation(behaviour: ModelBehaviour, fault: Fault | None, pieces: int) -> bool:
    """Before a non-streamed answer: wait as long as generating its ``pieces`` would take
    (unless the fault hangs instead); True when it waited."""
    delay = behaviour.ttft_s + behaviour.chunk_delay_s * max(pieces - 1, 0)
    if delay and not isinstance(fault, HangBeforeFirstTokenFault):
        await asyncio.sleep(delay)
        return True
    return False


async def send_whole(
    request: web.Request, body: bytes, headers: dict[str, str], fault: Fault | None
) -> web.StreamResponse:
    """A non-streamed answer (``headers`` carry its Content-Type). A drop fault sends half the
    body and closes the connection; a hang sends the headers, then hangs."""
    if not isinstance(fault, DropFault | HangBeforeFirstTokenFault):
        return web.Response(body=body, headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if isinstance(fault, HangBeforeFirstTokenFault):
        await hang(request, request.app[STATE_KEY])
    else:
        await resp.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return resp
