"""xAI's successful answers (shared reference §5.3-5.4): OpenAI's shape with xAI's usage.

``completion_tokens`` excludes the reasoning tokens, which ``completion_tokens_details`` reports
and ``total_tokens`` includes; ``num_sources_used`` is always there. The non-streamed body
follows a real capture: no ``service_tier``, ``logprobs`` or ``annotations``.
"""

from __future__ import annotations

import msgspec

from ._answer import AnswerPlan
from ._wire import ChunkEncoder, WireFunction, WireToolCall

__all__ = ["XAIChunkEncoder", "xai_completion_body"]

XAI_FINGERPRINT = "fp_f4ke0x4i1"

_json = msgspec.json.Encoder()


class _PromptDetails(msgspec.Struct, frozen=True):
    text_tokens: int
    audio_tokens: int
    image_tokens: int
    cached_tokens: int


class _CompletionDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int
    audio_tokens: int
    accepted_prediction_tokens: int
    rejected_prediction_tokens: int


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails
    completion_tokens_details: _CompletionDetails
    num_sources_used: int


def _usage(plan: AnswerPlan) -> _Usage:
    # plan.completion_tokens counts reasoning in, as OpenAI does; xAI counts it apart.
    visible = plan.completion_tokens - plan.reasoning_tokens
    return _Usage(
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=visible,
        total_tokens=plan.prompt_tokens + visible + plan.reasoning_tokens,
        prompt_tokens_details=_PromptDetails(plan.prompt_tokens, 0, 0, plan.cached_tokens),
        completion_tokens_details=_CompletionDetails(plan.reasoning_tokens, 0, 0, 0),
        num_sources_used=0,
    )


class _Message(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str
    content: str | None
    refusal: None
    tool_calls: list[WireToolCall] | msgspec.UnsetType = msgspec.UNSET


class _Choice(msgspec.Struct, frozen=True):
    index: int
    message: _Message
    finish_reason: str


class _Completion(msgspec.Struct, frozen=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: _Usage
    system_fingerprint: str = XAI_FINGERPRINT


def xai_completion_body(completion_id: str, created: int, model: str, plan: AnswerPlan) -> bytes:
    """A non-streaming ``chat.completion`` body as xAI sends it."""
    if plan.tool_call is not None:
        call = WireToolCall(plan.tool_call.id, WireFunction(plan.tool_call.name, plan.text))
        message = _Message("assistant", None, None, [call])
    else:
        message = _Message("assistant", plan.text, None)
    return _json.encode(
        _Completion(
            id=completion_id,
            object="chat.completion",
            created=created,
            model=model,
            choices=[_Choice(0, message, plan.finish_reason)],
            usage=_usage(plan),
        )
    )


class XAIChunkEncoder(ChunkEncoder):
    """OpenAI's chunks, without ``service_tier`` and with xAI's usage chunk."""

    __slots__ = ()

    META = b',"system_fingerprint":"' + XAI_FINGERPRINT.encode() + b'"'

    def usage(self, plan: AnswerPlan) -> bytes:
        return self._head + b'],"usage":' + _json.encode(_usage(plan)) + b"}\n\n"
