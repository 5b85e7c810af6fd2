"""The bodies of a streamed NATS reply: whatever the upstream reads and the server's max_payload,
the deltas fit and put the answer back together exactly."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import TextDelta, ToolCallDelta
from sidecar._executor import Served
from sidecar._nats import DeltaEncoder, chunk_head

SERVED = Served(
    request_id="01990000-0000-7000-8000-000000000000",
    model="alpha",
    provider="primary",
    route="chat",
    model_class="main",
)
# The headers of a delta message, sized for the longest sequence number the encoder allows for.
DELTA_HEADERS = len(
    b"NATS/1.0\r\n" + b"Tollgate-Kind: delta\r\n" + b"Tollgate-Seq: 999999999999\r\n\r\n"
)

# One upstream read: text pieces and pieces of up to three tool calls.
piece = st.one_of(
    st.builds(TextDelta, st.text(max_size=300)),
    st.tuples(st.integers(0, 2), st.text(max_size=300)),
)
reads = st.lists(st.lists(piece, min_size=1, max_size=6), min_size=1, max_size=8)


def as_chunks(raw_reads: list[list[Any]]) -> list[list[TextDelta | ToolCallDelta]]:
    """Tool pieces get the id and name on the first piece of their call, as adapters emit."""
    named: set[int] = set()
    result = []
    for read in raw_reads:
        chunks: list[TextDelta | ToolCallDelta] = []
        for item in read:
            if isinstance(item, TextDelta):
                chunks.append(item)
                continue
            index, arguments = item
            first = index not in named
            named.add(index)
            chunks.append(
                ToolCallDelta(
                    index,
                    arguments,
                    id=f"call_{index}" if first else None,
                    name=f"fn{index}" if first else None,
                )
            )
        result.append(chunks)
    return result


@settings(max_examples=200, deadline=None)
@given(raw_reads=reads, limit=st.integers(min_value=600, max_value=4000))
def test_deltas_fit_the_limit_and_reassemble_the_answer(
    raw_reads: list[list[Any]], limit: int
) -> None:
    chunk_reads = as_chunks(raw_reads)
    encoder = DeltaEncoder(chunk_head(SERVED), limit)
    bodies = [body for read in chunk_reads for body in encoder.encode(read)]
    text = ""
    calls: dict[int, dict[str, Any]] = {}
    roles = []
    for body in bodies:
        assert len(body) + DELTA_HEADERS <= limit
        chunk = json.loads(body)
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "alpha"
        delta = chunk["choices"][0]["delta"]
        roles.append(delta.get("role"))
        text += delta.get("content", "")
        for call in delta.get("tool_calls", []):
            index = call["index"]
            if index not in calls:
                # The first piece of a call names it; later ones don't repeat that.
                assert call["id"] == f"call_{index}"
                assert call["function"]["name"] == f"fn{index}"
                calls[index] = {"arguments": ""}
            else:
                assert "id" not in call
            calls[index]["arguments"] += call["function"]["arguments"]
    assert roles[0] == "assistant"
    assert set(roles[1:]) <= {None}
    expected_text = "".join(
        c.text for read in chunk_reads for c in read if isinstance(c, TextDelta)
    )
    assert text == expected_text
    expected_calls: dict[int, str] = {}
    for read in chunk_reads:
        for c in read:
            if isinstance(c, ToolCallDelta):
                expected_calls[c.index] = expected_calls.get(c.index, "") + c.arguments
    assert {i: c["arguments"] for i, c in calls.items()} == expected_calls


def test_one_read_is_one_message_when_it_fits() -> None:
    encoder = DeltaEncoder(chunk_head(SERVED), 1024 * 1024)
    bodies = encoder.encode([TextDelta("Hello"), TextDelta(", "), TextDelta("world")])
    assert len(bodies) == 1
    assert json.loads(bodies[0])["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "Hello, world",
    }
    (second,) = encoder.encode([TextDelta("!")])
    assert json.loads(second)["choices"][0]["delta"] == {"content": "!"}
