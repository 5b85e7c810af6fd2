# ruff: noqa: E501  (the golden transcripts are verbatim, one SSE line per line)
"""The Anthropic adapter's pure parts: golden stream transcripts, the error classification, and
the request translation, without a server."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import (
    ChatRequest,
    Chunk,
    ContentPart,
    ErrorClass,
    Finish,
    ImagePart,
    ImageURL,
    Message,
    ProviderError,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
    UsageReport,
)
from adapters._anthropic import AnthropicStreamParser, classify_anthropic_error
from adapters._anthropic_request import UnsupportedContent, anthropic_body
from adapters._anthropic_stream import message_chunks

# Shared reference §3.4: the SDK's tool_use_response.txt fixture, verbatim.
TOOL_USE_TRANSCRIPT = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I'll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"Par"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}

"""
TOOL_USE_CHUNKS: list[Chunk] = [
    TextDelta("I'll check the current weather in Paris for you."),
    ToolCallDelta(0, "", id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"),
    ToolCallDelta(0, '{"location": "Par'),
    ToolCallDelta(0, 'is"}'),
    Finish("tool_calls", raw="tool_use"),
    UsageReport(Usage(input_tokens=377, output_tokens=65)),
]

# Reference §3.4 (the SDK's refusal_response.txt): a refusal with thinking tokens.
REFUSAL_TRANSCRIPT = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01RefusalTestMessage123456789","type":"message","role":"assistant","content":[],"model":"claude-opus-4-7","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"refusal","stop_sequence":null,"stop_details":{"type":"refusal","category":"cyber","explanation":"This request was refused due to policy."}},"usage":{"output_tokens":120,"output_tokens_details":{"thinking_tokens":67}}}

event: message_stop
data: {"type":"message_stop"}
"""

# §3.4 step 4 (the SDK's message_delta_fields_response.txt): a newer server repeats the input
# and cache counts in message_delta; those win over message_start's.
DELTA_USAGE_TRANSCRIPT = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01MessageDeltaFields00000001","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"stop_details":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null,"stop_details":null,"container":{"id":"container_01AbCdEfGh","expires_at":"2025-01-01T00:00:00Z"}},"usage":{"input_tokens":40,"cache_creation_input_tokens":12,"cache_read_input_tokens":7,"output_tokens":8,"output_tokens_details":{"thinking_tokens":3},"server_tool_use":{"web_search_requests":1,"web_fetch_requests":0}}}

event: message_stop
data: {"type":"message_stop"}
"""

THINKING_THEN_TOOLS = b"""event: message_start
data: {"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Two lookups."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"f","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"g","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"x\\":1}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30,"output_tokens_details":{"thinking_tokens":12}}}

event: message_stop
data: {"type":"message_stop"}

"""


def parse(pieces: list[bytes]) -> tuple[list[Chunk], AnthropicStreamParser]:
    parser = AnthropicStreamParser()
    chunks: list[Chunk] = []
    for piece in pieces:
        chunks += parser.feed(piece)
    chunks += parser.close()
    return chunks, parser


def test_tool_use_transcript_gives_the_expected_chunks() -> None:
    chunks, parser = parse([TOOL_USE_TRANSCRIPT])
    assert chunks == TOOL_USE_CHUNKS
    assert parser.done and parser.failure is None
    arguments = "".join(c.arguments for c in chunks if isinstance(c, ToolCallDelta))
    assert msgspec.json.decode(arguments) == {"location": "Paris"}


@given(st.lists(st.integers(min_value=0, max_value=len(TOOL_USE_TRANSCRIPT)), max_size=12))
def test_any_split_of_the_transcript_gives_the_same_chunks(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(TOOL_USE_TRANSCRIPT)]
    pieces = [TOOL_USE_TRANSCRIPT[a:b] for a, b in itertools.pairwise(bounds)]
    chunks, _ = parse(pieces)
    # Split reads may cut a text or argument piece nowhere but between events, so the chunks
    # are the same ones, not merely the same concatenation.
    assert chunks == TOOL_USE_CHUNKS


