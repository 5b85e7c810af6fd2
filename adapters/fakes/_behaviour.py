"""What the fake OpenAI server does: server settings, per-model behaviour and injectable faults.

These structs are the JSON schema of the control API (``PUT /_fake/models/{model}``), so every
field has a default and unknown fields are rejected: a typo in a test's script fails loudly
instead of silently doing nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

__all__ = [
    "BookAnswer",
    "ContentFilterFault",
    "DropFault",
    "ErrorPreset",
    "FakeOpenAISettings",
    "Fault",
    "HangBeforeFirstTokenFault",
    "HangBeforeHeadersFault",
    "MalformedSSEFault",
    "MidStreamErrorFault",
    "ModelBehaviour",
    "NoDoneFault",
    "StatusFault",
    "ToolUse",
]

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
HttpErrorStatus = Annotated[int, msgspec.Meta(ge=400, le=599)]

# The OpenAI error bodies the fake can produce (see ``_errors.PRESETS`` for status/type/code).
ErrorPreset: TypeAlias = Literal[
    "invalid_request_error",
    "context_length_exceeded",
    "invalid_api_key",
    "unsupported_country_region_territory",
    "model_not_found",
    "rate_limit_exceeded",
    "insufficient_quota",
    "request_too_large",
    "server_error",
    "bad_gateway",
    "overloaded",
    "gateway_timeout",
]

# When a model answers with a tool call: "forced" only when `tool_choice` is "required" or names
# a function (what a real model must do); "offered" whenever tools are offered and tool_choice
# is not "none" (a model that always picks a tool).
ToolUse: TypeAlias = Literal["forced", "offered"]


class _FaultBase(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """When a fault fires. Neither set: every eligible request. ``times``: the next N eligible
    requests. ``rate``: each eligible request with this probability, drawn from the model's
    seeded RNG (reproducible). Both: with probability ``rate``, at most ``times`` times."""

    times: PosInt | None = None
    rate: Probability | None = None


class StatusFault(_FaultBase, frozen=True, tag="status"):
    """Answer with an HTTP error and OpenAI's error body for it. ``error`` picks the body
    (default: the usual one for ``status``); ``status`` defaults to the preset's status."""

    status: HttpErrorStatus | None = None
    error: ErrorPreset | None = None
    # Replaces the preset's message.
    message: str | None = None
    # `retry-after` (seconds) and the non-standard `retry-after-ms`.
    retry_after_s: Seconds | None = None
    retry_after_ms: NonNegInt | None = None
    # `x-should-retry`, which overrides the SDKs' own retry decision.
    should_retry: bool | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class MidStreamErrorFault(_FaultBase, frozen=True, tag="mid_stream_error"):
    """Streaming only: after ``after_chunks`` answer chunks, a ``data: {"error": ...}`` event,
    then the stream ends (no ``[DONE]``)."""

    after_chunks: NonNegInt = 0
    error: ErrorPreset = "server_error"
    message: str | None = None


class DropFault(_FaultBase, frozen=True, tag="drop"):
    """Close the connection after ``after_chunks`` answer chunks, with no terminator. A
    non-streaming request gets its headers and half of its body, then the close."""

    after_chunks: NonNegInt = 0


class MalformedSSEFault(_FaultBase, frozen=True, tag="malformed_sse"):
    """Streaming only: insert ``line`` as an SSE event after ``after_chunks`` answer chunks; the
    stream then carries on normally and ends with ``[DONE]``."""

    after_chunks: NonNegInt = 0
    line: str = 'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "oops'


class NoDoneFault(_FaultBase, frozen=True, tag="no_done"):
    """Streaming only: a complete stream without the ``data: [DONE]`` terminator."""


class HangBeforeHeadersFault(_FaultBase, frozen=True, tag="hang_before_headers"):
    """Never send response headers (until the client goes away or the server stops)."""


class HangBeforeFirstTokenFault(_FaultBase, frozen=True, tag="hang_before_first_token"):
    """Send the 200 headers, then nothing (until the client goes away or the server stops)."""


