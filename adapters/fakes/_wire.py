"""Encoding successful answers in the Chat Completions wire format (shared reference §2.3-2.4).

Streaming is the hot path of every latency benchmark, so each stream pre-encodes the bytes all
its chunks share (id, created, model, fingerprint) once, and each chunk only encodes its own
text.
"""

from __future__ import annotations

import msgspec

from ._answer import AnswerPlan

__all__ = ["DONE", "ChunkEncoder", "WireFunction", "WireToolCall", "completion_body", "sse_event"]

SYSTEM_FINGERPRINT = "fp_f4ke0penai"
DONE = b"data: [DONE]\n\n"

_json = msgspec.json.Encoder()


class _PromptDetails(msgspec.Struct, frozen=True):
    cached_tokens: int
    audio_tokens: int = 0


class _CompletionDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails
    completion_tokens_details: _CompletionDetails


def _usage(plan: AnswerPlan) -> _Usage:
    completion = plan.completion_tokens
    return _Usage(
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=completion,
        total_tokens=plan.prompt_tokens + completion,
        prompt_tokens_details=_PromptDetails(cached_tokens=plan.cached_tokens),
        completion_tokens_details=_CompletionDetails(reasoning_tokens=plan.reasoning_tokens),
    )


class WireFunction(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class WireToolCall(msgspec.Struct, frozen=True):
    id: str
    function: WireFunction
    type: str = "function"


class _Message(msgspec.Struct, frozen=True, omit_defaults=True):
    # omit_defaults only drops tool_calls: the other defaults are written out explicitly below.
    role: str
    content: str | None
    refusal: None
    annotations: list[object]
    tool_calls: list[WireToolCall] | msgspec.UnsetType = msgspec.UNSET


class _Choice(msgspec.Struct, frozen=True):
    index: int
    message: _Message
    logprobs: None
    finish_reason: str


class _Completion(msgspec.Struct, frozen=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage
    service_tier: str = "default"
    system_fingerprint: str = SYSTEM_FINGERPRINT


def completion_body(completion_id: str, created: int, model: str, plan: AnswerPlan) -> bytes:
    """A non-streaming ``chat.completion`` response body."""
    if plan.tool_call is not None:
        call = WireToolCall(plan.tool_call.id, WireFunction(plan.tool_call.name, plan.text))
        message = _Message("assistant", None, None, [], [call])
    else:
        message = _Message("assistant", plan.text, None, [])
    return _json.encode(
        _Completion(
            id=completion_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[_Choice(0, message, None, plan.finish_reason)],
            usage=_usage(plan),
        )
    )


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class ChunkEncoder:
    """``chat.completion.chunk`` events for one stream."""

    __slots__ = ("_head", "_tail")

    # The members between "model" and "choices"; a provider's variant of the fake replaces them.
    META = b',"service_tier":"default","system_fingerprint":"' + SYSTEM_FINGERPRINT.encode() + b'"'

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = (
            b'data: {"id":'
            + _json.encode(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + _json.encode(model)
            + self.META
            + b',"choices":['
        )
        # With include_usage, every chunk but the last carries "usage": null (OpenAI's docs).
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def _choice(self, delta: bytes, finish_reason: bytes = b"null") -> bytes:
        return (
            self._head
            + b'{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish_reason
            + b"}]"
            + self._tail
        )

    def role(self) -> bytes:
        return self._choice(b'{"role":"assistant","content":"","refusal":null}')

    def tool_call_start(self, call_id: str, name: str) -> bytes:
        # The first fragment of a call: the only one with its id and name (§2.4).
        return self._choice(
            b'{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":'
            + _json.encode(call_id)
            + b',"type":"function","function":{"name":'
            + _json.encode(name)
            + b',"arguments":""}}],"refusal":null}'
        )

    def content(self, text: str) -> bytes:
        return self._choice(b'{"content":' + _json.encode(text) + b"}")

    def tool_arguments(self, fragment: str) -> bytes:
        return self._choice(
            b'{"tool_calls":[{"index":0,"function":{"arguments":' + _json.encode(fragment) + b"}}]}"
        )

    def finish(self, finish_reason: str) -> bytes:
        return self._choice(b"{}", _json.encode(finish_reason))

    def usage(self, plan: AnswerPlan) -> bytes:
        return self._head + b'],"usage":' + _json.encode(_usage(plan)) + b"}\n\n"
