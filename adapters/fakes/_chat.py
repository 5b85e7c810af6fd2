"""``POST /v1/chat/completions``: checks in OpenAI's order, then a fault or the answer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import msgspec
from aiohttp import web

from ._answer import UnknownToolChoice, plan_answer
from ._behaviour import (
    ContentFilterFault,
    Fault,
    HangBeforeHeadersFault,
    StatusFault,
)
from ._errors import ErrorContext, Preset, go_duration, preset_for_status
from ._http import (
    DIALECT_KEY,
    IDS_KEY,
    STATE_KEY,
    Dialect,
    base_headers,
    bearer_key,
    hang,
    loggable_body,
    model_named_in,
    retry_headers,
    send_whole,
    stamp_processing_time,
    wait_for_generation,
)
from ._prompt import ChatRequest
from ._state import LoggedRequest
from ._stream import write_stream

__all__ = ["chat_completions"]

_decoder = msgspec.json.Decoder(ChatRequest)

_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, visit "
    "https://platform.openai.com/docs/guides/error-codes/api-errors.)"
)


class _Invalid(Exception):
    """A request OpenAI would reject with a 400 ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.preset = Preset(400, "invalid_request_error", param, code, message)


def _parse(body: bytes) -> ChatRequest:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "missing required field `model`" in text:
            raise _Invalid("you must provide a model parameter") from None
        if "missing required field `messages`" in text:
            raise _Invalid(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            ) from None
        param = text.rpartition("at `$.")[2].rstrip("`") if "at `$." in text else None
        raise _Invalid(f"Invalid request: {text}", param, "invalid_type") from None
    except msgspec.DecodeError:
        raise _Invalid(_BAD_JSON) from None


def _max_tokens(req: ChatRequest) -> int | None:
    for name, value in (
        ("max_completion_tokens", req.max_completion_tokens),
        ("max_tokens", req.max_tokens),
    ):
        if value is not None:
            if value < 1:
                raise _Invalid(
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                    f"but got {value} instead.",
                    name,
                    "integer_below_min_value",
                )
            return value
    return None


def _validate(req: ChatRequest) -> int | None:
    """Reject what OpenAI (or this fake's limits) would; return the max completion tokens."""
    if not req.messages:
        raise _Invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    if req.n is not None and req.n != 1:
        # OpenAI supports n > 1; this fake answers one choice only, and says so.
        raise _Invalid("This fake server only supports n=1.", "n", "unsupported_value")
    return _max_tokens(req)


def _status_response(
    dialect: Dialect, fault: StatusFault, ctx: ErrorContext, headers: dict[str, str]
) -> web.Response:
    preset_name = fault.error or preset_for_status(fault.status or 500)
    retry_headers(fault, headers)
    if preset_name == "rate_limit_exceeded":
        headers["x-ratelimit-limit-requests"] = "500"
        headers["x-ratelimit-remaining-requests"] = "0"
        headers["x-ratelimit-reset-requests"] = ctx.retry
    headers.update(fault.headers)
    return dialect.error_response(
        dialect.fault_preset(fault), ctx, headers, status=fault.status, message=fault.message
    )


def _retry_text(fault: Fault | None) -> str:
    if isinstance(fault, StatusFault):
        if fault.retry_after_ms is not None:
            return go_duration(fault.retry_after_ms / 1000)
        if fault.retry_after_s is not None:
            return go_duration(fault.retry_after_s)
    return "1s"


def _outcome(dialect: Dialect, fault: Fault | None) -> str:
    if fault is None:
        return "ok"
    if isinstance(fault, StatusFault):
        status = fault.status or dialect.fault_preset(fault).status
        return f"http_{status}"
    return str(fault.__struct_config__.tag)


def _read(body: bytes) -> tuple[ChatRequest | _Invalid, str]:
    """The request (or why it is invalid) and the model it names, for the counters."""
    try:
        req = _parse(body)
    except _Invalid as exc:
        return exc, model_named_in(body)
    return req, req.model


