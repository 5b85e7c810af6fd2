"""Provider adapters: one normalized request in, an async stream of normalized chunks out."""

from ._anthropic import AnthropicAdapter, AnthropicStreamParser, classify_anthropic_error
from ._base import Adapter, ChunkStream
from ._chunks import Chunk, Finish, FinishReason, TextDelta, ToolCallDelta, Usage, UsageReport
from ._compatible import OpenAICompatibleAdapter, classify_compatible_error
from ._errors import ErrorClass, ProviderError, looks_like_context_overflow
from ._gemini import DEFAULT_GEMINI_API_VERSION, GeminiAdapter
from ._gemini_errors import classify_gemini_error
from ._gemini_request import GeminiTranslationError, gemini_request_body
from ._gemini_response import GeminiResponseDecoder, decode_gemini_events, gemini_finish_reason
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
    "DEFAULT_GEMINI_API_VERSION",
    "Adapter",
    "AnthropicAdapter",
    "AnthropicStreamParser",
    "AudioPart",
    "ChatRequest",
    "Chunk",
    "ChunkStream",
    "ContentPart",
    "ErrorClass",
    "FilePart",
    "Finish",
    "FinishReason",
    "GeminiAdapter",
    "GeminiResponseDecoder",
    "GeminiTranslationError",
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
    "classify_anthropic_error",
    "classify_compatible_error",
    "classify_gemini_error",
    "classify_openai_error",
    "classify_xai_error",
    "decode_gemini_events",
    "gemini_finish_reason",
    "gemini_request_body",
    "looks_like_context_overflow",
    "parse_retry_after",
    "parse_wait_in_message",
    "redact",
]
