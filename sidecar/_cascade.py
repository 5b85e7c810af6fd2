"""Cascade routes: hold the cheap class's answer back and check it before anyone sees it.

The checks are deterministic only (no model judges another): an empty answer, one cut at
``max_tokens``, a refusal, invalid JSON when JSON was asked for, a JSON Schema mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from adapters import TextDelta, ToolCallDelta

from ._api import ChatCompletionRequest

if TYPE_CHECKING:
    from ._executor import ResponseSink, Served

__all__ = ["HeldAnswer", "cascade_check", "matches_schema"]


class HeldAnswer:
    """A sink that keeps a cascade's cheap answer until it has passed its checks."""

    def __init__(self) -> None:
        self.served: Served | None = None
        self.chunks: list[TextDelta | ToolCallDelta] = []

    async def begin(self, served: Served) -> None:
        self.served = served

    async def send(self, chunks: Sequence[TextDelta | ToolCallDelta]) -> None:
        self.chunks.extend(chunks)

    def clear(self) -> None:
        self.served = None
        self.chunks.clear()

    async def replay(self, sink: ResponseSink) -> None:
        assert self.served is not None
        await sink.begin(self.served)
        if self.chunks:
            await sink.send(self.chunks)

    def text(self) -> str:
        return "".join(c.text for c in self.chunks if isinstance(c, TextDelta))


def cascade_check(request: ChatCompletionRequest, held: HeldAnswer, finish: str) -> str | None:
    """Why the cheap answer is not good enough, or None when it passes. Deterministic only."""
    if finish in ("length", "context_overflow"):
        return "truncated"
    if finish == "content_filter":
        return "refused"
    calls = any(isinstance(c, ToolCallDelta) for c in held.chunks)
    text = held.text()
    if not calls and not text.strip():
        return "empty"
    wanted = (request.response_format or {}).get("type")
    if wanted in ("json_object", "json_schema") and not calls:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return "invalid_json"
        schema = ((request.response_format or {}).get("json_schema") or {}).get("schema")
        if (
            wanted == "json_schema"
            and isinstance(schema, dict)
            and not matches_schema(value, schema)
        ):
            return "schema_mismatch"
    return None


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def matches_schema(value: Any, schema: dict[str, Any]) -> bool:
    """A structural check of the JSON Schema keywords structured output uses: type, required,
    properties, items, enum. It catches the cheap model's usual failures (missing keys, wrong
    types); it is not a full validator."""
    expected = schema.get("type")
    types = expected if isinstance(expected, list) else [expected] if expected else []
    if types:
        allowed = tuple(t for name in types for t in _flatten(_JSON_TYPES.get(name, object)))
        # bool is an int in Python, but not an integer or a number in JSON.
        if isinstance(value, bool) and bool not in allowed:
            return False
        if not isinstance(value, allowed):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        if any(key not in value for key in schema.get("required", ())):
            return False
        properties = schema.get("properties", {})
        return all(
            matches_schema(value[key], sub)
            for key, sub in properties.items()
            if key in value and isinstance(sub, dict)
        )
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return all(matches_schema(item, schema["items"]) for item in value)
    return True


def _flatten(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)
