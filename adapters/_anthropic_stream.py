"""Reading Anthropic Messages answers into normalized chunks (shared reference §3.3, §3.4).

:class:`AnthropicStreamParser` is pure (bytes in, chunks out, no I/O), so the reference's
transcripts can be fed through it directly; the adapter only moves bytes from the socket to it.
"""

from __future__ import annotations

import msgspec

from ._anthropic_errors import classify_anthropic_error, error_fields_from
from ._chunks import Chunk, Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageReport
from ._errors import ErrorClass, ErrorFactory, ProviderError, error_factory
from ._sse import ServerSentEvent, SSEDecoder

__all__ = ["AnthropicStreamParser", "message_chunks"]

# §7.12. pause_turn (a server tool loop paused; the caller must resume it) maps to "other".
_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "model_context_window_exceeded": "context_overflow",
}


class _OutputDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    # All optional: message_delta's usage may carry only output_tokens (§3.4 step 4).
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _WireBlock(msgspec.Struct):
    type: str = ""
    text: str | None = None
    id: str | None = None
    name: str | None = None
    # Kept as raw JSON: a whole tool input becomes the call's arguments without a re-encode.
    # (msgspec cannot decode ``Raw | None``; an absent input is the empty Raw.)
    input: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _WireMessage(msgspec.Struct):
    content: list[_WireBlock] = []
    stop_reason: str | None = None
    usage: _WireUsage | None = None


class _WireDelta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _WireEvent(msgspec.Struct):
    # One lenient shape for every event type: an unknown type or field must not break a stream.
    type: str = ""
    index: int = 0
    message: _WireMessage | None = None
    content_block: _WireBlock | None = None
    delta: _WireDelta | None = None
    usage: _WireUsage | None = None


_decode_event = msgspec.json.Decoder(_WireEvent).decode
_decode_message = msgspec.json.Decoder(_WireMessage).decode


def finish(stop_reason: str | None) -> Finish:
    return Finish(_FINISH_REASONS.get(stop_reason or "", "other"), raw=stop_reason or "")


def _usage(wire: _WireUsage) -> Usage:
    # input_tokens excludes both cache classes; the normalized input includes them (§7.11).
    created = wire.cache_creation_input_tokens or 0
    read = wire.cache_read_input_tokens or 0
    details = wire.output_tokens_details
    return Usage(
        input_tokens=(wire.input_tokens or 0) + created + read,
        cached_input_tokens=read,
        cache_write_tokens=created,
        output_tokens=wire.output_tokens or 0,
        reasoning_tokens=(details.thinking_tokens or 0) if details is not None else 0,
    )


def _merge(base: _WireUsage, update: _WireUsage) -> _WireUsage:
    """message_start's usage overlaid with message_delta's (cumulative) fields it carries."""
    return _WireUsage(
        input_tokens=_pick(update.input_tokens, base.input_tokens),
        cache_creation_input_tokens=_pick(
            update.cache_creation_input_tokens, base.cache_creation_input_tokens
        ),
        cache_read_input_tokens=_pick(update.cache_read_input_tokens, base.cache_read_input_tokens),
        output_tokens=_pick(update.output_tokens, base.output_tokens),
        output_tokens_details=update.output_tokens_details or base.output_tokens_details,
    )


def _pick(new: int | None, old: int | None) -> int | None:
    return new if new is not None else old


def _arguments(raw: msgspec.Raw) -> str:
    return bytes(raw).decode()


def message_chunks(body: bytes) -> list[Chunk]:
    """The chunks of a non-streamed message body. Raises ``msgspec.DecodeError``."""
    message = _decode_message(body)
    chunks: list[Chunk] = []
    tools = 0
    for block in message.content:
        if block.type == "text" and block.text:
            chunks.append(TextDelta(block.text))
        elif block.type == "tool_use":
            arguments = _arguments(block.input) or "{}"
            chunks.append(ToolCallDelta(tools, arguments, id=block.id, name=block.name))
            tools += 1
        # thinking, redacted_thinking and server-tool blocks are not answer content.
    chunks.append(finish(message.stop_reason))
    if message.usage is not None:
        chunks.append(UsageReport(_usage(message.usage)))
    return chunks


# Without an adapter (replaying transcripts): errors named for Anthropic.
_DEFAULT_ERROR = error_factory("anthropic")


