"""Reading Gemini ``GenerateContentResponse`` objects into normalized chunks (reference §4.3-4.4).

A streamed answer is a sequence of complete response objects, one per SSE data event, each
holding only the new parts; a whole answer is one such object. :class:`GeminiResponseDecoder`
reads either, one object at a time, without any I/O, so that captured transcripts can be
replayed through it in tests (:func:`decode_gemini_events`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from ._chunks import Chunk, Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageReport
from ._errors import ErrorClass, ErrorFactory, ProviderError, error_factory
from ._gemini_errors import classify_gemini_error, parse_gemini_error

__all__ = [
    "GeminiResponseDecoder",
    "decode_gemini_events",
    "gemini_finish_reason",
]

# Reference §7.12: every way Gemini says "withheld by a filter".
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MODEL_ARMOR"}
)
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# OpenAI rejects tool-call ids over 40 characters; "call_" + this + "_<n>" stays under it.
_RESPONSE_ID_IN_CALL_ID = 24


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    # Thought summaries (includeThoughts): reasoning the client did not ask to see as text.
    thought: bool = False
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct):
    parts: list[_Part] = []


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    cached_content_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata | None = None
    response_id: str | None = None
    # A mid-stream failure arrives as a data event holding only an "error" object.
    error: Any = None


_decode_response = msgspec.json.Decoder(_Response).decode
_encode = msgspec.json.Encoder().encode


def gemini_finish_reason(raw: str, *, called_function: bool) -> FinishReason:
    """Normalize a ``finishReason``. Gemini has no tool-calls reason: a call ends with STOP."""
    if raw == "STOP":
        return "tool_calls" if called_function else "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _FILTERED or raw.startswith("IMAGE_"):
        return "content_filter"
    return "other"


def _usage(wire: _UsageMetadata) -> Usage:
    # candidatesTokenCount leaves thoughts out; normalized output includes reasoning (§7.11).
    return Usage(
        input_tokens=wire.prompt_token_count,
        cached_input_tokens=wire.cached_content_token_count,
        output_tokens=wire.candidates_token_count + wire.thoughts_token_count,
        reasoning_tokens=wire.thoughts_token_count,
    )


# Without an adapter (replaying transcripts): errors named for Gemini.
_DEFAULT_ERROR = error_factory("gemini")


class GeminiResponseDecoder:
    """Feed it each response object's JSON with :meth:`feed`; call :meth:`end` after the last.

    Raises :class:`ProviderError` (``after_response``) for an error event, a malformed event,
    and a stream that ends without a finish reason.
    """

    __slots__ = ("_called", "_error", "_finished", "_response_id", "_usage")

    def __init__(self, error: ErrorFactory | None = None) -> None:
        self._error: ErrorFactory = error or _DEFAULT_ERROR
        self._called = 0
        self._finished = False
        self._usage: _UsageMetadata | None = None
        self._response_id = ""

    def feed(self, data: str | bytes) -> list[Chunk]:
        """The chunks of one ``GenerateContentResponse`` (one SSE data event)."""
        if not data.strip():
            return []
        try:
            response = _decode_response(data)
        except msgspec.DecodeError as exc:
            raise self._error(
                ErrorClass.SERVER_ERROR,
                f"malformed stream event: {exc}",
                code="malformed_sse",
                after=True,
            ) from exc
        if response.error is not None:
            raise self._event_error(response.error)
        if response.usage_metadata is not None:
            # Cumulative on every chunk: the last one holds the totals.
            self._usage = response.usage_metadata
        if response.response_id:
            self._response_id = response.response_id
        chunks: list[Chunk] = []
        for candidate in response.candidates[:1]:
            self._parts(candidate, chunks)
            if candidate.finish_reason and not self._finished:
                self._finished = True
                raw = candidate.finish_reason
                chunks.append(
                    Finish(gemini_finish_reason(raw, called_function=self._called > 0), raw=raw)
                )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason and not self._finished:
            # The prompt itself was blocked: HTTP 200, no candidates, no finishReason.
            self._finished = True
            chunks.append(Finish("content_filter", raw=feedback.block_reason))
        return chunks

    def end(self, *, whole: bool = False) -> list[Chunk]:
        """After the last object: the usage report. A stream must have finished by then; a
        whole answer that names no finish reason gets ``other``."""
        chunks: list[Chunk] = []
        if not self._finished:
            if not whole:
                raise self._error(
                    ErrorClass.SERVER_ERROR,
                    "stream ended without a finish reason",
                    code="stream_truncated",
                    after=True,
                )
            self._finished = True
            chunks.append(Finish("other"))
        if self._usage is not None:
            chunks.append(UsageReport(_usage(self._usage)))
        return chunks

    def _parts(self, candidate: _Candidate, chunks: list[Chunk]) -> None:
        if candidate.content is None:
            return
        text: list[str] = []
        for part in candidate.content.parts:
            if part.function_call is not None:
                if text:
                    chunks.append(TextDelta("".join(text)))
                    text = []
                chunks.append(self._tool_call(part.function_call))
            elif part.text and not part.thought:
                text.append(part.text)
        if text:
            chunks.append(TextDelta("".join(text)))

    def _tool_call(self, call: _FunctionCall) -> ToolCallDelta:
        index = self._called
        self._called += 1
        # Gemini sends calls whole and without ids: the id is made up, and made unique per
        # response (when it has an id) because conversations repeat call_0, call_1, ...
        rid = _UNSAFE_ID_CHARS.sub("", self._response_id)[:_RESPONSE_ID_IN_CALL_ID]
        call_id = f"call_{rid}_{index}" if rid else f"call_{index}"
        arguments = _encode(call.args or {}).decode()
        return ToolCallDelta(index=index, id=call_id, name=call.name, arguments=arguments)

    def _event_error(self, raw: Any) -> ProviderError:
        error = parse_gemini_error({"error": raw})
        error_class, quota = classify_gemini_error(
            error.code, error.status, error.message, error.details
        )
        return self._error(
            error_class,
            error.message or "error event in the stream",
            code=error.status,
            quota=quota,
            after=True,
        )


def decode_gemini_events(
    reads: Iterable[Iterable[str | bytes]], error: ErrorFactory | None = None
) -> list[list[Chunk]]:
    """Batches of chunks for a stream given as the SSE data events of each network read (no
    I/O: for replaying transcripts). The usage report joins the last batch. Raises as
    :class:`GeminiResponseDecoder` does."""
    decoder = GeminiResponseDecoder(error)
    batches = [[chunk for data in events for chunk in decoder.feed(data)] for events in reads]
    tail = decoder.end()
    if batches:
        batches[-1].extend(tail)
    else:
        batches.append(tail)
    return batches
