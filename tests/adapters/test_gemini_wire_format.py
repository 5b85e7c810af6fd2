"""Gemini's wire format without a server: golden transcripts through the stream decoder, the
error classification table, finish reasons, and request translation corner cases."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import (
    AudioPart,
    ChatRequest,
    Chunk,
    ErrorClass,
    FilePart,
    Finish,
    ImagePart,
    ImageURL,
    Message,
    ProviderError,
    SSEDecoder,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
    UsageReport,
)
from adapters._gemini_errors import classify_gemini_error, parse_gemini_error, retry_delay_s
from adapters._gemini_request import GeminiTranslationError, gemini_request_body
from adapters._gemini_response import (
    GeminiResponseDecoder,
    decode_gemini_events,
    gemini_finish_reason,
)

# Reference §4.4: the shape captured from the live API (junjihashimoto/louter test-data).
TETRIS = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Okay, let\'s create"}],"role": '
    b'"model"},"index": 0}],"usageMetadata": {"promptTokenCount": 4,"candidatesTokenCount": 49,'
    b'"totalTokenCount": 2095,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 4}],'
    b'"thoughtsTokenCount": 2042},"modelVersion": "gemini-2.5-flash","responseId": '
    b'"IZI2acSKMoWl0-kPmYj2yQc"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " a Tetris game."}],"role": "model"},'
    b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 4,'
    b'"candidatesTokenCount": 97,"totalTokenCount": 2143,"promptTokensDetails": [{"modality": '
    b'"TEXT","tokenCount": 4}],"thoughtsTokenCount": 2042},"modelVersion": "gemini-2.5-flash",'
    b'"responseId": "IZI2acSKMoWl0-kPmYj2yQc"}\r\n\r\n'
)
TETRIS_CHUNKS: list[Chunk] = [
    TextDelta("Okay, let's create"),
    TextDelta(" a Tetris game."),
    Finish("stop", raw="STOP"),
    UsageReport(Usage(input_tokens=4, output_tokens=97 + 2042, reasoning_tokens=2042)),
]
CALL = (
    '{"candidates": [{"content": {"parts": [{"functionCall": {"name": "getWeather","args": '
    '{"location": "Tokyo"}},"thoughtSignature": "CikB..."}],"role": "model"},"finishReason": '
    '"STOP","index": 0,"finishMessage": "Model generated function call(s)."}],"usageMetadata": '
    '{"promptTokenCount": 83,"candidatesTokenCount": 14,"totalTokenCount": 201,'
    '"promptTokensDetails": [{"modality": "TEXT","tokenCount": 83}],"thoughtsTokenCount": 104},'
    '"modelVersion": "gemini-2.5-flash","responseId": "qpc2afWVFJK4vr0Pq6WiyAU"}'
)


def sse_data(raw: bytes) -> list[str]:
    decoder = SSEDecoder()
    return [e.data for e in decoder.feed(raw) + decoder.close()]


def test_golden_text_transcript() -> None:
    batches = decode_gemini_events([sse_data(TETRIS)])
    assert batches == [TETRIS_CHUNKS]


@given(st.lists(st.integers(min_value=1, max_value=len(TETRIS) - 1), unique=True, max_size=6))
def test_golden_transcript_split_anywhere(cuts: list[int]) -> None:
    """One batch per network read; however the bytes are split, the chunks are the same."""
    bounds = [0, *sorted(cuts), len(TETRIS)]
    sse = SSEDecoder()
    reads = [[e.data for e in sse.feed(TETRIS[a:b])] for a, b in itertools.pairwise(bounds)]
    batches = decode_gemini_events(reads)
    assert len(batches) == len(reads)
    assert [c for batch in batches for c in batch] == TETRIS_CHUNKS


def test_golden_function_call() -> None:
    [batch] = decode_gemini_events([[CALL]])
    assert batch == [
        ToolCallDelta(
            index=0,
            id="call_qpc2afWVFJK4vr0Pq6WiyAU_0",
            name="getWeather",
            arguments='{"location":"Tokyo"}',
        ),
        Finish("tool_calls", raw="STOP"),
        UsageReport(Usage(input_tokens=83, output_tokens=14 + 104, reasoning_tokens=104)),
    ]


def test_thoughts_are_skipped_and_calls_numbered() -> None:
    event = (
        '{"candidates":[{"content":{"role":"model","parts":['
        '{"text":"thinking...","thought":true},{"text":"Sure. "},{"text":"Two calls:"},'
        '{"functionCall":{"name":"a","args":{}}},{"functionCall":{"name":"b"}}]},'
        '"finishReason":"STOP"}]}'
    )
    [batch] = decode_gemini_events([[event]])
    assert batch == [
        TextDelta("Sure. Two calls:"),
        ToolCallDelta(index=0, id="call_0", name="a", arguments="{}"),
        ToolCallDelta(index=1, id="call_1", name="b", arguments="{}"),
        Finish("tool_calls", raw="STOP"),
    ]


def test_prompt_block_finishes_with_content_filter() -> None:
    event = (
        '{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},'
        '"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}'
    )
    [batch] = decode_gemini_events([[event]])
    assert batch == [
        Finish("content_filter", raw="PROHIBITED_CONTENT"),
        UsageReport(Usage(input_tokens=7)),
    ]


def test_usage_is_the_last_cumulative_report_with_cached_tokens() -> None:
    usage = '"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":6,'
    first = '{"candidates":[{"content":{"parts":[{"text":"a"}]}}],' + usage
    first += '"candidatesTokenCount":1}}'
    last = '{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"MAX_TOKENS"}],'
    last += usage + '"candidatesTokenCount":2}}'
    batches = decode_gemini_events([[first], [last]])
    assert batches[-1][-1] == UsageReport(
        Usage(input_tokens=10, cached_input_tokens=6, output_tokens=2)
    )
    assert Finish("length", raw="MAX_TOKENS") in batches[-1]


def test_stream_without_finish_reason_is_truncated() -> None:
    first_event_only = sse_data(TETRIS)[:1]
    with pytest.raises(ProviderError) as info:
        decode_gemini_events([first_event_only])
    assert info.value.error_class is ErrorClass.SERVER_ERROR
    assert info.value.provider_code == "stream_truncated"
    assert info.value.after_response


def test_whole_answer_without_finish_reason_is_other() -> None:
    decoder = GeminiResponseDecoder()
    chunks = decoder.feed('{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}')
    assert chunks + decoder.end(whole=True) == [TextDelta("hi"), Finish("other")]


@pytest.mark.parametrize(
    ("event", "expected", "code"),
    [
        (
            '{"candidates": [{"content": {"parts": [{"text": "oops',
            ErrorClass.SERVER_ERROR,
            "malformed_sse",
        ),
        (
            '{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}',
            ErrorClass.OVERLOADED,
            "UNAVAILABLE",
        ),
        (
            '{"error":{"code":429,"message":"Quota.","status":"RESOURCE_EXHAUSTED"}}',
            ErrorClass.RATE_LIMITED,
            "RESOURCE_EXHAUSTED",
        ),
        ('{"error":{"message":"boom"}}', ErrorClass.SERVER_ERROR, None),
    ],
)
def test_bad_and_error_events(event: str, expected: ErrorClass, code: str | None) -> None:
    decoder = GeminiResponseDecoder()
    with pytest.raises(ProviderError) as info:
        decoder.feed(event)
    assert info.value.error_class is expected
    assert info.value.provider_code == code
    assert info.value.after_response


@pytest.mark.parametrize(
    ("raw", "called", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("IMAGE_OTHER", False, "content_filter"),
        ("MODEL_ARMOR", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "other"),
        ("LANGUAGE", False, "other"),
        ("NO_IMAGE", False, "other"),
        ("OTHER", False, "other"),
    ],
)
def test_finish_reasons(raw: str, called: bool, expected: str) -> None:
    assert gemini_finish_reason(raw, called_function=called) == expected


# -- errors ----------------------------------------------------------------------------------


def _detail(kind: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/google.rpc.{kind}", **fields}


def _quota(quota_id: str, value: str = "10") -> dict[str, Any]:
    return _detail("QuotaFailure", violations=[{"quotaId": quota_id, "quotaValue": value}])


CLASSIFY: list[tuple[int | None, str | None, str, list[Any], ErrorClass, bool]] = [
    (
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [_detail("ErrorInfo", reason="API_KEY_INVALID")],
        ErrorClass.AUTH,
        False,
    ),
    (
        400,
        "INVALID_ARGUMENT",
        "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).",
        [],
        ErrorClass.CONTEXT_OVERFLOW,
        False,
    ),
    (
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        [],
        ErrorClass.BAD_REQUEST,
        False,
    ),
    (
        400,
        "FAILED_PRECONDITION",
        "User location is not supported for the API use.",
        [],
        ErrorClass.RATE_LIMITED,
        True,
    ),
    (
        400,
        "FAILED_PRECONDITION",
        "Billing is not enabled for this project.",
        [],
        ErrorClass.RATE_LIMITED,
        True,
    ),
    (
        400,
        "FAILED_PRECONDITION",
        "The cached content has expired.",
        [],
        ErrorClass.BAD_REQUEST,
        False,
    ),
    (401, "UNAUTHENTICATED", "", [], ErrorClass.AUTH, False),
    (403, "PERMISSION_DENIED", "Your API key was reported as leaked.", [], ErrorClass.AUTH, False),
    (
        404,
        "NOT_FOUND",
        "models/foo is not found for API version v1beta",
        [],
        ErrorClass.NOT_FOUND,
        False,
    ),
    (
        429,
        "RESOURCE_EXHAUSTED",
        "",
        [
            _quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
            _detail("RetryInfo", retryDelay="34s"),
        ],
        ErrorClass.RATE_LIMITED,
        False,
    ),
    (
        429,
        "RESOURCE_EXHAUSTED",
        "",
        [_quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier")],
        ErrorClass.RATE_LIMITED,
        True,
    ),
    (
        429,
        "RESOURCE_EXHAUSTED",
        "",
        [_quota("GenerateContentInputTokensPerModelPerMinute", "0")],
        ErrorClass.RATE_LIMITED,
        True,
    ),
    (
        429,
        "RESOURCE_EXHAUSTED",
        "",
        [_detail("RetryInfo", retryDelay="43200s")],
        ErrorClass.RATE_LIMITED,
        True,
    ),
    (499, "CANCELLED", "", [], ErrorClass.TIMEOUT, False),
    (500, "INTERNAL", "An internal error has occurred.", [], ErrorClass.SERVER_ERROR, False),
    (502, None, "<html>", [], ErrorClass.SERVER_ERROR, False),
    (503, "UNAVAILABLE", "The model is overloaded.", [], ErrorClass.OVERLOADED, False),
    (504, "DEADLINE_EXCEEDED", "", [], ErrorClass.TIMEOUT, False),
    (None, "UNAVAILABLE", "", [], ErrorClass.OVERLOADED, False),
    (None, "INVALID_ARGUMENT", "", [], ErrorClass.BAD_REQUEST, False),
    (None, None, "boom", [], ErrorClass.SERVER_ERROR, False),
]


@pytest.mark.parametrize(("status", "rpc", "message", "details", "expected", "quota"), CLASSIFY)
def test_classification_table(
    status: int | None,
    rpc: str | None,
    message: str,
    details: list[Any],
    expected: ErrorClass,
    quota: bool,
) -> None:
    assert classify_gemini_error(status, rpc, message, details) == (expected, quota)


def test_retry_delay_forms() -> None:
    assert retry_delay_s([_detail("RetryInfo", retryDelay="34s")]) == 34.0
    assert retry_delay_s([_detail("RetryInfo", retryDelay="20.138409212s")]) == 20.138409212
    assert retry_delay_s([_detail("RetryInfo", retryDelay={"seconds": 2, "nanos": 5e8})]) == 2.5
    assert retry_delay_s([_detail("RetryInfo", retryDelay="soon")]) is None
    assert retry_delay_s([_detail("Help", links=[])]) is None


def test_error_bodies_are_unwrapped() -> None:
    body = {"error": {"code": 503, "message": "m", "status": "UNAVAILABLE", "details": []}}
    assert parse_gemini_error(body) == parse_gemini_error([body])
    assert parse_gemini_error(body).status == "UNAVAILABLE"
    assert parse_gemini_error("plain text").message == "plain text"
    assert parse_gemini_error(7).message == ""


# -- request translation ---------------------------------------------------------------------


def body_for(messages: list[Message], **params: Any) -> dict[str, Any]:
    req = ChatRequest(model="m", messages=messages, max_tokens=10, stream=False, params=params)
    return gemini_request_body(req)


def test_consecutive_turns_merge_and_empty_assistant_turns_vanish() -> None:
    body = body_for(
        [
            Message(role="user", content="a"),
            Message(role="assistant", content=None),
            Message(role="user", content="b"),
            Message(role="assistant", content="c"),
            Message(role="assistant", content=[TextPart(text="d")]),
        ]
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
    ]
    assert "systemInstruction" not in body
    assert "tools" not in body


def test_tool_call_ids_resolve_against_the_latest_call() -> None:
    """Generated ids repeat across responses (call_0 in each): a tool result answers the
    nearest earlier call with its id."""

    def turn(name: str) -> list[Message]:
        call = ToolCall(id="call_0", function=ToolCallFunction(name, "{}"))
        return [
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="call_0", content="ok"),
        ]

    body = body_for([Message(role="user", content="go"), *turn("first"), *turn("second")])
    responses = [
        p["functionResponse"]["name"]
        for c in body["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]
    assert responses == ["first", "second"]


def test_media_parts() -> None:
    body = body_for(
        [
            Message(
                role="user",
                content=[
                    ImagePart(image_url=ImageURL(url="https://example.com/cat.png?size=2")),
                    AudioPart(input_audio={"data": "UklGRg==", "format": "wav"}),
                    FilePart(file={"file_data": "data:application/pdf;base64,JVBERi0="}),
                ],
            )
        ]
    )
    assert body["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png?size=2"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    "message",
    [
        Message(role="user", content=[ImagePart(image_url=ImageURL(url="data:image/png,raw"))]),
        Message(role="user", content=[ImagePart(image_url=ImageURL(url="ftp://x/y.png"))]),
        Message(role="user", content=[FilePart(file={"file_id": "file-123"})]),
        Message(role="user", content=[AudioPart(input_audio={"data": "x", "format": "flac"})]),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c", function=ToolCallFunction("f", "not json"))],
        ),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c", function=ToolCallFunction("f", "[1, 2]"))],
        ),
        Message(role="tool", tool_call_id="unknown", content="x"),
    ],
)
def test_untranslatable_messages(message: Message) -> None:
    with pytest.raises(GeminiTranslationError):
        body_for([Message(role="user", content="hi"), message])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "VALIDATED", "allowedFunctionNames": ["f"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}, {"type": "custom", "custom": {}}]
    body = body_for([Message(role="user", content="x")], tools=tools, tool_choice=choice)
    assert body["tools"] == [{"functionDeclarations": [{"name": "f"}]}]
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_generation_config_levers() -> None:
    body = body_for(
        [Message(role="user", content="x")],
        stop=["a", "b"],
        seed=7,
        presence_penalty=0.5,
        response_format={"type": "json_object"},
        reasoning_effort="high",
        thinking_config={"thinking_budget": 128},  # the provider lever wins
        safety_settings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        n=3,
        logprobs=True,
        max_completion_tokens=999,
    )
    assert body["generationConfig"] == {
        "maxOutputTokens": 10,
        "stopSequences": ["a", "b"],
        "seed": 7,
        "presencePenalty": 0.5,
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinking_budget": 128},
    }
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
    ]
