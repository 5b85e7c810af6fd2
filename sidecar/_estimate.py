"""A conservative estimate of a prompt's input tokens, made before any provider sees it.

The router checks context windows against it and the cost boundary prices the worst case with
it, so it must err high. BPE tokenizers average about 4 bytes of English per token and rarely go
below 3 on code or other scripts (CJK runs about 3 UTF-8 bytes per token), so we count one token
per 3 bytes of UTF-8 text, plus each message's framing and a fixed allowance per image.

Error bound: for English prose this over-counts by about a third (4 bytes a token against our 3);
for code and most other scripts by up to about 10%. It can under-count text that tokenizes below
3 bytes a token (long runs of rare symbols, some emoji), so the reservation is not a proof
against every input; a provider billing above it shows as ``BudgetOverrun``. No tokenizer ships
offline with our dependencies (tiktoken fetches its tables at run time), so this bound is argued
from published bytes-per-token figures rather than measured against a tokenizer here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from adapters import ImagePart, Message, TextPart

__all__ = ["PromptSize", "measure_prompt"]

_BYTES_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REPLY = 3
# A high-detail image costs at most ~1,600 tokens on the providers we know (OpenAI tiles,
# Anthropic's (w·h)/750 at its 1,568 px cap, Gemini's 258 per tile).
_TOKENS_PER_IMAGE = 1_600


class PromptSize(msgspec.Struct, frozen=True):
    chars: int
    images: int
    estimated_tokens: int


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def measure_prompt(messages: Sequence[Message], *schemas: Any) -> PromptSize:
    """The prompt's size: its messages, plus ``schemas`` (tools, a response format) that are
    sent to the model as part of the prompt and billed as input."""
    chars = 0
    text_bytes = 0
    images = 0
    for message in messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
            text_bytes += _utf8_len(content)
        elif content is not None:
            for part in content:
                if isinstance(part, TextPart):
                    chars += len(part.text)
                    text_bytes += _utf8_len(part.text)
                elif isinstance(part, ImagePart):
                    images += 1
        for call in message.tool_calls or ():
            text_bytes += _utf8_len(call.function.name) + _utf8_len(call.function.arguments)
    for schema in schemas:
        if schema:
            text_bytes += len(msgspec.json.encode(schema))
    tokens = (
        -(-text_bytes // _BYTES_PER_TOKEN)
        + _TOKENS_PER_MESSAGE * len(messages)
        + _TOKENS_PER_REPLY
        + _TOKENS_PER_IMAGE * images
    )
    return PromptSize(chars=chars, images=images, estimated_tokens=tokens)
