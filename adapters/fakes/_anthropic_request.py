"""What the fake Anthropic server reads from a Messages request, how it validates it, and how it
maps it onto the shared answer machinery (so all fakes answer and count tokens the same way).

The schema is independent of tollgate's own request types, so a translation bug in the adapter
shows up as a 400 or a wrong logged body instead of being mirrored. Checks follow the real API
(shared reference §3.1, §3.2, §9): ``max_tokens`` required; on API version 2026-10-21
temperature/top_p/top_k rejected; thinking budget ≥ 1024 and < max_tokens; non-empty text
blocks; each ``tool_use`` answered by a ``tool_result`` in the next turn and vice versa.

Token accounting (the shared rule, ``_prompt``): the request is read as the Chat Completions
conversation it stands for (system → a system message, ``tool_result`` blocks → tool messages,
``tool_use`` blocks → tool calls, image/document blocks → non-text parts, tools → functions),
and its ``prompt_tokens`` is the Anthropic total input. Of it, ``cache_read_input_tokens`` is the
behaviour's ``cached_prompt_tokens`` (capped) and, when a block carries ``cache_control``,
``cache_creation_input_tokens`` is the rest of the prefix up to the last marked block (tools,
then system, then messages, as Anthropic orders its cache); ``input_tokens`` is what remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ._prompt import ChatRequest, prompt_tokens

__all__ = [
    "API_VERSIONS",
    "CacheSplit",
    "Invalid",
    "MessagesRequest",
    "cache_split",
    "parse_request",
    "to_chat",
    "validate",
]

# The versions the fake serves; 2026-10-21 is the first without sampling parameters.
API_VERSIONS = frozenset({"2023-01-01", "2023-06-01", "2026-10-21"})
MODERN_VERSION = "2026-10-21"
MIN_THINKING_BUDGET = 1024
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_NON_TEXT = frozenset({"image", "document"})


class Source(msgspec.Struct, frozen=True):
    type: str = ""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None
    source: Source | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    cache_control: dict[str, Any] | None = None


class Turn(msgspec.Struct, frozen=True):
    role: str
    content: str | list[Block]


class Tool(msgspec.Struct, frozen=True):
    name: str
    description: str | None = None
    input_schema: dict[str, object] | None = None
    # None for a client tool; server tools (web_search_..., ...) name their type.
    type: str | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, frozen=True):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, frozen=True):
    type: str
    budget_tokens: int | None = None


_Unset = msgspec.UnsetType


class MessagesRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Turn]
    # Required by the API; optional here so that its absence gets Anthropic's own message.
    max_tokens: int | None = None
    system: str | list[Block] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    cache_control: dict[str, Any] | None = None
    # UNSET tells "absent" from "null": 2026-10-21 rejects the field even when null.
    temperature: float | _Unset | None = msgspec.UNSET
    top_p: float | _Unset | None = msgspec.UNSET
    top_k: int | _Unset | None = msgspec.UNSET


class Invalid(Exception):
    """A request Anthropic rejects with 400 ``invalid_request_error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_decoder = msgspec.json.Decoder(MessagesRequest)