def test_crlf_transcript_parses_the_same() -> None:
    chunks, _ = parse([TOOL_USE_TRANSCRIPT.replace(b"\n", b"\r\n")])
    assert chunks == TOOL_USE_CHUNKS


def test_refusal_transcript_is_a_content_filter_finish_with_thinking_usage() -> None:
    chunks, parser = parse([REFUSAL_TRANSCRIPT])
    # The last event has no blank line after it: it is dispatched at the end of the body.
    assert parser.done and parser.failure is None
    assert chunks == [
        Finish("content_filter", raw="refusal"),
        UsageReport(Usage(input_tokens=20, output_tokens=120, reasoning_tokens=67)),
    ]


def test_message_delta_usage_overrides_message_start() -> None:
    chunks, _ = parse([DELTA_USAGE_TRANSCRIPT])
    assert chunks[-1] == UsageReport(
        Usage(
            input_tokens=40 + 12 + 7,
            cached_input_tokens=7,
            cache_write_tokens=12,
            output_tokens=8,
            reasoning_tokens=3,
        )
    )


def test_thinking_is_skipped_and_tool_indexes_count_tool_blocks_only() -> None:
    chunks, _ = parse([THINKING_THEN_TOOLS])
    assert chunks == [
        ToolCallDelta(0, "", id="toolu_a", name="f"),
        ToolCallDelta(0, "{}"),
        ToolCallDelta(1, "", id="toolu_b", name="g"),
        ToolCallDelta(1, '{"x":1}'),
        Finish("tool_calls", raw="tool_use"),
        UsageReport(Usage(input_tokens=10, output_tokens=30, reasoning_tokens=12)),
    ]


MESSAGE_START = TOOL_USE_TRANSCRIPT.split(b"event: content_block_start")[0]


def test_mid_stream_error_event_is_classified_by_its_type() -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"},"request_id":"req_1"}\n\n'
    )
    text = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    )
    parser = AnthropicStreamParser()
    # Chunks before the error in the same read are still returned, then the failure is set.
    assert parser.feed(MESSAGE_START + text + error + text) == [TextDelta("Hi")]
    failure = parser.failure
    assert failure is not None
    assert failure.error_class is ErrorClass.OVERLOADED
    assert failure.after_response
    assert failure.provider_code == "overloaded_error"
    assert parser.feed(text) == []  # nothing after a failure


def test_end_of_body_without_message_stop_is_truncation() -> None:
    body = TOOL_USE_TRANSCRIPT.split(b"event: message_stop")[0]
    chunks, parser = parse([body])
    assert Finish("tool_calls", raw="tool_use") in chunks
    assert not any(isinstance(c, UsageReport) for c in chunks)
    assert parser.failure is not None
    assert parser.failure.provider_code == "stream_truncated"
    assert parser.failure.error_class is ErrorClass.SERVER_ERROR


def test_malformed_event_json_fails_the_stream() -> None:
    bad = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"del\n\n'
    _, parser = parse([MESSAGE_START, bad])
    assert parser.failure is not None
    assert parser.failure.provider_code == "malformed_sse"


def test_events_without_an_event_line_are_skipped_as_the_sdk_does() -> None:
    stray = b'data: {"this is": "not json\n\n'
    chunks, parser = parse([TOOL_USE_TRANSCRIPT.replace(b"event: ping\n", stray)])
    assert parser.failure is None
    assert chunks == TOOL_USE_CHUNKS


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "context_overflow"),
        ("pause_turn", "other"),
        ("something_new", "other"),
    ],
)
def test_finish_reasons(stop_reason: str, reason: str) -> None:
    body = msgspec.json.encode(
        {
            "content": [],
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    )
    assert message_chunks(body)[0] == Finish(reason, raw=stop_reason)  # type: ignore[arg-type]


def test_whole_message_chunks() -> None:
    body = msgspec.json.encode(
        {
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "Eq"},
                {"type": "text", "text": "I'll check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"c": "P"}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 3,
                "cache_read_input_tokens": 2048,
                "output_tokens": 97,
                "output_tokens_details": {"thinking_tokens": 60},
            },
        }
    )
    assert message_chunks(body) == [
        TextDelta("I'll check."),
        ToolCallDelta(0, '{"c":"P"}', id="toolu_1", name="get_weather"),
        Finish("tool_calls", raw="tool_use"),
        UsageReport(
            Usage(
                input_tokens=12 + 3 + 2048,
                cached_input_tokens=2048,
                cache_write_tokens=3,
                output_tokens=97,
                reasoning_tokens=60,
            )
        ),
    ]