class AnthropicStreamParser:
    """Turns the bytes of one Messages stream into normalized chunks.

    :meth:`feed` returns the chunks each read completes. Once ``message_stop`` arrives,
    ``done`` is set and later bytes are ignored; once the stream fails (an ``event: error``,
    malformed JSON, or an end of body without ``message_stop``, see :meth:`close`),
    ``failure`` holds the error and the chunks before it have been returned.
    """

    __slots__ = ("_decoder", "_error", "_tools", "_usage", "done", "failure")

    def __init__(self, error: ErrorFactory = _DEFAULT_ERROR) -> None:
        self._decoder = SSEDecoder()
        self._error = error
        # Content block index -> the tool call's ordinal (text and thinking blocks have none).
        self._tools: dict[int, int] = {}
        self._usage = _WireUsage()
        self.done = False
        self.failure: ProviderError | None = None

    def feed(self, data: bytes) -> list[Chunk]:
        batch: list[Chunk] = []
        if self._over():
            return batch
        for event in self._decoder.feed(data):
            self._event(event, batch)
            if self._over():
                break
        return batch

    def close(self) -> list[Chunk]:
        """The end of the body: dispatch a last unterminated event, then require message_stop."""
        batch: list[Chunk] = []
        if self._over():
            return batch
        for event in self._decoder.close():
            self._event(event, batch)
        if not self._over():
            self.failure = self._error(
                ErrorClass.SERVER_ERROR,
                "stream ended without message_stop",
                code="stream_truncated",
                after=True,
            )
        return batch

    def _over(self) -> bool:
        # A method, not an inline test: a type checker would keep its narrowing across _event.
        return self.done or self.failure is not None

    def _event(self, sse: ServerSentEvent, batch: list[Chunk]) -> None:
        name = sse.event
        # As the SDK does (§1): events without an event: line, and pings, carry nothing.
        if name is None or name == "ping":
            return
        if name == "error":
            self.failure = self._stream_error(sse.data)
            return
        try:
            event = _decode_event(sse.data)
        except msgspec.DecodeError as exc:
            self.failure = self._error(
                ErrorClass.SERVER_ERROR,
                f"malformed stream event: {exc}",
                code="malformed_sse",
                after=True,
            )
            return
        kind = event.type
        if kind == "content_block_delta":
            self._delta(event, batch)
        elif kind == "content_block_start":
            self._block_start(event, batch)
        elif kind == "message_start":
            if event.message is not None and event.message.usage is not None:
                self._usage = event.message.usage
        elif kind == "message_delta":
            if event.usage is not None:
                self._usage = _merge(self._usage, event.usage)
            if event.delta is not None and event.delta.stop_reason is not None:
                batch.append(finish(event.delta.stop_reason))
        elif kind == "message_stop":
            batch.append(UsageReport(_usage(self._usage)))
            self.done = True

    def _block_start(self, event: _WireEvent, batch: list[Chunk]) -> None:
        block = event.content_block
        if block is None:
            return
        if block.type == "tool_use":
            ordinal = self._tools[event.index] = len(self._tools)
            # The start's input is {} and the input streams as partial_json (§3.4); a start
            # that already holds the input is taken as its whole arguments.
            arguments = _arguments(block.input)
            if arguments.replace(" ", "") == "{}":
                arguments = ""
            batch.append(ToolCallDelta(ordinal, arguments, id=block.id, name=block.name))
        elif block.type == "text" and block.text:
            batch.append(TextDelta(block.text))

    def _delta(self, event: _WireEvent, batch: list[Chunk]) -> None:
        delta = event.delta
        if delta is None:
            return
        if delta.type == "text_delta":
            if delta.text:
                batch.append(TextDelta(delta.text))
        elif delta.type == "input_json_delta":
            ordinal = self._tools.get(event.index)
            if ordinal is not None and delta.partial_json:
                batch.append(ToolCallDelta(ordinal, delta.partial_json))
        # thinking_delta, signature_delta and citations_delta are not answer content; thinking
        # is paid for through usage (output_tokens includes it).

    def _stream_error(self, data: str) -> ProviderError:
        try:
            decoded = msgspec.json.decode(data)
        except msgspec.DecodeError:
            decoded = data
        message, error_type, code = error_fields_from(decoded)
        if not message and isinstance(decoded, str):
            message = decoded[:200]
        error_class, quota = classify_anthropic_error(None, error_type, code, message)
        return self._error(
            error_class,
            message or "error event in the stream",
            code=code or error_type,
            quota=quota,
            after=True,
        )
