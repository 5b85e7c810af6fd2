"""The normalized request every adapter takes: the OpenAI Chat Completions shape, typed.

Clients speak OpenAI's shape to the sidecar, so it is the lingua franca here; each adapter
translates it into its provider's wire format.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = [
    "AudioPart",
    "ChatRequest",
    "ContentPart",
    "FilePart",
    "ImagePart",
    "ImageURL",
    "Message",
    "TextPart",
    "ToolCall",
    "ToolCallFunction",
]


class _Part(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type"):
    pass


class TextPart(_Part, frozen=True, tag="text"):
    text: str
    # Anthropic prompt caching ({"type": "ephemeral"}), passed through on the part it marks.
    # Adapters for providers without it leave it out.
    cache_control: dict[str, Any] | None = None


class ImageURL(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str
    detail: str | None = None


class ImagePart(_Part, frozen=True, tag="image_url"):
    image_url: ImageURL


class AudioPart(_Part, frozen=True, tag="input_audio"):
    input_audio: dict[str, Any]


class FilePart(_Part, frozen=True, tag="file"):
    file: dict[str, Any]


ContentPart: TypeAlias = TextPart | ImagePart | AudioPart | FilePart


class ToolCallFunction(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    function: ToolCallFunction
    type: str = "function"


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream call: what to send, to which upstream model."""

    # The provider's own model id (not tollgate's name for it).
    model: str
    messages: list[Message]
    # Always sent upstream, so the worst-case cost of the call is bounded.
    max_tokens: int
    stream: bool
    # Other OpenAI request fields (temperature, tools, response_format, stop, ...), passed through.
    params: dict[str, Any] = msgspec.field(default_factory=dict)