# -- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code", "message", "expected", "quota"),
    [
        (400, "invalid_request_error", None, "prompt is too long: 205000 tokens > 200000 maximum",
         ErrorClass.CONTEXT_OVERFLOW, False),
        (400, "invalid_request_error", None,
         "input length and `max_tokens` exceed context limit: 199000 + 8000 > 200000",
         ErrorClass.CONTEXT_OVERFLOW, False),
        (400, "invalid_request_error", None, "Your credit balance is too low to access the API.",
         ErrorClass.RATE_LIMITED, True),
        (400, "invalid_request_error", None, "max_tokens: Field required",
         ErrorClass.BAD_REQUEST, False),
        (401, "authentication_error", None, "invalid x-api-key", ErrorClass.AUTH, False),
        (403, "permission_error", None, "no", ErrorClass.AUTH, False),
        (402, "billing_error", None, "billing", ErrorClass.RATE_LIMITED, True),
        (404, "not_found_error", None, "model: x", ErrorClass.NOT_FOUND, False),
        (413, "request_too_large", None, "too big", ErrorClass.BAD_REQUEST, False),
        (429, "rate_limit_error", None, "slow down", ErrorClass.RATE_LIMITED, False),
        (429, "rate_limit_error", "ramp_limit_exceeded", "ramp", ErrorClass.RATE_LIMITED, False),
        (429, "rate_limit_error", "enforced_spend_limit_reached", "spent",
         ErrorClass.RATE_LIMITED, True),
        (429, "rate_limit_error", "contract_spend_limit_reached", "spent",
         ErrorClass.RATE_LIMITED, True),
        (500, "api_error", None, "Internal server error", ErrorClass.SERVER_ERROR, False),
        (502, None, None, "<html>Bad gateway</html>", ErrorClass.SERVER_ERROR, False),
        (503, None, None, "", ErrorClass.OVERLOADED, False),
        (529, "overloaded_error", None, "Overloaded", ErrorClass.OVERLOADED, False),
        (504, "timeout_error", None, "Request timed out", ErrorClass.TIMEOUT, False),
        (408, None, None, "", ErrorClass.TIMEOUT, False),
        (409, "conflict_error", None, "Conflict", ErrorClass.SERVER_ERROR, False),
        (422, None, None, "", ErrorClass.BAD_REQUEST, False),
        (None, "overloaded_error", None, "Overloaded", ErrorClass.OVERLOADED, False),
        (None, "rate_limit_error", None, "", ErrorClass.RATE_LIMITED, False),
        (None, "api_error", None, "boom", ErrorClass.SERVER_ERROR, False),
        (None, None, None, "Overloaded", ErrorClass.OVERLOADED, False),
        (None, None, None, "???", ErrorClass.SERVER_ERROR, False),
    ],
)  # fmt: skip
def test_classification_table(
    status: int | None,
    error_type: str | None,
    code: str | None,
    message: str,
    expected: ErrorClass,
    quota: bool,
) -> None:
    assert classify_anthropic_error(status, error_type, code, message) == (expected, quota)


# -- request translation ----------------------------------------------------------------------


def body(messages: list[Message], *, sampling: bool = True, **params: Any) -> dict[str, Any]:
    request = ChatRequest(
        model="claude-x", messages=messages, max_tokens=256, stream=False, params=params
    )
    return anthropic_body(request, sampling=sampling)


