"""Normalized output: what every adapter turns its provider's answer into."""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

__all__ = ["Chunk", "Finish", "FinishReason", "TextDelta", "ToolCallDelta", "Usage", "UsageReport"]

FinishReason: TypeAlias = Literal[
    "stop", "length", "tool_calls", "content_filter", "context_overflow", "other"
]


class Usage(msgspec.Struct, frozen=True):
    """Token counts per class. ``input_tokens`` includes cached reads and cache writes;
    ``output_tokens`` includes reasoning (each adapter corrects its provider's convention)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class ToolCallDelta(msgspec.Struct, frozen=True):
    """A piece of a tool call. ``id`` and ``name`` come with the first piece of each ``index``;
    ``arguments`` pieces concatenate, per ``index``, into the call's JSON arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


class Finish(msgspec.Struct, frozen=True):
    reason: FinishReason
    # The provider's own word for it, for the audit trail.
    raw: str = ""


class UsageReport(msgspec.Struct, frozen=True):
    usage: Usage


Chunk: TypeAlias = TextDelta | ToolCallDelta | Finish | UsageReport
