"""Translating the normalized (OpenAI-shaped) request into a Gemini ``generateContent`` body.

Shared reference, provider protocols §4.2 and §7. The body is written in camelCase, the
spelling of Google's own REST docs; the API also accepts snake_case, but one spelling keeps the
fake's request log and the golden tests readable. Parameters with no Gemini counterpart are
dropped rather than forwarded: Gemini rejects unknown fields with a 400.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

import msgspec

from ._request import AudioPart, ChatRequest, ContentPart, FilePart, ImagePart, Message, TextPart

__all__ = ["GeminiTranslationError", "gemini_request_body"]

# OpenAI's effort words map one to one onto Gemini's ThinkingLevel (types.py `ThinkingLevel`).
# "none" has no level (MINIMAL still thinks), so it is dropped rather than guessed.
_THINKING_LEVELS = {
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "XHIGH",
}

# OpenAI sampling fields with an exact generationConfig counterpart.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}

# Provider levers: params keys passed through verbatim to a top-level Gemini field.
_TOP_LEVEL_LEVERS = {"safety_settings": "safetySettings", "cached_content": "cachedContent"}

_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}


class GeminiTranslationError(ValueError):
    """The request cannot be expressed in Gemini's format (it is not sent)."""


def gemini_request_body(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` body for ``request`` (the model goes in the URL, not here)."""
    params = request.params
    body: dict[str, Any] = {}
    system, contents = _contents(request.messages)
    body["contents"] = contents
    if system:
        body["systemInstruction"] = {"parts": system}
    declarations = _function_declarations(params.get("tools"))
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        calling = _function_calling_config(params.get("tool_choice"))
        if calling is not None:
            body["toolConfig"] = {"functionCallingConfig": calling}
    for key, field in _TOP_LEVEL_LEVERS.items():
        if params.get(key) is not None:
            body[field] = params[key]
    body["generationConfig"] = _generation_config(request)
    return body


# -- contents ------------------------------------------------------------------------------


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents), with consecutive same-role turns merged."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    # tool_call_id -> function name. Updated as assistant turns go by, so a tool message
    # resolves against the latest call with its id (ids repeat across responses: call_0, ...).
    call_names: dict[str, str] = {}
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            # Gemini has one system instruction; system messages anywhere contribute to it.
            system.extend(_text_parts(message.content))
            continue
        if message.role == "assistant":
            role = "model"
            parts = _text_parts(message.content)
            for call in message.tool_calls or ():
                call_names[call.id] = call.function.name
                parts.append(
                    {
                        "functionCall": {
                            "name": call.function.name,
                            "args": _call_args(call.function.arguments, index),
                        }
                    }
                )
        elif message.role == "tool":
            role = "user"
            parts = [_function_response(message, call_names, index)]
        else:
            role = "user"
            parts = _user_parts(message.content, index)
        if not parts:
            # Gemini rejects a content with no parts (e.g. an assistant message with neither
            # text nor calls); it says nothing either.
            continue
        if contents and contents[-1]["role"] == role:
            # Gemini wants turns to alternate; OpenAI allows runs (several tool results, a
            # tool result followed by a user note), which become one turn's parts.
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _text_parts(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [{"text": p.text} for p in content if isinstance(p, TextPart) and p.text]


def _user_parts(content: str | list[ContentPart] | None, index: int) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_url_part(part.image_url.url, index))
        elif isinstance(part, AudioPart):
            parts.append(_audio_part(part, index))
        elif isinstance(part, FilePart):
            parts.append(_file_part(part, index))
    return parts


def _url_part(url: str, index: int) -> dict[str, Any]:
    if url.startswith("data:"):
        mime, data = _split_data_url(url, index)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        # Gemini fetches fileData URIs itself; it needs the type, guessed from the name.
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise GeminiTranslationError(f"messages[{index}]: unsupported image URL scheme")


def _split_data_url(url: str, index: int) -> tuple[str, str]:
    header, sep, data = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if not sep or encoding != "base64" or not mime:
        raise GeminiTranslationError(f"messages[{index}]: data URLs must be base64 with a type")
    return mime, data


def _audio_part(part: AudioPart, index: int) -> dict[str, Any]:
    data = part.input_audio.get("data")
    mime = _AUDIO_MIME.get(str(part.input_audio.get("format")))
    if not isinstance(data, str) or mime is None:
        raise GeminiTranslationError(f"messages[{index}]: input_audio needs data and wav/mp3")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _file_part(part: FilePart, index: int) -> dict[str, Any]:
    data = part.file.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        mime, payload = _split_data_url(data, index)
        return {"inlineData": {"mimeType": mime, "data": payload}}
    # An OpenAI file_id means nothing to Google.
    raise GeminiTranslationError(f"messages[{index}]: only inline (data URL) files are supported")


def _call_args(arguments: str, index: int) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object Gemini wants."""
    if not arguments.strip():
        return {}
    try:
        args = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        raise GeminiTranslationError(
            f"messages[{index}]: tool call arguments are not valid JSON"
        ) from None
    if not isinstance(args, dict):
        raise GeminiTranslationError(f"messages[{index}]: tool call arguments must be an object")
    return args


def _function_response(
    message: Message, call_names: Mapping[str, str], index: int
) -> dict[str, Any]:
    name = call_names.get(message.tool_call_id or "") or message.name
    if not name:
        raise GeminiTranslationError(
            f"messages[{index}]: tool message answers no earlier tool call"
        )
    text = "".join(p["text"] for p in _text_parts(message.content))
    # A JSON object goes as is (Gemini treats the whole object as the output); anything else
    # under "output", the key Gemini's FunctionResponse documents for it.
    response: Any = None
    if text.lstrip().startswith("{"):
        try:
            response = msgspec.json.decode(text)
        except msgspec.DecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


# -- tools ---------------------------------------------------------------------------------


def _function_declarations(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    if not isinstance(tools, list):
        return declarations
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            # Non-function tools (OpenAI's custom or built-in ones) have no Gemini form.
            continue
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            # parametersJsonSchema takes JSON Schema as is; `parameters` would need Google's
            # OpenAPI subset (uppercase types, no $ref).
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return declarations


def _function_calling_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict):
            return {"mode": "ANY", "allowedFunctionNames": [function.get("name")]}
        allowed = choice.get("allowed_tools")
        if choice.get("type") == "allowed_tools" and isinstance(allowed, dict):
            names = [
                t["function"]["name"]
                for t in allowed.get("tools") or ()
                if isinstance(t, dict) and isinstance(t.get("function"), dict)
            ]
            # VALIDATED is Gemini's "call one of these or answer in text" (OpenAI's "auto").
            mode = "ANY" if allowed.get("mode") == "required" else "VALIDATED"
            return {"mode": mode, "allowedFunctionNames": names}
    raise GeminiTranslationError("unsupported tool_choice")


# -- generationConfig ----------------------------------------------------------------------


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    params = request.params
    # Always sent, so the worst-case cost of the call is bounded (Gemini's default is large).
    config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
    for key, field in _SAMPLING.items():
        if params.get(key) is not None:
            config[field] = params[key]
    stop = params.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    config.update(_response_format(params.get("response_format")))
    thinking = params.get("thinking_config")
    if isinstance(thinking, dict):
        # The provider lever wins over the portable reasoning_effort.
        config["thinkingConfig"] = thinking
    else:
        level = _THINKING_LEVELS.get(str(params.get("reasoning_effort")))
        if level is not None:
            config["thinkingConfig"] = {"thinkingLevel": level}
    return config


def _response_format(response_format: Any) -> dict[str, Any]:
    if not isinstance(response_format, dict):
        return {}
    kind = response_format.get("type")
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        if isinstance(schema, dict):
            out["responseJsonSchema"] = schema
        return out
    return {}