def parse_request(body: bytes) -> MessagesRequest:
    """The request, or :class:`Invalid` with a message in the API's (pydantic) style."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Object missing required field `"):
            field = text.split("`")[1]
            where = text.rpartition("at `$")[2].rstrip("`").lstrip(".") if "at `$" in text else ""
            raise Invalid(f"{where + '.' if where else ''}{field}: Field required") from None
        where = text.rpartition("at `$")[2].rstrip("`").lstrip(".") if "at `$" in text else ""
        raise Invalid(f"{where or 'body'}: {text.partition(' - at')[0]}") from None
    except msgspec.DecodeError:
        raise Invalid("There was an issue with the format of your request body.") from None


def validate(req: MessagesRequest, version: str) -> int:
    """Reject what Anthropic would (raises :class:`Invalid`); return max_tokens."""
    if req.max_tokens is None:
        raise Invalid("max_tokens: Field required")
    if version >= MODERN_VERSION:
        for name in ("temperature", "top_p", "top_k"):
            if getattr(req, name) is not msgspec.UNSET:
                raise Invalid(f"{name}: Extra inputs are not permitted")
    if req.max_tokens < 1:
        raise Invalid("max_tokens: Input should be greater than or equal to 1")
    if not req.messages:
        raise Invalid("messages: at least one message is required")
    thinking = req.thinking
    if thinking is not None and thinking.type == "enabled":
        budget = thinking.budget_tokens
        if budget is None:
            raise Invalid("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_THINKING_BUDGET:
            raise Invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_THINKING_BUDGET}"
            )
        if budget >= req.max_tokens:
            raise Invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    _validate_system(req.system)
    _validate_turns(req.messages, version)
    _validate_tools(req)
    return req.max_tokens


def _validate_system(system: str | list[Block] | None) -> None:
    if isinstance(system, list):
        for i, block in enumerate(system):
            if block.type != "text":
                raise Invalid(f"system.{i}.type: Input should be 'text'")
            _check_block(block, f"system.{i}")


def _validate_turns(turns: list[Turn], version: str) -> None:
    roles = {"user", "assistant"} | ({"system"} if version >= MODERN_VERSION else set())
    pending: set[str] = set()  # tool_use ids of the previous assistant turn
    for i, turn in enumerate(turns):
        if turn.role not in roles:
            allowed = " or ".join(f"'{r}'" for r in sorted(roles))
            raise Invalid(f"messages.{i}.role: Input should be {allowed}")
        blocks = turn.content if isinstance(turn.content, list) else []
        if not turn.content and not (i == len(turns) - 1 and turn.role == "assistant"):
            raise Invalid(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(blocks):
            _check_block(block, f"messages.{i}.content.{j}")
        results = {b.tool_use_id for b in blocks if b.type == "tool_result"}
        if turn.role == "user":
            missing = sorted(pending - results)
            if missing:
                raise Invalid(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message."
                )
            for j, block in enumerate(blocks):
                if block.type == "tool_result" and block.tool_use_id not in pending:
                    raise Invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.tool_use_id}. Each `tool_result` block "
                        "must have a corresponding `tool_use` block in the previous message."
                    )
            pending = set()
        elif turn.role == "assistant":
            if results:
                raise Invalid(f"messages.{i}: `tool_result` blocks can only be in user messages")
            pending = {b.id or "" for b in blocks if b.type == "tool_use"}


def _check_block(block: Block, where: str) -> None:
    if block.type == "text" and not block.text:
        raise Invalid(f"{where}: text content blocks must be non-empty")
    if block.type == "image":
        source = block.source
        if source is None:
            raise Invalid(f"{where}.source: Field required")
        if source.type == "base64":
            if source.media_type not in _IMAGE_TYPES:
                raise Invalid(
                    f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                    "'image/png', 'image/gif' or 'image/webp'"
                )
            if not source.data:
                raise Invalid(f"{where}.source.base64.data: Field required")
        elif source.type == "url":
            if not source.url:
                raise Invalid(f"{where}.source.url.url: Field required")
        elif source.type != "file":
            raise Invalid(f"{where}.source: Input tag '{source.type}' is not a valid source type")
    if block.type == "tool_use" and not isinstance(block.input, dict):
        raise Invalid(f"{where}.tool_use.input: Input should be a valid dictionary")


def _validate_tools(req: MessagesRequest) -> None:
    choice = req.tool_choice
    if choice is None:
        return
    if choice.type not in ("auto", "any", "none", "tool"):
        raise Invalid(
            f"tool_choice.type: Input tag '{choice.type}' found using 'type' does not match any "
            "of the expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if not req.tools and choice.type != "none":
        raise Invalid("tool_choice may only be specified while providing tools.")
    if choice.type == "tool" and not any(t.name == choice.name for t in req.tools or ()):
        raise Invalid(f"tool_choice: Tool '{choice.name}' not found in tools.")


# -- the shared answer machinery's view of the request ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Converted:
    chat: ChatRequest
    # For each Anthropic turn, how many chat messages exist once it is converted (prefixes).
    ends: list[int]
    system_end: int


def _text_of(content: str | list[Block] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(b.text or "" for b in content if b.type == "text")


def _parts(blocks: list[Block]) -> list[dict[str, object]]:
    parts: list[dict[str, object]] = []
    for block in blocks:
        if block.type == "text":
            parts.append({"type": "text", "text": block.text or ""})
        elif block.type in _NON_TEXT:
            parts.append({"type": block.type})
    return parts


def _convert(req: MessagesRequest) -> _Converted:
    messages: list[dict[str, object]] = []
    if req.system:
        system = req.system
        messages.append(
            {"role": "system", "content": system if isinstance(system, str) else _parts(system)}
        )
    system_end = len(messages)
    ends: list[int] = []
    for turn in req.messages:
        if isinstance(turn.content, str):
            messages.append({"role": turn.role, "content": turn.content})
            ends.append(len(messages))
            continue
        calls = [
            {"function": {"name": b.name or "", "arguments": msgspec.json.encode(b.input).decode()}}
            for b in turn.content
            if b.type == "tool_use"
        ]
        # Tool results first, as the tool messages they stand for; then the turn's own parts.
        for block in turn.content:
            if block.type == "tool_result":
                messages.append({"role": "tool", "content": _text_of(block.content)})
        parts = _parts(turn.content)
        if parts or calls:
            message: dict[str, object] = {"role": turn.role, "content": parts or None}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
        ends.append(len(messages))
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
            },
        }
        for t in req.tools or ()
        if t.type in (None, "custom")
    ]
    chat = msgspec.convert(
        {
            "model": req.model,
            "messages": messages,
            "tools": tools or None,
            "tool_choice": _tool_choice(req.tool_choice),
            "max_tokens": req.max_tokens,
        },
        ChatRequest,
    )
    return _Converted(chat, ends, system_end)


def _tool_choice(choice: ToolChoice | None) -> object:
    if choice is None or choice.type == "auto":
        return "auto"
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name or ""}}
    return "none"


def to_chat(req: MessagesRequest) -> ChatRequest:
    """The Chat Completions request ``req`` stands for (see the module docstring)."""
    return _convert(req).chat


@dataclass(frozen=True, slots=True)
class CacheSplit:
    """The prompt's tokens by class; they sum to the shared rule's ``prompt_tokens``."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def _marked(blocks: str | list[Block] | None) -> bool:
    return isinstance(blocks, list) and any(b.cache_control is not None for b in blocks)


def cache_split(req: MessagesRequest, cached_read: int) -> tuple[ChatRequest, CacheSplit]:
    """The chat view of ``req`` and its input tokens split as described in the module docstring."""
    converted = _convert(req)
    chat = converted.chat
    total = prompt_tokens(chat)
    read = min(cached_read, total)
    prefix_end: int | None = None
    if req.cache_control is not None:
        prefix_end = len(chat.messages)  # automatic caching: up to the last cacheable block
    else:
        for i in range(len(req.messages) - 1, -1, -1):
            if _marked(req.messages[i].content):
                prefix_end = converted.ends[i]
                break
        if prefix_end is None and _marked(req.system):
            prefix_end = converted.system_end
        if prefix_end is None and any(t.cache_control is not None for t in req.tools or ()):
            prefix_end = 0
    written = 0
    if prefix_end is not None:
        prefix = prompt_tokens(msgspec.structs.replace(chat, messages=chat.messages[:prefix_end]))
        written = max(prefix - read, 0)
    return chat, CacheSplit(total - read - written, written, read)
