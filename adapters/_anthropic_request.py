"""Translating the normalized (OpenAI-shaped) request into an Anthropic Messages body (§3.2).

Anthropic rejects fields it does not know, so the body is built from an allow-list: OpenAI
parameters are mapped where Anthropic has an equivalent and dropped otherwise, and only the
Anthropic levers named in ``_NATIVE`` are passed through as they are.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ._request import ChatRequest, ContentPart, FilePart, ImagePart, Message, TextPart

__all__ = ["UnsupportedContent", "anthropic_body"]

# Anthropic-only request fields a caller may put in ``params``; forwarded unchanged.
_NATIVE = ("thinking", "cache_control", "top_k")
# Forbidden on 2026-10-21 (and later); a 400 even at their defaults, so they are left out.
_SAMPLING = ("temperature", "top_p", "top_k")
# OpenAI's reasoning_effort → output_config.effort (§7.8). "none" has no counterpart: omitted.
_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,]*)?;base64,(?P<data>.*)", re.S)
# An empty object schema: what a tool without parameters is declared with.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

_decode_json = msgspec.json.decode


class UnsupportedContent(ValueError):
    """The request holds something Anthropic cannot take (audio, an OpenAI file id, ...)."""


def anthropic_body(request: ChatRequest, *, sampling: bool) -> dict[str, Any]:
    """The JSON body for ``POST /v1/messages``. ``sampling``: whether the API version still
    accepts temperature/top_p/top_k (they are also left out when thinking is on). Raises
    :class:`UnsupportedContent`."""
    params = request.params
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
    if system is not None:
        body["system"] = system
    body["messages"] = turns
    _tools(params, body)
    stop = params.get("stop")
    if isinstance(stop, str):
        body["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        body["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    for name in _NATIVE:
        if name in params and params[name] is not None:
            body[name] = params[name]
    thinking = params.get("thinking")
    thinking_on = isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")
    if sampling and not thinking_on:
        for name in ("temperature", "top_p"):
            value = params.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                # OpenAI's range is 0-2, Anthropic's 0-1: the top of each means "most random".
                body[name] = min(max(float(value), 0.0), 1.0)
    else:
        # Thinking does not combine with sampling changes (a 400); neither does 2026-10-21.
        for name in _SAMPLING:
            body.pop(name, None)
    output_config = _output_config(params)
    if output_config:
        body["output_config"] = output_config
    user_id = _user_id(params)
    if user_id is not None:
        body["metadata"] = {"user_id": user_id}
    body["stream"] = request.stream
    return body


# -- messages ---------------------------------------------------------------------------------


def _turns(messages: list[Message]) -> tuple[str | list[dict[str, Any]] | None, list[Any]]:
    """(top-level system, alternating user/assistant turns).

    System and developer messages are hoisted wherever they stand; tool results become
    ``tool_result`` blocks of a user turn; consecutive turns of one role are merged (Anthropic
    merges them too, but then a tool_result would not be checked against the tool_use before it).
    """
    system: list[dict[str, Any]] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            system.extend(_text_blocks(message.content))
            continue
        if message.role == "tool":
            role, blocks = "user", [_tool_result(message)]
        elif message.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message)
        else:
            role, blocks = "user", _user_blocks(message.content)
        if not blocks:
            # Anthropic rejects empty content; an empty turn carries nothing anyway.
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return _system(system), [{"role": r, "content": _compact(b)} for r, b in turns]


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone plain text block as a string: the common, smallest form."""
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        text: str = blocks[0]["text"]
        return text
    return blocks


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if any("cache_control" in b for b in blocks):
        # Only the block form can carry a cache breakpoint.
        return blocks
    return "\n\n".join(b["text"] for b in blocks)


def _text_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            block = _text_block(part)
            if block is not None:
                blocks.append(block)
        else:
            raise UnsupportedContent(f"{_part_type(part)} parts are only allowed in user messages")
    return blocks


def _text_block(part: TextPart) -> dict[str, Any] | None:
    if not part.text:
        return None
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def _user_blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_blocks(content)
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            block = _text_block(part)
            if block is not None:
                blocks.append(block)
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url))
        elif isinstance(part, FilePart):
            blocks.append(_document_block(part.file))
        else:
            raise UnsupportedContent(f"Anthropic does not accept {_part_type(part)} input")
    return blocks


def _part_type(part: ContentPart) -> str:
    return str(type(part).__struct_config__.tag)


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        media_type, data = _data_url(url)
        if media_type not in _IMAGE_TYPES:
            raise UnsupportedContent(f"Anthropic does not accept {media_type} images")
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise UnsupportedContent("an image must be a data: or an http(s) URL")
    return {"type": "image", "source": source}


def _document_block(file: dict[str, Any]) -> dict[str, Any]:
    data_url = file.get("file_data")
    if not isinstance(data_url, str):
        # An OpenAI file id means nothing to Anthropic.
        raise UnsupportedContent("only inline (file_data) PDF files can be sent to Anthropic")
    media_type, data = _data_url(data_url)
    if media_type != "application/pdf":
        raise UnsupportedContent(f"Anthropic does not accept {media_type} documents")
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    filename = file.get("filename")
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return block


def _data_url(url: str) -> tuple[str, str]:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise UnsupportedContent("a data: URL must be base64-encoded with a media type")
    return match["type"].lower(), match["data"]


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.content)
    for call in message.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    return blocks


def _tool_input(arguments: str) -> Any:
    if not arguments.strip():
        # OpenAI clients send "" for a call without arguments; Anthropic needs an object.
        return {}
    try:
        decoded = _decode_json(arguments)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise UnsupportedContent("tool call arguments must be a JSON object")
    return decoded


def _tool_result(message: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
    content = message.content
    if isinstance(content, list):
        block["content"] = _text_blocks(content)
    elif content:
        block["content"] = content
    return block


# -- tools, output format, metadata -----------------------------------------------------------


def _tools(params: dict[str, Any], body: dict[str, Any]) -> None:
    tools = []
    for tool in params.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue  # OpenAI custom tools have no Anthropic counterpart
        function = tool.get("function")
        if not isinstance(function, dict):
            continue
        declared: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            declared["description"] = function["description"]
        declared["input_schema"] = function.get("parameters") or _NO_PARAMETERS
        if function.get("strict") is True:
            declared["strict"] = True
        tools.append(declared)
    if tools:
        body["tools"] = tools
    choice = _tool_choice(params.get("tool_choice"))
    if params.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None and tools:
        # Anthropic rejects tool_choice without tools; OpenAI ignores it.
        body["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    return None


def _output_config(params: dict[str, Any]) -> dict[str, Any]:
    native = params.get("output_config")
    config: dict[str, Any] = dict(native) if isinstance(native, dict) else {}
    response_format = params.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config.setdefault("format", {"type": "json_schema", "schema": schema})
    effort = _EFFORT.get(str(params.get("reasoning_effort")))
    if effort is not None:
        config.setdefault("effort", effort)
    return config


def _user_id(params: dict[str, Any]) -> str | None:
    metadata = params.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        user_id: str = metadata["user_id"]
        return user_id
    # OpenAI's end-user identifier serves the same purpose (abuse tracking per end user).
    for name in ("safety_identifier", "user"):
        value = params.get(name)
        if isinstance(value, str) and value:
            return value
    return None