class ContentFilterFault(_FaultBase, frozen=True, tag="content_filter"):
    """Stop the answer after ``after_chunks`` chunks with ``finish_reason: "content_filter"``."""

    after_chunks: NonNegInt = 0


Fault: TypeAlias = (
    StatusFault
    | MidStreamErrorFault
    | DropFault
    | MalformedSSEFault
    | NoDoneFault
    | HangBeforeHeadersFault
    | HangBeforeFirstTokenFault
    | ContentFilterFault
)

# Faults that only make sense inside an SSE stream: non-streaming requests neither trigger nor
# consume them (and draw no random number for them).
STREAM_ONLY_FAULTS: tuple[type[_FaultBase], ...] = (
    MidStreamErrorFault,
    MalformedSSEFault,
    NoDoneFault,
)


class BookAnswer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The right answer to one prompt of a model's answer book: a text, or (``tool`` set) one
    call of that tool with ``arguments`` (JSON). A tool answer is only given when the request
    offers tools and does not forbid them; otherwise the model answers as usual."""

    text: str = ""
    tool: str | None = None
    arguments: str = "{}"


class ModelBehaviour(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one model answers. Delays model a real provider: ``header_delay_s`` before the
    response headers (every response, errors included), ``ttft_s`` from headers to the first
    answer chunk, ``chunk_delay_s`` between answer chunks. A non-streaming answer waits for
    all of them, as the generation it stands for would."""

    # Answer length in tokens (words) when ``text`` is not set.
    answer_tokens: NonNegInt = 16
    # A fixed answer; its tokens are its whitespace-separated words.
    text: str | None = None
    # Stream chunks the answer is split into (evenly); None: one token per chunk, like OpenAI.
    chunks: PosInt | None = None
    header_delay_s: Seconds = 0.0
    ttft_s: Seconds = 0.0
    chunk_delay_s: Seconds = 0.0
    # Prompts over this many tokens get OpenAI's 400 context_length_exceeded.
    context_window: PosInt | None = None
    tool_use: ToolUse = "forced"
    # Hidden reasoning tokens: added to completion_tokens and counted against max tokens.
    reasoning_tokens: NonNegInt = 0
    # Reported as prompt_tokens_details.cached_tokens (capped at prompt_tokens).
    cached_prompt_tokens: NonNegInt = 0
    # Extra headers on every response for this model (e.g. x-ratelimit-*).
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Tried in order for each request; the first that fires is the request's only fault.
    faults: tuple[Fault, ...] = ()
    # Seeds the RNG of rate-based faults; re-seeded whenever the behaviour is (re)set. Also
    # picks which prompts of the answer book are answered right (below).
    seed: int = 0
    # An answer book, for graded evaluations: ``prompt_key`` of a request -> its right answer.
    # A prompt in the book gets its right answer if a hash of (seed, key) falls below
    # ``quality``, else the answer the model would give without a book, which is wrong for
    # any checker that looks for the right one. The choice is a pure function of (seed, key):
    # reproducible, independent of request order and protocol. Two models with the same seed
    # are right on nested sets of prompts (the higher quality on a superset); give them
    # different seeds for independent mistakes.
    answers: dict[str, BookAnswer] = msgspec.field(default_factory=dict)
    quality: Probability = 1.0


class FakeOpenAISettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Server-wide settings."""

    # When set, requests must carry `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    # When non-empty, only these models exist (others get 404 model_not_found); also the
    # `GET /v1/models` listing.
    models: tuple[str, ...] = ()
    # The behaviour of every model without its own; `PUT /_fake/models/{m}` overlays on it.
    default: ModelBehaviour = msgspec.field(default_factory=ModelBehaviour)
    # Recent requests kept for `GET /_fake/requests`; 0 turns the log off.
    request_log_size: NonNegInt = 1000
    # Larger request bodies get a 413 (images as data URLs are big; aiohttp's default is 1 MiB).
    max_request_bytes: PosInt = 64 * 1024 * 1024
