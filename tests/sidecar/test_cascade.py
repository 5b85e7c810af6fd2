"""Cascade routes: the cheap class answers first; a deterministic check escalates."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from e2e_helpers import kinds, only, request_events

from adapters.fakes import (
    ContentFilterFault,
    FakeOpenAIServer,
    MidStreamErrorFault,
    ModelBehaviour,
    StatusFault,
)
from events import CascadeEscalated, RequestCompleted
from sidecar._cascade import matches_schema
from sidecar._service import Sidecar

MESSAGES: list[Any] = [{"role": "user", "content": "Answer carefully."}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


async def ask(client: openai.AsyncOpenAI, stream: bool, **extra: Any) -> tuple[str, str, str]:
    """(serving model, answer text, request id)."""
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(
            model="task:cascade", messages=MESSAGES, **extra
        )
        text = raw.parse().choices[0].message.content or ""
        return raw.headers["x-tollgate-model"], text, raw.headers["x-tollgate-request-id"]
    async with client.chat.completions.with_streaming_response.create(
        model="task:cascade", messages=MESSAGES, stream=True, **extra
    ) as response:
        chunks = [c async for c in await response.parse() if c.choices]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        return (
            response.headers["x-tollgate-model"],
            text,
            response.headers["x-tollgate-request-id"],
        )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_good_cheap_answer_is_served_without_escalating(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer, stream: bool
) -> None:
    model, text, request_id = await ask(client, stream)
    assert model == "alpha"
    assert text
    events = await request_events(sidecar, request_id)
    assert "CascadeEscalated" not in kinds(events)
    assert "beta-1" not in (await fake.control.stats()).models
    done = events[-1].event
    assert isinstance(done, RequestCompleted)
    assert done.completion_chars == len(text)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("behaviour", "extra", "reason"),
    [
        (ModelBehaviour(answer_tokens=50), {"max_tokens": 5}, "truncated"),
        (ModelBehaviour(faults=(ContentFilterFault(after_chunks=2),)), {}, "refused"),
        (ModelBehaviour(text=""), {}, "empty"),
        (ModelBehaviour(), {"response_format": {"type": "json_object"}}, "invalid_json"),
        (ModelBehaviour(text='{"town": "Paris"}'), {"response_format": SCHEMA}, "schema_mismatch"),
        (ModelBehaviour(faults=(StatusFault(status=500),)), {}, "failed"),
    ],
)
async def test_a_failed_check_escalates_to_the_route_class(
    sidecar: Sidecar,
    client: openai.AsyncOpenAI,
    fake: FakeOpenAIServer,
    stream: bool,
    behaviour: ModelBehaviour,
    extra: dict[str, Any],
    reason: str,
) -> None:
    await fake.control.set_model("alpha-1", behaviour)
    model, text, request_id = await ask(client, stream, **extra)
    assert model == "beta"
    # Nothing of the cheap answer reached the client: the text is beta's alone.
    direct_beta = await client.chat.completions.create(model="beta", messages=MESSAGES, **extra)
    assert text == direct_beta.choices[0].message.content
    events = await request_events(sidecar, request_id)
    escalated = only(events, CascadeEscalated)
    assert len(escalated) == 1
    assert isinstance(escalated[0], CascadeEscalated)
    assert (escalated[0].reason, escalated[0].from_class, escalated[0].to_class) == (
        reason,
        "solo",
        "spare",
    )
    assert kinds(events)[-1] == "RequestCompleted"


async def test_a_cheap_stream_broken_midway_escalates_cleanly(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    fault = MidStreamErrorFault(after_chunks=4)
    await fake.control.set_model("alpha-1", ModelBehaviour(answer_tokens=20, faults=(fault,)))
    model, text, request_id = await ask(client, True)
    # The held chunks never reached the client, so this is a fallback, not a broken stream.
    assert model == "beta"
    direct_beta = await client.chat.completions.create(model="beta", messages=MESSAGES)
    assert text == direct_beta.choices[0].message.content
    events = await request_events(sidecar, request_id)
    escalated = only(events, CascadeEscalated)[0]
    assert isinstance(escalated, CascadeEscalated)
    assert escalated.reason == "failed"


async def test_a_schema_conforming_cheap_answer_is_kept(
    sidecar: Sidecar, client: openai.AsyncOpenAI, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(text='{"city": "Paris", "days": 3}'))
    model, text, _ = await ask(client, False, response_format=SCHEMA)
    assert model == "alpha"
    assert text == '{"city": "Paris", "days": 3}'


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"city": "Paris"}, True),
        ({"city": "Paris", "days": 2}, True),
        ({"days": 2}, False),
        ({"city": 7}, False),
        ({"city": "Paris", "days": 2.5}, False),
        ({"city": "Paris", "days": True}, False),
        (["Paris"], False),
    ],
)
def test_schema_check(value: Any, ok: bool) -> None:
    assert matches_schema(value, SCHEMA["json_schema"]["schema"]) is ok  # type: ignore[index]


def test_schema_check_arrays_and_enums() -> None:
    schema = {"type": "array", "items": {"enum": ["a", "b"]}}
    assert matches_schema(["a", "b", "a"], schema)
    assert not matches_schema(["a", "c"], schema)
    assert matches_schema(None, {"type": ["string", "null"]})
