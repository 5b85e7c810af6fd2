"""The part of a Gemini ``generateContent`` request the fake reads, checked as Gemini does.

Google's proto-JSON parser takes camelCase and snake_case for every field (and google-genai
sends a mix: ``parameters_json_schema``, ``thinking_budget``), so keys are normalized to
camelCase before decoding, except inside values that are user data (function arguments and
responses, JSON schemas). Unknown fields at the top level and in ``generationConfig`` are
rejected with Google's wording: that is where a translation bug (an OpenAI field sent as is)
would land, and the real API would refuse it.

The token rule and the answer are the shared ones (``_prompt``, ``_answer``): the request is
rewritten into the fake's Chat Completions shape, with

* ``systemInstruction`` as a system message, ``model`` turns as assistant messages;
* an ``inlineData``/``fileData`` part as a non-text part (85 tokens);
* a ``functionCall`` as a tool call (its name and JSON-encoded ``args`` count as characters);
* a ``functionResponse`` as text: its JSON-encoded ``response``;
* each function declaration as a tool, its schema from ``parametersJsonSchema`` or
  ``parameters`` (whose OpenAPI types, ``"STRING"``, are lowercased for the answer planner).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ._prompt import ChatRequest

__all__ = [
    "GeminiInvalid",
    "GeminiRequest",
    "as_chat_request",
    "parse_gemini_request",
]

# Keys whose values are user data: their own keys are never renamed.
_OPAQUE = frozenset(
    {
        "args",
        "response",
        "parameters",
        "parametersJsonSchema",
        "responseSchema",
        "responseJsonSchema",
        "responseJsonSchemaOrdered",
        "labels",
        "metadata",
    }
)
# google-genai 3.4.0 `_GenerateContentParameters_to_mldev` / `_GenerateContentConfig_to_mldev`.
_TOP_LEVEL = frozenset(
    {
        "model",
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
        "generationConfig",
        "serviceTier",
        "labels",
        "store",
    }
)
_GENERATION_CONFIG = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "responseLogprobs",
        "logprobs",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "routingConfig",
        "modelSelectionConfig",
        "responseModalities",
        "mediaResolution",
        "speechConfig",
        "audioTimestamp",
        "thinkingConfig",
        "imageConfig",
        "enableEnhancedCivicAnswers",
        "modelArmorConfig",
        "audioTranscriptionConfig",
        "continuationToken",
        "generationOutputConfig",
    }
)
_ROLES = frozenset({"user", "model", "function"})
_SNAKE = re.compile(r"_([a-z0-9])")

_BAD_JSON = "Invalid JSON payload received. Unexpected token.\n"


class GeminiInvalid(Exception):
    """A request Gemini would reject with a 400 ``INVALID_ARGUMENT``."""


class _Blob(msgspec.Struct, rename="camel"):
    mime_type: str = ""


class _FunctionCall(msgspec.Struct):
    name: str = ""
    args: dict[str, Any] | None = None


class _FunctionResponse(msgspec.Struct):
    name: str = ""
    response: dict[str, Any] | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool = False
    inline_data: _Blob | None = None
    file_data: _Blob | None = None
    function_call: _FunctionCall | None = None
    function_response: _FunctionResponse | None = None


class Content(msgspec.Struct):
    role: str | None = None
    parts: list[_Part] = []


class _FunctionDeclaration(msgspec.Struct, rename="camel"):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class _Tool(msgspec.Struct, rename="camel"):
    # Built-in tools (googleSearch, codeExecution, ...) are accepted and ignored.
    function_declarations: list[_FunctionDeclaration] | None = None


class _FunctionCallingConfig(msgspec.Struct, rename="camel"):
    mode: str | None = None
    allowed_function_names: list[str] | None = None


class _ToolConfig(msgspec.Struct, rename="camel"):
    function_calling_config: _FunctionCallingConfig | None = None


class ThinkingConfig(msgspec.Struct, rename="camel"):
    thinking_budget: int | None = None
    include_thoughts: bool | None = None
    thinking_level: str | None = None


class GenerationConfig(msgspec.Struct, rename="camel"):
    max_output_tokens: int | None = None
    candidate_count: int | None = None
    thinking_config: ThinkingConfig | None = None


class GeminiRequest(msgspec.Struct, rename="camel"):
    contents: list[Content] = []
    system_instruction: Content | None = None
    tools: list[_Tool] | None = None
    tool_config: _ToolConfig | None = None
    generation_config: GenerationConfig | None = None


def _camel(key: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), key)


def _normalize(value: Any) -> Any:
    """``value`` with every key in camelCase, except under the user-data keys."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _camel(key) if isinstance(key, str) else key
            out[name] = item if name in _OPAQUE else _normalize(item)
        return out
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    return value