def test_system_is_hoisted_and_turns_merged() -> None:
    out = body(
        [
            Message(role="system", content="Be terse."),
            Message(role="user", content="One."),
            Message(role="developer", content="Use metric units."),
            Message(role="user", content="Two."),
            Message(role="assistant", content="Ok."),
            Message(role="assistant", content=""),
        ]
    )
    assert out["system"] == "Be terse.\n\nUse metric units."
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        },
        {"role": "assistant", "content": "Ok."},
    ]
    assert out["max_tokens"] == 256


def test_cache_control_keeps_system_blocks() -> None:
    marked = TextPart(text="Long preamble.", cache_control={"type": "ephemeral"})
    out = body([Message(role="system", content=[marked]), Message(role="user", content="Hi")])
    assert out["system"] == [
        {"type": "text", "text": "Long preamble.", "cache_control": {"type": "ephemeral"}}
    ]


def test_tool_round_trip_translation() -> None:
    call = ToolCall(id="call_1", function=ToolCallFunction(name="get_weather", arguments='{"c":1}'))
    out = body(
        [
            Message(role="user", content="Weather?"),
            Message(role="assistant", content="Checking.", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_1", content="Sunny"),
            Message(role="user", content="Thanks"),
        ]
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"c": 1}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
            {"type": "text", "text": "Thanks"},
        ],
    }


def test_images_become_sources() -> None:
    parts: list[ContentPart] = [
        ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
        ImagePart(image_url=ImageURL(url="https://example.com/cat.jpg")),
        TextPart(text="What are these?"),
    ]
    out = body([Message(role="user", content=parts)])
    assert out["messages"][0]["content"][:2] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_forms(choice: object, expected: dict[str, object]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d"}}]
    out = body([Message(role="user", content="Hi")], tools=tools, tool_choice=choice)
    assert out["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert out["tool_choice"] == expected


def test_params_are_mapped_or_dropped() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = body(
        [Message(role="user", content="Hi")],
        stop="END",
        temperature=1.6,
        top_p=0.5,
        frequency_penalty=0.2,
        logprobs=True,
        n=1,
        seed=7,
        thinking={"type": "disabled"},
        reasoning_effort="high",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        metadata={"user_id": "u-1", "other": "x"},
        parallel_tool_calls=False,
    )
    assert out["stop_sequences"] == ["END"]
    assert out["temperature"] == 1.0  # OpenAI's 0-2 range clamped to Anthropic's 0-1
    assert out["top_p"] == 0.5
    assert out["thinking"] == {"type": "disabled"}
    assert out["output_config"] == {
        "format": {"type": "json_schema", "schema": schema},
        "effort": "high",
    }
    assert out["metadata"] == {"user_id": "u-1"}
    for dropped in ("frequency_penalty", "logprobs", "n", "seed", "stop", "parallel_tool_calls"):
        assert dropped not in out
    assert "tool_choice" not in out  # no tools: Anthropic would reject a lone tool_choice


def test_sampling_params_are_dropped_on_the_new_version() -> None:
    out = body([Message(role="user", content="Hi")], sampling=False, temperature=0.2, top_k=5)
    assert "temperature" not in out
    assert "top_k" not in out


def test_sampling_params_are_dropped_with_thinking() -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    out = body([Message(role="user", content="Hi")], temperature=0.2, top_k=5, thinking=thinking)
    assert {"temperature", "top_k"}.isdisjoint(out)
    assert out["thinking"] == thinking


@pytest.mark.parametrize(
    "message",
    [
        Message(role="user", content=[ImagePart(image_url=ImageURL(url="ftp://x/y.png"))]),
        Message(
            role="user", content=[ImagePart(image_url=ImageURL(url="data:image/bmp;base64,x"))]
        ),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c", function=ToolCallFunction(name="f", arguments="[1]"))],
        ),
    ],
)
def test_untranslatable_content_is_refused(message: Message) -> None:
    with pytest.raises(UnsupportedContent):
        body([Message(role="user", content="Hi"), message])


def test_stream_parser_errors_are_provider_errors() -> None:
    _, parser = parse([b"event: message_start\ndata: {}\n\n"])
    assert isinstance(parser.failure, ProviderError)
    assert parser.failure.provider == "anthropic"
