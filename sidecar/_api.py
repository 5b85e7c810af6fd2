"""The OpenAI Chat Completions request as tollgate's clients send it, decoded and checked."""

from __future__ import annotations

from typing import Any

import msgspec

from adapters import ImagePart, Message

from ._errors import TollgateError

__all__ = ["ChatCompletionRequest", "StreamOptions", "parse_chat_request"]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def output_limit(self) -> int | None:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens

    def needs(self) -> frozenset[str]:
        """The capabilities a model must have to serve this request."""
        needs = set()
        if self.stream:
            needs.add("streaming")
        if self.tools:
            needs.add("tools")
        if self.response_format and self.response_format.get("type") == "json_schema":
            needs.add("structured_output")
        for message in self.messages:
            if isinstance(message.content, list) and any(
                isinstance(part, ImagePart) for part in message.content
            ):
                needs.add("vision")
                break
        return frozenset(needs)


# Fields tollgate interprets itself; every other field is passed through to the provider.
# ``tools`` and ``response_format`` are read for routing (they need capabilities) and passed
# through as well: the model must see them.
_HANDLED = frozenset(ChatCompletionRequest.__struct_fields__) - {"tools", "response_format"}
# Routing inputs that may ride in ``metadata``; they are not forwarded upstream.
ROUTING_METADATA = ("task", "tenant")


def parse_chat_request(body: bytes) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Decode and check a request body; returns it typed, plus the fields to pass through.

    Raises a typed ``invalid_request`` error that says what is wrong and where.
    """
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise TollgateError.invalid_request(
            f"the body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(raw, dict):
        raise TollgateError.invalid_request("the body must be a JSON object", code="invalid_type")
    try:
        request = msgspec.convert(raw, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        _, _, where = message.rpartition(" - at `$.")
        raise TollgateError.invalid_request(
            message, code="invalid_type", param=where.rstrip("`") or None
        ) from exc
    if not request.messages:
        raise TollgateError.invalid_request("messages must not be empty", param="messages")
    if request.n != 1:
        raise TollgateError.invalid_request("only n = 1 is supported", param="n")
    limit = request.output_limit
    if limit is not None and limit < 1:
        raise TollgateError.invalid_request("max_tokens must be positive", param="max_tokens")
    params = {key: value for key, value in raw.items() if key not in _HANDLED}
    metadata = {k: v for k, v in (request.metadata or {}).items() if k not in ROUTING_METADATA}
    if metadata:
        params["metadata"] = metadata
    return request, params
