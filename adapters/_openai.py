"""OpenAI Chat Completions over aiohttp (shared reference, provider protocols §2)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec
import yarl

from ._chunks import Chunk, Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageReport
from ._errors import ErrorClass, ProviderError, error_text, looks_like_context_overflow
from ._http import HTTPAdapter, UpstreamCall, drain
from ._request import ChatRequest, Message, TextPart
from ._retry_after import parse_retry_after, parse_wait_in_message
from ._sse import SSEDecoder

__all__ = ["OpenAIAdapter", "classify_openai_error"]

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _WireFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _WireToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _WireFunction | None = None


class _WireDelta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChunkChoice(msgspec.Struct):
    delta: _WireDelta | None = None
    finish_reason: str | None = None


class _WireChunk(msgspec.Struct):
    choices: list[_WireChunkChoice] = []
    usage: _WireUsage | None = None
    # A mid-stream failure arrives as a data event with an "error" member (HTTP status 200).
    error: Any = None


class _WireMessage(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChoice(msgspec.Struct):
    message: _WireMessage
    finish_reason: str | None = None


class _WireCompletion(msgspec.Struct):
    choices: list[_WireChoice]
    usage: _WireUsage | None = None


_decode_chunk = msgspec.json.Decoder(_WireChunk).decode
_decode_completion = msgspec.json.Decoder(_WireCompletion).decode
_encode = msgspec.json.Encoder().encode


def classify_openai_error(
    status: int | None, error_type: str | None, code: str | None, message: str
) -> tuple[ErrorClass, bool]:
    """Map an OpenAI error to the taxonomy; returns (class, is_quota_exhaustion).

    ``status`` is None for an error that arrived inside a 200 stream. The order matters: an
    overflow and a quota exhaustion share status codes with errors that must be handled apart.
    """
    if code == "context_length_exceeded" or looks_like_context_overflow(message):
        return ErrorClass.CONTEXT_OVERFLOW, False
    if status in (401, 403):
        return ErrorClass.AUTH, False
    if "insufficient_quota" in (code, error_type):
        return ErrorClass.RATE_LIMITED, True
    if code == "invalid_prompt":
        return ErrorClass.CONTENT_FILTERED, False
    if status is None:
        if code == "rate_limit_exceeded":
            return ErrorClass.RATE_LIMITED, False
        if "overloaded" in message.lower():
            return ErrorClass.OVERLOADED, False
        return ErrorClass.SERVER_ERROR, False
    if status == 429:
        return ErrorClass.RATE_LIMITED, False
    if status in (408, 504):
        return ErrorClass.TIMEOUT, False
    if status == 503:
        return ErrorClass.OVERLOADED, False
    if status == 404:
        return ErrorClass.NOT_FOUND, False
    if status >= 500 or status == 409:
        return ErrorClass.SERVER_ERROR, False
    return ErrorClass.BAD_REQUEST, False


class OpenAIAdapter(HTTPAdapter):
    """Chat Completions, streamed or not."""

    # xAI counts reasoning outside completion_tokens; OpenAI counts it inside.
    completion_excludes_reasoning = False

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str | None = None,
        max_tokens_field: str = "max_completion_tokens",
        connect_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        super().__init__(
            provider,
            base_url=base_url,
            api_key=api_key,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )
        # Parsed once: aiohttp would parse a string URL on every request.
        self._url = yarl.URL(self._base_url + "/chat/completions")
        self._max_tokens_field = max_tokens_field

    def _prepare(self, request: ChatRequest) -> UpstreamCall:
        body: dict[str, Any] = dict(request.params)
        body["model"] = request.model
        body["messages"] = _without_cache_control(request.messages)
        body[self._max_tokens_field] = request.max_tokens
        body["stream"] = request.stream
        if request.stream:
            options = body.get("stream_options")
            merged = dict(options) if isinstance(options, dict) else {}
            # Without it a stream reports no usage and its cost would be unknown.
            merged["include_usage"] = True
            body["stream_options"] = merged
        return UpstreamCall(self._url, _encode(body))

    async def _whole(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        raw = await self._read_body(response)
        try:
            completion = _decode_completion(raw)
        except msgspec.DecodeError as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, f"malformed response body: {exc}", after=True
            ) from exc
        chunks: list[Chunk] = []
        if completion.choices:
            choice = completion.choices[0]
            message = choice.message
            if message.content:
                chunks.append(TextDelta(message.content))
            for index, call in enumerate(message.tool_calls or ()):
                function = call.function or _WireFunction()
                chunks.append(
                    ToolCallDelta(
                        index=index,
                        id=call.id,
                        name=function.name,
                        arguments=function.arguments or "",
                    )
                )
            chunks.append(self._finish(choice.finish_reason, refused=bool(message.refusal)))
        if completion.usage is not None:
            chunks.append(UsageReport(self._usage(completion.usage)))
        yield chunks

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[Chunk], None]:
        decoder = SSEDecoder()
        usage: _WireUsage | None = None
        refused = False
        try:
            async for data in response.content.iter_any():
                batch: list[Chunk] = []
                failure: ProviderError | None = None
                for event in decoder.feed(data):
                    if event.data.startswith("[DONE]"):
                        # The usage chunk precedes [DONE]; some servers repeat it, so the
                        # last one seen wins.
                        if usage is not None:
                            batch.append(UsageReport(self._usage(usage)))
                        yield batch
                        await drain(response)
                        return
                    try:
                        chunk = _decode_chunk(event.data)
                    except msgspec.DecodeError as exc:
                        failure = self._error(
                            ErrorClass.SERVER_ERROR,
                            f"malformed stream event: {exc}",
                            code="malformed_sse",
                            after=True,
                        )
                        break
                    if chunk.error is not None:
                        failure = self._stream_error(event.data)
                        break
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices[:1]:
                        refused = self._choice_chunks(choice, batch) or refused
                        if choice.finish_reason is not None:
                            batch.append(self._finish(choice.finish_reason, refused=refused))
                if batch:
                    # What arrived before a failure is still delivered, then the failure.
                    yield batch
                if failure is not None:
                    raise failure
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR, "connection lost mid-stream", after=True
            ) from exc
        raise self._error(
            ErrorClass.SERVER_ERROR,
            "stream ended without its [DONE] terminator",
            code="stream_truncated",
            after=True,
        )

    def _choice_chunks(self, choice: _WireChunkChoice, batch: list[Chunk]) -> bool:
        """Append the choice's deltas to ``batch``; True if it carried a refusal."""
        delta = choice.delta
        if delta is None:
            return False
        if delta.content:
            batch.append(TextDelta(delta.content))
        for call in delta.tool_calls or ():
            function = call.function or _WireFunction()
            batch.append(
                ToolCallDelta(
                    index=call.index,
                    id=call.id,
                    name=function.name,
                    arguments=function.arguments or "",
                )
            )
        return bool(delta.refusal)

    def _finish(self, raw: str | None, *, refused: bool) -> Finish:
        reason = _FINISH_REASONS.get(raw or "", "other")
        if refused and reason == "stop":
            reason = "content_filter"
        return Finish(reason, raw=raw or "")

    def _usage(self, wire: _WireUsage) -> Usage:
        prompt = wire.prompt_tokens_details or _PromptDetails()
        completion = wire.completion_tokens_details or _CompletionDetails()
        reasoning = completion.reasoning_tokens or 0
        output = wire.completion_tokens
        if self.completion_excludes_reasoning:
            output += reasoning
        return Usage(
            input_tokens=wire.prompt_tokens,
            cached_input_tokens=prompt.cached_tokens or 0,
            cache_write_tokens=prompt.cache_write_tokens or 0,
            output_tokens=output,
            reasoning_tokens=reasoning,
        )

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message, error_type, code = self._body_fields(body)
        if not message:
            message = f"HTTP {status}"
        error_class, quota = self._classify(status, error_type, code, message)
        retry_after = parse_retry_after(headers)
        if retry_after is None and error_class is ErrorClass.RATE_LIMITED:
            retry_after = parse_wait_in_message(message)
        return self._error(
            error_class, message, code=code, status=status, retry_after_s=retry_after, quota=quota
        )

    def _body_fields(self, body: bytes) -> tuple[str, str | None, str | None]:
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return error_text(body), None, None
        return self._error_fields(decoded)

    def _stream_error(self, data: str) -> ProviderError:
        """Classify an error event (``data`` is its JSON, already known to decode)."""
        message, error_type, code = self._error_fields(msgspec.json.decode(data))
        error_class, quota = self._classify(None, error_type, code, message)
        return self._error(
            error_class, message or "error event in the stream", code=code, quota=quota, after=True
        )

    # -- what a variant of Chat Completions (xAI, self-hosted servers) may override ------------

    def _error_fields(self, envelope: Any) -> tuple[str, str | None, str | None]:
        """(message, type, code) of a decoded error body or in-stream error event."""
        if isinstance(envelope, dict):
            return _error_fields_from(envelope.get("error", envelope))
        return "", None, None

    def _classify(
        self, status: int | None, error_type: str | None, code: str | None, message: str
    ) -> tuple[ErrorClass, bool]:
        """The provider's one classification function; ``status`` is None mid-stream."""
        return classify_openai_error(status, error_type, code, message)


def _without_cache_control(messages: list[Message]) -> list[Message]:
    """Chat Completions rejects Anthropic's cache_control; caching is automatic there."""
    if not any(
        isinstance(m.content, list)
        and any(isinstance(p, TextPart) and p.cache_control is not None for p in m.content)
        for m in messages
    ):
        return messages
    return [
        msgspec.structs.replace(
            m,
            content=[
                msgspec.structs.replace(p, cache_control=None) if isinstance(p, TextPart) else p
                for p in m.content
            ],
        )
        if isinstance(m.content, list)
        else m
        for m in messages
    ]


def _error_fields_from(error: Any) -> tuple[str, str | None, str | None]:
    """(message, type, code) from OpenAI's ``{"message","type","code"}`` error object."""
    if isinstance(error, str):
        return error, None, None
    if not isinstance(error, dict):
        return "", None, None
    message = error.get("message")
    error_type = error.get("type")
    code = error.get("code")
    return (
        message if isinstance(message, str) else "",
        error_type if isinstance(error_type, str) else None,
        str(code) if code is not None else None,
    )
