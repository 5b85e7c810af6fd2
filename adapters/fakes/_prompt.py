"""The part of a Chat Completions request the fake reads, and the fake's token-count rule.

The schema is deliberately lenient (unknown fields are ignored, content parts are not checked
beyond their ``type``): the fake stands in for OpenAI, which accepts far more than it needs to
read here. It is also independent of tollgate's own request types, so that a bug in those shows
up as a failure against the fake instead of being mirrored by it.

Token-count rule (documented in the package docstring, relied on by tests):

    prompt_tokens = 3
        + sum over messages: 4 + ceil(chars / 4) + 85 * non_text_parts
        + sum over tools:    8 + ceil((len(name) + len(description)) / 4)

where a message's ``chars`` counts its string content, the ``text`` of its text parts, its
``name`` and the name and arguments of its tool calls (all in code points), and a non-text part
is any content part whose type is not ``text`` (images, files, audio).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

__all__ = [
    "ChatRequest",
    "Message",
    "StreamOptions",
    "Tool",
    "ToolChoiceFunction",
    "answer_seed",
    "book_key",
    "count_prompt_tokens",
    "prompt_key",
    "prompt_tokens",
]

REPLY_PRIMING_TOKENS = 3
PER_MESSAGE_TOKENS = 4
PER_NON_TEXT_PART_TOKENS = 85
PER_TOOL_TOKENS = 8


class _Part(msgspec.Struct, frozen=True):
    type: str = "text"
    text: str | None = None


class _FunctionCall(msgspec.Struct, frozen=True):
    name: str = ""
    arguments: str = ""


class _ToolCall(msgspec.Struct, frozen=True):
    function: _FunctionCall | None = None


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str | list[_Part] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _FunctionDef(msgspec.Struct, frozen=True):
    name: str
    description: str | None = None
    # A JSON Schema; read loosely (see ``_answer.tool_arguments``).
    parameters: dict[str, object] | None = None


class Tool(msgspec.Struct, frozen=True):
    type: str = "function"
    function: _FunctionDef | None = None


class _NamedFunction(msgspec.Struct, frozen=True):
    name: str


class ToolChoiceFunction(msgspec.Struct, frozen=True):
    type: str = "function"
    function: _NamedFunction | None = None


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    n: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoiceFunction | None = None


def _ceil_div4(n: int) -> int:
    return -(-n // 4)


def _message_tokens(message: Message) -> int:
    chars = 0
    non_text = 0
    content = message.content
    if isinstance(content, str):
        chars += len(content)
    elif content is not None:
        for part in content:
            if part.type == "text":
                chars += len(part.text or "")
            else:
                non_text += 1
    if message.name:
        chars += len(message.name)
    if message.tool_calls:
        for call in message.tool_calls:
            if call.function is not None:
                chars += len(call.function.name) + len(call.function.arguments)
    return PER_MESSAGE_TOKENS + _ceil_div4(chars) + PER_NON_TEXT_PART_TOKENS * non_text


def prompt_tokens(request: ChatRequest) -> int:
    """The ``prompt_tokens`` the fake reports for ``request`` (rule in the module docstring)."""
    total = REPLY_PRIMING_TOKENS
    for message in request.messages:
        total += _message_tokens(message)
    for tool in request.tools or ():
        if tool.function is not None:
            chars = len(tool.function.name) + len(tool.function.description or "")
            total += PER_TOOL_TOKENS + _ceil_div4(chars)
    return total


def count_prompt_tokens(request: bytes | Mapping[str, object]) -> int:
    """The ``prompt_tokens`` the fake reports for a Chat Completions request body (JSON bytes
    or the decoded mapping): the rule in this module's docstring."""
    if isinstance(request, bytes | bytearray):
        parsed = msgspec.json.decode(request, type=ChatRequest)
    else:
        parsed = msgspec.convert(dict(request), ChatRequest)
    return prompt_tokens(parsed)


def answer_seed(request: ChatRequest) -> int:
    """A stable 64-bit digest of (model, messages) that the answer is derived from.

    It hashes what the messages say (roles and texts), not their JSON bytes, so two clients
    that serialize the same conversation differently get the same answer.
    """
    # surrogatepass: a Python caller may hand over lone surrogates, which JSON would reject.
    h = hashlib.blake2b(request.model.encode("utf-8", "surrogatepass"), digest_size=8)
    for message in request.messages:
        h.update(b"\x00" + message.role.encode("utf-8", "surrogatepass") + b"\x01")
        content = message.content
        if isinstance(content, str):
            # The same as a one-part list: protocols without string content (Gemini) must get
            # the same answer for the same words.
            h.update(b"\x02text\x03" + content.encode("utf-8", "surrogatepass"))
        elif content is not None:
            for part in content:
                text = (part.text or "").encode("utf-8", "surrogatepass")
                h.update(b"\x02" + part.type.encode("utf-8", "surrogatepass") + b"\x03" + text)
    return int.from_bytes(h.digest(), "big")


def book_key(request: ChatRequest) -> str:
    """The answer-book key of ``request``: a digest of the text of its user messages.

    Only user text counts (joined by newlines, whatever the message and part boundaries), so
    the key survives each protocol's translation: system prompts moved out of the messages,
    consecutive user turns merged, images and tool results carried in other shapes.
    """
    texts: list[str] = []
    for message in request.messages:
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            texts.append(content)
        elif content is not None:
            texts.extend(part.text or "" for part in content if part.type == "text")
    digest = hashlib.sha256("\n".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def prompt_key(request: bytes | Mapping[str, object]) -> str:
    """The answer-book key (see ``ModelBehaviour.answers``) of a Chat Completions request body
    (JSON bytes or the decoded mapping); ``model`` may be left out."""
    if isinstance(request, bytes | bytearray):
        raw = msgspec.json.decode(request, type=dict[str, object])
    else:
        raw = dict(request)
    raw.setdefault("model", "")
    return book_key(msgspec.convert(raw, ChatRequest))
