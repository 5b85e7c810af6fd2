"""``POST /v1/messages`` (and ``/v1/messages/count_tokens``): checks, then a fault or the answer.

Order of checks: authentication (``x-api-key``, or ``Authorization: Bearer`` as SDK ≥ 2.0
sends it; x-api-key wins when both are present), the ``anthropic-version`` header, the body,
the model, the context window; only a valid request reaches (and consumes) the faults.
"""

from __future__ import annotations

import asyncio
import hmac

import msgspec
from aiohttp import web

from ._answer import AnswerPlan, UnknownToolChoice, answer_words, plan_answer
from ._anthropic_errors import AnthropicError, error_body, fault_error
from ._anthropic_request import (
    API_VERSIONS,
    Invalid,
    MessagesRequest,
    cache_split,
    parse_request,
    validate,
)
from ._anthropic_stream import write_stream
from ._anthropic_wire import Answer, EventEncoder, message_body
from ._behaviour import (
    ContentFilterFault,
    Fault,
    HangBeforeHeadersFault,
    StatusFault,
)
from ._http import (
    IDS_KEY,
    STATE_KEY,
    bearer_key,
    hang,
    json_response,
    loggable_body,
    model_named_in,
    retry_headers,
    send_whole,
    wait_for_generation,
)
from ._prompt import answer_seed
from ._state import LoggedRequest

__all__ = ["count_tokens", "messages"]

# Logged with the key masked: tests see which auth style a client used, never the key.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key"})
_ORGANIZATION = "6c3f2a8e-0d1b-4c5e-9f7a-7011a7e0fa4e"
_DEFAULT_WINDOW = 200_000


def _error(error: AnthropicError, request_id: str, headers: dict[str, str]) -> web.Response:
    return json_response(error_body(error, request_id), error.status, headers)


def _invalid(message: str, request_id: str, headers: dict[str, str]) -> web.Response:
    return _error(AnthropicError(400, "invalid_request_error", message), request_id, headers)


def _auth_failure(request: web.Request, expected: str | None) -> AnthropicError | None:
    if expected is None:
        return None
    key = request.headers.get("x-api-key") or bearer_key(request)
    if not key:
        return AnthropicError(401, "authentication_error", "x-api-key header is required")
    if hmac.compare_digest(key.encode(), expected.encode()):
        return None
    return AnthropicError(401, "authentication_error", "invalid x-api-key")


def _version_failure(request: web.Request) -> str | None:
    version = request.headers.get("anthropic-version")
    if version is None:
        return "anthropic-version: header is required"
    if version not in API_VERSIONS:
        return f"anthropic-version: invalid version '{version}'"
    return None


def _loggable(name: str, value: str) -> str:
    if name.lower() not in _SECRET_HEADERS:
        return value
    scheme, sep, _ = value.partition(" ")
    return f"{scheme} [redacted]" if sep and name.lower() == "authorization" else "[redacted]"


def _read(body: bytes) -> tuple[MessagesRequest | Invalid, str]:
    try:
        req = parse_request(body)
    except Invalid as exc:
        return exc, model_named_in(body)
    return req, req.model


def _headers(request_id: str, extra: dict[str, str]) -> dict[str, str]:
    headers = {"request-id": request_id, "anthropic-organization-id": _ORGANIZATION}
    headers.update(extra)
    return headers


def _outcome(fault: Fault | None) -> str:
    if fault is None:
        return "ok"
    if isinstance(fault, StatusFault):
        status = fault.status or fault_error(fault, model="", prompt=0, window=0).status
        return f"http_{status}"
    return str(fault.__struct_config__.tag)


def _apply_stop(plan: AnswerPlan, stops: list[str] | None) -> str | None:
    """Cut a text answer before the first stop sequence it contains; return that sequence."""
    if not stops or plan.tool_call is not None:
        return None
    text = plan.text
    found = [(text.find(s), s) for s in stops if s and s in text]
    if not found:
        return None
    cut, sequence = min(found)
    pieces: list[str] = []
    tokens: list[int] = []
    start = 0
    for piece, count in zip(plan.pieces, plan.piece_tokens, strict=True):
        end = start + len(piece)
        if end <= cut:
            pieces.append(piece)
            tokens.append(count)
        else:
            kept = piece[: cut - start]
            if kept:
                pieces.append(kept)
                tokens.append(len(kept.split()) or 1)
            break
        start = end
    plan.pieces[:] = pieces
    plan.piece_tokens[:] = tokens
    return sequence