def _unknown(fields: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in fields:
        if key not in known:
            at = f" at '{where}'" if where else ""
            raise GeminiInvalid(
                f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            )


def parse_gemini_request(body: bytes) -> GeminiRequest:
    """Decode and check a request body; raises :class:`GeminiInvalid` as Gemini would 400."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise GeminiInvalid(_BAD_JSON) from None
    if not isinstance(raw, dict):
        raise GeminiInvalid(_BAD_JSON)
    fields = _normalize(raw)
    _unknown(fields, _TOP_LEVEL, "")
    config = fields.get("generationConfig")
    if isinstance(config, dict):
        _unknown(config, _GENERATION_CONFIG, "generation_config")
    try:
        request = msgspec.convert(fields, GeminiRequest)
    except msgspec.ValidationError as exc:
        raise GeminiInvalid(f"Invalid JSON payload received. {exc}") from None
    _check(request)
    return request


def _check(request: GeminiRequest) -> None:
    if not request.contents:
        raise GeminiInvalid("* GenerateContentRequest.contents: contents is not specified\n")
    previous_calls = 0
    for i, content in enumerate(request.contents):
        if content.role is not None and content.role not in _ROLES:
            raise GeminiInvalid("Please use a valid role: user, model.")
        if not content.parts:
            raise GeminiInvalid(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )
        responses = sum(p.function_response is not None for p in content.parts)
        if responses and responses != previous_calls:
            raise GeminiInvalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        previous_calls = sum(p.function_call is not None for p in content.parts)
    config = request.generation_config or GenerationConfig()
    if config.max_output_tokens is not None and config.max_output_tokens < 0:
        raise GeminiInvalid("max_output_tokens must be positive.")
    if config.candidate_count not in (None, 1):
        # Gemini supports several candidates; this fake answers one, and says so.
        raise GeminiInvalid("This fake server only supports candidateCount=1.")


def _lower_types(schema: Any) -> Any:
    """An OpenAPI-subset schema (``"type": "STRING"``) in JSON Schema's lowercase."""
    if isinstance(schema, dict):
        return {
            k: v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _message(role: str, content: Content) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for part in content.parts:
        if part.function_call is not None:
            arguments = msgspec.json.encode(part.function_call.args or {}).decode()
            calls.append({"function": {"name": part.function_call.name, "arguments": arguments}})
        elif part.function_response is not None:
            text = msgspec.json.encode(part.function_response.response or {}).decode()
            parts.append({"type": "text", "text": text})
        elif part.inline_data is not None or part.file_data is not None:
            parts.append({"type": "image_url"})
        elif part.text is not None:
            parts.append({"type": "text", "text": part.text})
    message: dict[str, Any] = {"role": role, "content": parts}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(
    request: GeminiRequest, tools: list[dict[str, Any]]
) -> tuple[object, list[dict[str, Any]]]:
    """(Chat Completions tool_choice, tools with the allowed ones first) for the planner.

    Reordering changes no token count; it makes the planner, which picks the first tool,
    pick an allowed one.
    """
    config = request.tool_config.function_calling_config if request.tool_config else None
    if config is None:
        return "auto", tools
    allowed = config.allowed_function_names or []
    declared = {t["function"]["name"] for t in tools}
    for name in allowed:
        if name not in declared:
            raise GeminiInvalid(
                f"Function name '{name}' in allowed_function_names is not declared in tools."
            )
    ordered = sorted(tools, key=lambda t: t["function"]["name"] not in allowed)
    mode = (config.mode or "AUTO").upper()
    if mode == "NONE":
        return "none", tools
    if mode == "ANY":
        if len(allowed) == 1:
            return {"type": "function", "function": {"name": allowed[0]}}, ordered
        return "required", ordered
    return "auto", ordered


def as_chat_request(model: str, request: GeminiRequest) -> ChatRequest:
    """``request`` in the fake's Chat Completions shape (rules in the module docstring)."""
    messages: list[dict[str, Any]] = []
    if request.system_instruction is not None:
        messages.append(_message("system", request.system_instruction))
    roles = {"model": "assistant", "function": "tool"}
    for content in request.contents:
        messages.append(_message(roles.get(content.role or "user", "user"), content))
    tools: list[dict[str, Any]] = []
    for tool in request.tools or ():
        for fn in tool.function_declarations or ():
            schema = fn.parameters_json_schema
            if schema is None and fn.parameters is not None:
                schema = _lower_types(fn.parameters)
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": fn.name,
                        "description": fn.description,
                        "parameters": schema,
                    },
                }
            )
    choice, tools = _tool_choice(request, tools)
    chat: dict[str, Any] = {"model": model, "messages": messages, "tool_choice": choice}
    if tools:
        chat["tools"] = tools
    return msgspec.convert(chat, ChatRequest)