def _log(
    request: web.Request, seq: int, request_id: str, model: str, stream: bool, body: bytes
) -> LoggedRequest:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    return LoggedRequest(seq, request_id, model, stream, "pending", headers, msgspec.Raw(body))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    state = request.app[STATE_KEY]
    dialect = request.app[DIALECT_KEY]
    settings = state.settings
    seq = state.next_seq()
    request_id = request.app[IDS_KEY].request_id(seq)
    body = await request.read()
    req, model = _read(body)
    stream = isinstance(req, ChatRequest) and bool(req.stream)

    entry: LoggedRequest | None = None
    if settings.request_log_size:
        # Validity is checked on the (rare) invalid path only.
        logged = body if isinstance(req, ChatRequest) else loggable_body(body)
        entry = _log(request, seq, request_id, model, stream, logged)
    settle = state.track(model, entry)

    behaviour = state.behaviour(model)
    headers = base_headers(request_id, started, behaviour.headers)
    # OpenAI's order: authentication, the request itself, then the model.
    denied = dialect.auth_error(request, settings.api_key, headers)
    if denied is not None:
        settle(f"http_{denied.status}")
        return denied
    if isinstance(req, _Invalid):
        settle("http_400")
        return dialect.error_response(req.preset, ErrorContext(), headers)
    if settings.models and model not in settings.models:
        settle("http_404")
        return dialect.error_response("model_not_found", ErrorContext(model=model), headers)

    try:
        limit = _validate(req)
        plan = plan_answer(req, behaviour, limit)
    except _Invalid as exc:
        settle("http_400")
        return dialect.error_response(exc.preset, ErrorContext(), headers)
    except UnknownToolChoice as exc:
        settle("http_400")
        message = f"Invalid value for 'tool_choice': function '{exc}' is not among the tools."
        return dialect.error_response(
            Preset(400, "invalid_request_error", "tool_choice", "invalid_value", message),
            ErrorContext(),
            headers,
        )

    window = behaviour.context_window
    ctx = ErrorContext(
        model=model,
        prompt_tokens=plan.prompt_tokens,
        context_window=window or 128000,
    )
    if window is not None and plan.prompt_tokens > window:
        settle("http_400")
        return dialect.error_response("context_length_exceeded", ctx, headers)

    # Only a valid request reaches the faults, so an invalid one never consumes them.
    fault = state.model(model).pick_fault(stream)
    settle(_outcome(dialect, fault))
    if isinstance(fault, HangBeforeHeadersFault):
        stopped = await hang(request, state)
        return dialect.error_response("overloaded" if stopped else "server_error", ctx, headers)
    if behaviour.header_delay_s:
        await asyncio.sleep(behaviour.header_delay_s)
        stamp_processing_time(headers, started)
    if isinstance(fault, StatusFault):
        # key_hint serves a scripted bad-key error: the presented key, redacted as the
        # provider does.
        ctx = replace(ctx, retry=_retry_text(fault), key_hint=dialect.key_hint(bearer_key(request)))
        return _status_response(dialect, fault, ctx, headers)
    if isinstance(fault, ContentFilterFault):
        plan.cut(fault.after_chunks, "content_filter")

    completion_id = dialect.completion_id(request.app[IDS_KEY], seq)
    created = int(time.time())
    if stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        enc = dialect.chunk_encoder(completion_id, created, model, include_usage)
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(headers=headers)
        await write_stream(
            request, resp, state, plan, enc, behaviour, fault, include_usage, ctx, dialect
        )
        return resp
    body = dialect.completion_body(completion_id, created, model, plan)
    # Sent once the generation it stands for would be done.
    if await wait_for_generation(behaviour, fault, len(plan.pieces)):
        stamp_processing_time(headers, started)
    return await send_whole(request, body, {**headers, "Content-Type": "application/json"}, fault)
