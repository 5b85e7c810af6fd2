"""Encoding answers as Gemini ``GenerateContentResponse`` objects (shared reference §4.3-4.4).

An answer is a list of :class:`Step` (the stream's chunks): text pieces, or one whole function
call. Every streamed chunk repeats ``modelVersion`` and ``responseId`` and carries the
cumulative ``usageMetadata``; the last one carries ``finishReason``. A whole answer is the same
steps folded into one object.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from ._answer import AnswerPlan

__all__ = ["SSE_END", "GeminiEncoder", "Step", "answer_steps", "sse_event", "thought_signature"]

SSE_END = b"\r\n\r\n"  # what Google sends; the reference notes LF works as well

_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
_CALL_MESSAGE = "Model generated function call(s)."
_THOUGHT_SUMMARY = "**Weighing the request**\n\nWorking out what is asked before answering.\n\n"
_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Step:
    """One streamed chunk's parts (None: a chunk without content) and the tokens they hold."""

    parts: list[dict[str, Any]] | None
    tokens: int


def thought_signature(seed: str) -> str:
    """An opaque, deterministic stand-in for Gemini's encrypted thought signature."""
    digest = hashlib.blake2b(seed.encode(), digest_size=30).digest()
    return base64.b64encode(b"\x12\x24" + digest).decode()


def answer_steps(plan: AnswerPlan, signature: str | None) -> list[Step]:
    """The chunks of ``plan``; the last one is where the finish reason goes."""
    visible = plan.completion_tokens - plan.reasoning_tokens
    call = plan.tool_call
    if call is not None:
        if plan.finish_reason != "tool_calls":
            # A call cut short (or blocked) is not sent at all: Gemini sends calls whole.
            return [Step(None, visible)]
        part: dict[str, Any] = {
            "functionCall": {"name": call.name, "args": msgspec.json.decode(plan.text)}
        }
        if signature is not None:
            part["thoughtSignature"] = signature
        return [Step([part], visible)]
    steps = [Step([{"text": p}], n) for p, n in zip(plan.pieces, plan.piece_tokens, strict=True)]
    if plan.finish_reason == "content_filter" or not steps:
        # The block (or an empty answer) comes as a chunk of its own, without content.
        steps.append(Step(None, 0))
    return steps


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + SSE_END


class GeminiEncoder:
    """Response objects for one answer."""

    __slots__ = ("_model", "_plan", "_response_id")

    def __init__(self, model: str, response_id: str, plan: AnswerPlan) -> None:
        self._model = model
        self._response_id = response_id
        self._plan = plan

    def _usage(self, candidates: int, thoughts: int) -> dict[str, Any]:
        plan = self._plan
        usage: dict[str, Any] = {"promptTokenCount": plan.prompt_tokens}
        if candidates:
            usage["candidatesTokenCount"] = candidates
        usage["totalTokenCount"] = plan.prompt_tokens + candidates + thoughts
        if plan.cached_tokens:
            usage["cachedContentTokenCount"] = plan.cached_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}]
        if plan.cached_tokens:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": plan.cached_tokens}]
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _response(self, candidate: dict[str, Any] | None, usage: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {}
        if candidate is not None:
            body["candidates"] = [candidate]
        body["usageMetadata"] = usage
        body["modelVersion"] = self._model
        body["responseId"] = self._response_id
        return _json.encode(body)

    def _candidate(self, parts: list[dict[str, Any]] | None, finish: bool) -> dict[str, Any]:
        content: dict[str, Any] = {"parts": parts} if parts else {}
        content["role"] = "model"
        candidate: dict[str, Any] = {"content": content}
        if finish:
            reason = _FINISH.get(self._plan.finish_reason, "OTHER")
            candidate["finishReason"] = reason
            if self._plan.tool_call is not None and reason == "STOP":
                candidate["finishMessage"] = _CALL_MESSAGE
            if reason == "SAFETY":
                # A blocked response: no content, and the rating that blocked it.
                del candidate["content"]
                candidate["safetyRatings"] = _ratings(blocked=True)
        candidate["index"] = 0
        return candidate

    def thought_chunk(self) -> bytes:
        """The thought summary sent first when ``includeThoughts`` is set."""
        part = {"text": _THOUGHT_SUMMARY, "thought": True}
        candidate = {"content": {"parts": [part], "role": "model"}, "index": 0}
        return self._response(candidate, self._usage(0, self._plan.reasoning_tokens))

    def chunk(self, step: Step, generated: int, finish: bool) -> bytes:
        """One streamed chunk; ``generated`` is the candidate tokens so far, this one's too."""
        usage = self._usage(generated, self._plan.reasoning_tokens)
        return self._response(self._candidate(step.parts, finish), usage)

    def whole(self, steps: list[Step], thoughts: bool) -> bytes:
        """The non-streamed response: the steps' parts in one candidate (text joined)."""
        parts: list[dict[str, Any]] = []
        if thoughts:
            parts.append({"text": _THOUGHT_SUMMARY, "thought": True})
        text = "".join(p["text"] for s in steps for p in s.parts or () if "text" in p)
        if text:
            parts.append({"text": text})
        parts.extend(p for s in steps for p in s.parts or () if "functionCall" in p)
        generated = sum(s.tokens for s in steps)
        usage = self._usage(generated, self._plan.reasoning_tokens)
        return self._response(self._candidate(parts, finish=True), usage)

    def prompt_blocked(self) -> bytes:
        """HTTP 200 without candidates: the prompt itself was blocked (reference §4.6)."""
        body = {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _ratings(blocked=True)},
            "usageMetadata": {
                "promptTokenCount": self._plan.prompt_tokens,
                "totalTokenCount": self._plan.prompt_tokens,
                "promptTokensDetails": [
                    {"modality": "TEXT", "tokenCount": self._plan.prompt_tokens}
                ],
            },
            "modelVersion": self._model,
            "responseId": self._response_id,
        }
        return _json.encode(body)


def _ratings(*, blocked: bool) -> list[dict[str, Any]]:
    ratings: list[dict[str, Any]] = [
        {"category": c, "probability": "NEGLIGIBLE"} for c in _CATEGORIES
    ]
    ratings[1] = {"category": _CATEGORIES[1], "probability": "HIGH", "blocked": blocked}
    return ratings
