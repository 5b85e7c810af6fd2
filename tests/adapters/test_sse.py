from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from adapters._sse import ServerSentEvent, SSEDecoder

# The OpenAI tool-call transcript from the shared reference (§2.4), abridged, plus SSE corner
# cases: comments, multi-line data, named events, ids, retry, and all three line endings.
OPENAI_TRANSCRIPT = (
    b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    b'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":'
    b'{"content":"Hi \xc3\xa9t\xc3\xa9"}}]}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)
MIXED_TRANSCRIPT = (
    b'event: message_start\r\ndata: {"a":1}\r\n\r\n'
    b"event: ping\rdata: one\rdata: two\r\r"
    b"id: 7\nretry: 1500\ndata:no-space\n\n"
    b"data\n\n"
    b"unknown: field\n\n"
)


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def test_openai_transcript() -> None:
    events = decode([OPENAI_TRANSCRIPT])
    assert [e.data[:20] for e in events] == [
        '{"id":"chatcmpl-1","',
        '{"id":"chatcmpl-1","',
        '{"id":"chatcmpl-1","',
        "[DONE]",
    ]
    assert "Hi été" in events[1].data
    assert all(e.event is None for e in events)


def test_field_rules_and_line_endings() -> None:
    events = decode([MIXED_TRANSCRIPT])
    assert events == [
        ServerSentEvent(data='{"a":1}', event="message_start"),
        ServerSentEvent(data="one\ntwo", event="ping"),
        ServerSentEvent(data="no-space", id="7", retry=1500),
        # A field with no colon is the field name with an empty value; the id persists.
        ServerSentEvent(data="", id="7"),
    ]


def test_crlf_split_between_reads_is_one_line_end() -> None:
    # Were the LF read as a second line end, it would be a blank line and dispatch early.
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [ServerSentEvent(data="a\nb")]


def test_empty_read_between_cr_and_lf_changes_nothing() -> None:
    assert decode([b"data: a\r", b"", b"\ndata: b\n\n"]) == [ServerSentEvent(data="a\nb")]


def test_partial_last_line_is_dropped_at_eof() -> None:
    assert decode([b'data: whole\n\ndata: {"cut']) == [ServerSentEvent(data="whole")]


def test_complete_fields_without_blank_line_dispatch_at_eof() -> None:
    assert decode([b"data: last\n"]) == [ServerSentEvent(data="last")]


def test_retry_requires_ascii_digits() -> None:
    assert decode([b"retry: 1\xc2\xb2\ndata: x\n\n"]) == [ServerSentEvent(data="x")]


@st.composite
def splits(draw: st.DrawFn, transcript: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(transcript)), max_size=40)))
    bounds = [0, *cuts, len(transcript)]
    return [transcript[a:b] for a, b in itertools.pairwise(bounds)]


@given(splits(OPENAI_TRANSCRIPT + MIXED_TRANSCRIPT))
def test_any_split_decodes_the_same(pieces: list[bytes]) -> None:
    assert decode(pieces) == decode([OPENAI_TRANSCRIPT + MIXED_TRANSCRIPT])


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")),
        max_size=5,
    )
)
def test_data_lines_round_trip(lines: list[str]) -> None:
    wire = "".join(f"data: {line}\n" for line in lines).encode() + b"\n"
    expected = [ServerSentEvent(data="\n".join(lines))] if lines else []
    assert decode([wire]) == expected
