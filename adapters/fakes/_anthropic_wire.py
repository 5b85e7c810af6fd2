"""Encoding answers in the Anthropic Messages wire format (shared reference §3.3, §3.4).

An :class:`Answer` is the shared :class:`AnswerPlan` in Anthropic's terms: an optional thinking
block, then one text or tool_use block, a stop reason and the usage. The stream's per-chunk
events are built from pre-encoded byte pieces, as the OpenAI fake's are: the fake is a
benchmark baseline too.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import msgspec

from ._answer import AnswerPlan
from ._anthropic_request import CacheSplit

__all__ = ["PING", "Answer", "EventEncoder", "message_body"]

_json = msgspec.json.Encoder()

# The shared plan's finish reasons (OpenAI's words) in Anthropic's.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

PING = b'event: ping\ndata: {"type": "ping"}\n\n'


@dataclass(frozen=True, slots=True)
class Answer:
    plan: AnswerPlan
    split: CacheSplit
    # Set when a stop sequence cut the answer (stop_reason "stop_sequence").
    stop_sequence: str | None = None
    # Shown thinking (a summary); its tokens are the plan's reasoning tokens.
    thinking: str | None = None

    @property
    def stop_reason(self) -> str:
        if self.stop_sequence is not None:
            return "stop_sequence"
        return _STOP_REASONS.get(self.plan.finish_reason, "end_turn")

    @property
    def tool_id(self) -> str | None:
        call = self.plan.tool_call
        return None if call is None else "toolu_01" + call.id.removeprefix("call_")

    @property
    def signature(self) -> str:
        digest = hashlib.blake2b((self.thinking or "").encode(), digest_size=48).digest()
        return "Eq" + base64.b64encode(digest).decode()

    def usage(self, *, final: bool = True) -> dict[str, object]:
        """``final``: the whole answer's; else message_start's (output_tokens not yet known)."""
        split = self.split
        usage: dict[str, object] = {
            "input_tokens": split.input_tokens,
            "cache_creation_input_tokens": split.cache_creation_input_tokens,
            "cache_read_input_tokens": split.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": split.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.plan.completion_tokens if final else 1,
        }
        if final and self.plan.reasoning_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": self.plan.reasoning_tokens}
        usage["service_tier"] = "standard"
        return usage

    def delta_usage(self) -> dict[str, object]:
        """message_delta's usage: cumulative, the input and cache counts repeated as newer
        servers do (§3.4 step 4); no cache_creation breakdown or service tier."""
        usage = self.usage()
        del usage["cache_creation"], usage["service_tier"]
        return usage

    def stop_details(self) -> dict[str, object] | None:
        if self.stop_reason != "refusal":
            return None
        return {"type": "refusal", "category": None, "explanation": None}

    def tool_input(self) -> object:
        """The whole tool input; {} when max_tokens cut the JSON short."""
        try:
            return msgspec.json.decode(self.plan.text)
        except msgspec.DecodeError:
            return {}


def message_body(message_id: str, model: str, answer: Answer) -> bytes:
    """A non-streaming ``message`` response body."""
    content: list[dict[str, object]] = []
    if answer.thinking is not None:
        content.append(
            {"type": "thinking", "thinking": answer.thinking, "signature": answer.signature}
        )
    call = answer.plan.tool_call
    if call is not None:
        content.append(
            {
                "type": "tool_use",
                "id": answer.tool_id,
                "name": call.name,
                "input": answer.tool_input(),
            }
        )
    elif answer.plan.pieces:
        content.append({"type": "text", "text": answer.plan.text})
    return _json.encode(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "stop_details": answer.stop_details(),
            "usage": answer.usage(),
        }
    )


def _event(name: bytes, payload: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


class EventEncoder:
    """The SSE events of one message stream."""

    __slots__ = ("_answer", "_message_id", "_model")

    def __init__(self, message_id: str, model: str, answer: Answer) -> None:
        self._message_id = message_id
        self._model = model
        self._answer = answer

    def message_start(self) -> bytes:
        message: dict[str, object] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "stop_details": None,
            "usage": self._answer.usage(final=False),
        }
        return _event(b"message_start", _json.encode({"type": "message_start", "message": message}))

    def block_start(self, index: int, block: dict[str, object]) -> bytes:
        payload = {"type": "content_block_start", "index": index, "content_block": block}
        return _event(b"content_block_start", _json.encode(payload))

    def thinking_start(self, index: int) -> bytes:
        return self.block_start(index, {"type": "thinking", "thinking": "", "signature": ""})

    def text_start(self, index: int) -> bytes:
        return self.block_start(index, {"type": "text", "text": ""})

    def tool_start(self, index: int) -> bytes:
        call = self._answer.plan.tool_call
        name = call.name if call is not None else ""
        block: dict[str, object] = {
            "type": "tool_use",
            "id": self._answer.tool_id,
            "name": name,
            "input": {},
        }
        return self.block_start(index, block)

    def _delta(self, index: int, delta: bytes) -> bytes:
        return _event(
            b"content_block_delta",
            b'{"type":"content_block_delta","index":'
            + str(index).encode()
            + b',"delta":'
            + delta
            + b"}",
        )

    def text_delta(self, index: int, text: str) -> bytes:
        return self._delta(index, b'{"type":"text_delta","text":' + _json.encode(text) + b"}")

    def json_delta(self, index: int, fragment: str) -> bytes:
        return self._delta(
            index, b'{"type":"input_json_delta","partial_json":' + _json.encode(fragment) + b"}"
        )

    def thinking_delta(self, index: int, text: str) -> bytes:
        return self._delta(
            index, b'{"type":"thinking_delta","thinking":' + _json.encode(text) + b"}"
        )

    def signature_delta(self, index: int) -> bytes:
        signature = _json.encode(self._answer.signature)
        return self._delta(index, b'{"type":"signature_delta","signature":' + signature + b"}")

    def block_stop(self, index: int) -> bytes:
        return _event(
            b"content_block_stop",
            b'{"type":"content_block_stop","index":' + str(index).encode() + b"}",
        )

    def message_delta(self) -> bytes:
        answer = self._answer
        delta: dict[str, object] = {
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
        }
        details = answer.stop_details()
        if details is not None:
            delta["stop_details"] = details
        payload = {"type": "message_delta", "delta": delta, "usage": answer.delta_usage()}
        return _event(b"message_delta", _json.encode(payload))

    def message_stop(self) -> bytes:
        return _event(b"message_stop", b'{"type":"message_stop"}')
