"""Provider adapters: one normalized request in, an async stream of normalized chunks out."""

from ._base import Adapter, ChunkStream
from ._chunks import Chunk, Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageReport
from ._compatible import OpenAICompatibleAdapter, classify_compatible_error
from ._errors import ErrorClass, ProviderError, looks_like_context_overflow
from ._openai import OpenAIAdapter, classify_openai_error
from ._redact import redact
from ._request import (
    AudioPart,
    ChatRequest,
    ContentPart,
    FilePart,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    ToolCall,
    ToolCallFunction,
)
from ._retry_after import parse_retry_after, parse_wait_in_message
from ._sse import ServerSentEvent, SSEDecoder
from ._xai import XAIAdapter, classify_xai_error

__all__ = [
    "Adapter",
    "AudioPart",
    "ChatRequest",
    "Chunk",
    "ChunkStream",
    "ContentPart",
    "ErrorClass",
    "FilePart",
    "Finish",
    "FinishReason",
    "ImagePart",
    "ImageURL",
    "Message",
    "OpenAIAdapter",
    "OpenAICompatibleAdapter",
    "ProviderError",
    "SSEDecoder",
    "ServerSentEvent",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFunction",
    "Usage",
    "UsageReport",
    "XAIAdapter",
    "classify_compatible_error",
    "classify_openai_error",
    "classify_xai_error",
    "looks_like_context_overflow",
    "parse_retry_after",
    "parse_wait_in_message",
    "redact",
]