def _thinking(plan: AnswerPlan, seed: int) -> str | None:
    """A short shown summary of the hidden reasoning the behaviour scripts, if any."""
    if not plan.reasoning_tokens:
        return None
    return " ".join(answer_words(seed ^ 0x7E1A, min(plan.reasoning_tokens, 12))).capitalize() + "."


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    settings = state.settings
    seq = state.next_seq()
    request_id = request.app[IDS_KEY].request_id(seq)
    body = await request.read()
    req, model = _read(body)
    stream = isinstance(req, MessagesRequest) and bool(req.stream)

    entry: LoggedRequest | None = None
    if settings.request_log_size:
        headers_seen = {k: _loggable(k, v) for k, v in request.headers.items()}
        # Validity is checked on the (rare) invalid path only.
        raw = msgspec.Raw(body if isinstance(req, MessagesRequest) else loggable_body(body))
        entry = LoggedRequest(seq, request_id, model, stream, "pending", headers_seen, raw)
    settle = state.track(model, entry)

    behaviour = state.behaviour(model)
    headers = _headers(request_id, behaviour.headers)
    auth = _auth_failure(request, settings.api_key)
    if auth is not None:
        settle("http_401")
        return _error(auth, request_id, headers)
    version_problem = _version_failure(request)
    if version_problem is not None:
        settle("http_400")
        return _invalid(version_problem, request_id, headers)
    version = request.headers["anthropic-version"]
    if isinstance(req, Invalid):
        settle("http_400")
        return _invalid(req.message, request_id, headers)
    try:
        limit = validate(req, version)
    except Invalid as exc:
        settle("http_400")
        return _invalid(exc.message, request_id, headers)
    if settings.models and model not in settings.models:
        settle("http_404")
        return _error(
            AnthropicError(404, "not_found_error", f"model: {model}"), request_id, headers
        )

    chat, split = cache_split(req, behaviour.cached_prompt_tokens)
    try:
        plan = plan_answer(chat, behaviour, limit)
    except UnknownToolChoice as exc:  # validate() already checks; kept as a guard
        settle("http_400")
        return _invalid(f"tool_choice: Tool '{exc}' not found in tools.", request_id, headers)
    window = behaviour.context_window
    if window is not None and split.total > window:
        settle("http_400")
        message = f"prompt is too long: {split.total} tokens > {window} maximum"
        return _invalid(message, request_id, headers)

    fault = state.model(model).pick_fault(stream)
    settle(_outcome(fault))
    if isinstance(fault, HangBeforeHeadersFault):
        stopped = await hang(request, state)
        error = (
            AnthropicError(529, "overloaded_error", "Overloaded")
            if stopped
            else (AnthropicError(500, "api_error", "Internal server error"))
        )
        return _error(error, request_id, headers)
    if behaviour.header_delay_s:
        await asyncio.sleep(behaviour.header_delay_s)
    if isinstance(fault, StatusFault):
        retry_headers(fault, headers)
        headers.update(fault.headers)
        error = fault_error(
            fault, model=model, prompt=split.total, window=window or _DEFAULT_WINDOW
        )
        return _error(error, request_id, headers)

    stop_sequence = _apply_stop(plan, req.stop_sequences)
    if isinstance(fault, ContentFilterFault):
        plan.cut(fault.after_chunks, "content_filter")
        stop_sequence = None
    answer = Answer(plan, split, stop_sequence, _thinking(plan, answer_seed(chat)))
    message_id = "msg_01" + request_id.removeprefix("req_")
    if stream:
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(headers=headers)
        enc = EventEncoder(message_id, model, answer)
        await write_stream(request, resp, state, answer, enc, behaviour, fault, request_id)
        return resp
    body = message_body(message_id, model, answer)
    # Sent once the generation it stands for would be done.
    await wait_for_generation(behaviour, fault, len(plan.pieces))
    return await send_whole(request, body, {**headers, "Content-Type": "application/json"}, fault)


async def count_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the input tokens a Messages request would bill."""
    state = request.app[STATE_KEY]
    request_id = request.app[IDS_KEY].request_id(state.next_seq())
    headers = _headers(request_id, {})
    auth = _auth_failure(request, state.settings.api_key)
    if auth is not None:
        return _error(auth, request_id, headers)
    version_problem = _version_failure(request)
    if version_problem is not None:
        return _invalid(version_problem, request_id, headers)
    req, model = _read(await request.read())
    if isinstance(req, Invalid):
        return _invalid(req.message, request_id, headers)
    if state.settings.models and model not in state.settings.models:
        return _error(
            AnthropicError(404, "not_found_error", f"model: {model}"), request_id, headers
        )
    # The total, caching aside: count_tokens does not know what a later request will read.
    _, split = cache_split(req, 0)
    return json_response(msgspec.json.encode({"input_tokens": split.total}), headers=headers)
