"""``POST /{v1|v1beta}/models/{model}:generateContent`` and ``:streamGenerateContent``.

Checks in Gemini's order (the key, the body, the model, the prompt), then a fault or the
answer. The answer and its token counts come from the shared planner, so a Gemini model
scripted with a :class:`~adapters.fakes.ModelBehaviour` behaves like an OpenAI one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import msgspec
from aiohttp import web

from ._answer import AnswerPlan, UnknownToolChoice, plan_answer
from ._behaviour import (
    ContentFilterFault,
    Fault,
    HangBeforeHeadersFault,
    ModelBehaviour,
    StatusFault,
)
from ._gemini_errors import (
    GeminiErrorContext,
    GeminiErrorSpec,
    error_body,
    fault_error,
    preset_error,
)
from ._gemini_request import GeminiInvalid, GeminiRequest, as_chat_request, parse_gemini_request
from ._gemini_stream import write_gemini_stream
from ._gemini_wire import GeminiEncoder, Step, answer_steps, thought_signature
from ._http import IDS_KEY, STATE_KEY, hang, loggable_body, send_whole, wait_for_generation
from ._state import LoggedRequest

__all__ = ["generate_content"]

_METHODS = frozenset({"generateContent", "streamGenerateContent"})
# Credentials never reach the request log.
_SECRET_HEADERS = frozenset({"x-goog-api-key", "authorization"})
_NO_KEY = GeminiErrorSpec(
    403,
    "PERMISSION_DENIED",
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
)
_NO_METHOD = GeminiErrorSpec(404, "NOT_FOUND", "Method not found.")
_JSON = "application/json; charset=UTF-8"


def _error(
    spec: GeminiErrorSpec,
    ctx: GeminiErrorContext,
    headers: dict[str, str],
    *,
    status: int | None = None,
    message: str | None = None,
) -> web.Response:
    body, content_type = error_body(spec, ctx, status=status, message=message)
    headers = {**headers, "Content-Type": content_type}
    return web.Response(body=body, status=status or spec.http, headers=headers)


def _invalid(message: str, headers: dict[str, str]) -> web.Response:
    spec = GeminiErrorSpec(400, "INVALID_ARGUMENT", message)
    return _error(spec, GeminiErrorContext(), headers)


def _auth_failure(request: web.Request, expected: str | None) -> GeminiErrorSpec | None:
    """None if the request may proceed. The key may come as a header or as ``?key=``."""
    if expected is None:
        return None
    key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    if not key:
        return _NO_KEY
    if hmac.compare_digest(key.encode(), expected.encode()):
        return None
    return preset_error("invalid_api_key")


def _response_id(request_id: str) -> str:
    digest = hashlib.blake2b(request_id.encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _outcome(fault: Fault | None) -> str:
    if fault is None:
        return "ok"
    if isinstance(fault, StatusFault):
        return f"http_{fault_error(fault)[1]}"
    return str(fault.__struct_config__.tag)


def _retry_s(fault: StatusFault, spec: GeminiErrorSpec) -> float | None:
    if fault.retry_after_ms is not None:
        return fault.retry_after_ms / 1000
    if fault.retry_after_s is not None:
        return fault.retry_after_s
    # Gemini's 429s always say when to come back.
    return 1.0 if spec.kind in ("rate", "daily") else None


def _thinking(behaviour: ModelBehaviour, req: GeminiRequest) -> tuple[ModelBehaviour, bool]:
    """The behaviour under the request's thinkingConfig, and whether to send thoughts.

    ``thinkingBudget`` caps the reasoning tokens (0 turns thinking off, -1 is dynamic);
    ``thinkingLevel`` is accepted and changes nothing here.
    """
    config = req.generation_config.thinking_config if req.generation_config else None
    if config is None:
        return behaviour, False
    budget = config.thinking_budget
    if budget is not None and budget >= 0 and budget < behaviour.reasoning_tokens:
        behaviour = msgspec.structs.replace(behaviour, reasoning_tokens=budget)
    return behaviour, bool(config.include_thoughts) and behaviour.reasoning_tokens > 0


async def generate_content(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    settings = state.settings
    seq = state.next_seq()
    request_id = request.app[IDS_KEY].request_id(seq)
    version = request.match_info["version"]
    model, _, method = request.match_info["target"].rpartition(":")
    stream = method == "streamGenerateContent"
    sse = stream and request.query.get("alt") == "sse"
    body = await request.read()

    entry: LoggedRequest | None = None
    if settings.request_log_size:
        headers_seen = {
            k: v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS
        }
        raw = msgspec.Raw(loggable_body(body))
        entry = LoggedRequest(seq, request_id, model, stream, "pending", headers_seen, raw)
    settle = state.track(model, entry)

    behaviour = state.behaviour(model)
    headers = {"Vary": "Origin, X-Origin, Referer", **behaviour.headers}
    ctx = GeminiErrorContext(model=model, version=version)
    # Gemini's order: the key, the method, the body, the model.
    failure = _auth_failure(request, settings.api_key)
    if failure is not None:
        settle(f"http_{failure.http}")
        return _error(failure, ctx, headers)
    if method not in _METHODS:
        settle("http_404")
        return _error(_NO_METHOD, ctx, headers)
    try:
        req = parse_gemini_request(body)
    except GeminiInvalid as exc:
        settle("http_400")
        return _invalid(str(exc), headers)
    if settings.models and model not in settings.models:
        settle("http_404")
        return _error(preset_error("model_not_found"), ctx, headers)

    behaviour, thoughts = _thinking(behaviour, req)
    limit = req.generation_config.max_output_tokens if req.generation_config else None
    try:
        plan = plan_answer(as_chat_request(model, req), behaviour, limit)
    except GeminiInvalid as exc:
        settle("http_400")
        return _invalid(str(exc), headers)
    except UnknownToolChoice as exc:
        settle("http_400")
        return _invalid(f"Function name '{exc}' is not declared in tools.", headers)

    window = behaviour.context_window
    ctx = GeminiErrorContext(
        model=model,
        version=version,
        prompt_tokens=plan.prompt_tokens,
        context_window=window or 1048576,
    )
    if window is not None and plan.prompt_tokens > window:
        settle("http_400")
        return _error(preset_error("context_length_exceeded"), ctx, headers)

    # Only a valid request reaches the faults, so an invalid one never consumes them.
    fault = state.model(model).pick_fault(sse)
    settle(_outcome(fault))
    if isinstance(fault, HangBeforeHeadersFault):
        stopped = await hang(request, state)
        return _error(preset_error("overloaded" if stopped else "server_error"), ctx, headers)
    if behaviour.header_delay_s:
        await asyncio.sleep(behaviour.header_delay_s)
    if isinstance(fault, StatusFault):
        spec, status = fault_error(fault)
        ctx = GeminiErrorContext(
            model=model,
            version=version,
            prompt_tokens=plan.prompt_tokens,
            context_window=ctx.context_window,
            retry_s=_retry_s(fault, spec),
        )
        return _error(spec, ctx, {**headers, **fault.headers}, status=status, message=fault.message)

    encoder = GeminiEncoder(model, _response_id(request_id), plan)
    if isinstance(fault, ContentFilterFault):
        if fault.after_chunks == 0:
            # Blocked before any output: Gemini blocks the prompt itself (HTTP 200).
            return _send(encoder.prompt_blocked(), sse, stream, headers)
        plan.cut(fault.after_chunks, "content_filter")
    signature = thought_signature(request_id) if plan.reasoning_tokens else None
    steps = answer_steps(plan, signature)
    if sse:
        headers["Content-Type"] = "text/event-stream"
        resp = web.StreamResponse(headers=headers)
        await write_gemini_stream(
            request, resp, state, encoder, steps, behaviour, fault, ctx, thoughts
        )
        return resp
    return await _whole(request, encoder, plan, steps, behaviour, fault, stream, thoughts, headers)


def _send(payload: bytes, sse: bool, stream: bool, headers: dict[str, str]) -> web.Response:
    """A one-object answer in the framing the endpoint uses."""
    if sse:
        body = b"data: " + payload + b"\r\n\r\n"
        return web.Response(body=body, headers={**headers, "Content-Type": "text/event-stream"})
    body = b"[" + payload + b"]" if stream else payload
    return web.Response(body=body, headers={**headers, "Content-Type": _JSON})


async def _whole(
    request: web.Request,
    encoder: GeminiEncoder,
    plan: AnswerPlan,
    steps: list[Step],
    behaviour: ModelBehaviour,
    fault: Fault | None,
    stream: bool,
    thoughts: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A non-streamed answer (or the stream endpoint's JSON array without ``alt=sse``), sent
    once the generation it stands for would be done."""
    await wait_for_generation(behaviour, fault, len(plan.pieces))
    if stream:
        chunks = [encoder.thought_chunk()] if thoughts else []
        generated = 0
        for i, step in enumerate(steps):
            generated += step.tokens
            chunks.append(encoder.chunk(step, generated, finish=i == len(steps) - 1))
        body = b"[" + b",\r\n".join(chunks) + b"]"
    else:
        body = encoder.whole(steps, thoughts)
    return await send_whole(request, body, {**headers, "Content-Type": _JSON}, fault)
