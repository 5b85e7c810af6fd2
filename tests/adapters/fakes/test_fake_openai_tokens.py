"""The fake's documented token-count rule and the shape of its answers."""

import json
from typing import Any

import aiohttp
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from adapters.fakes import FakeServer, ModelBehaviour, count_prompt_tokens
from adapters.fakes._answer import plan_answer
from adapters.fakes._prompt import ChatRequest


def test_prompt_tokens_for_plain_messages() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "12345678"},  # 4 + 2
            {"role": "user", "content": "123456789"},  # 4 + 3
            {"role": "assistant", "content": ""},  # 4 + 0
        ],
    }
    assert count_prompt_tokens(body) == 3 + 6 + 7 + 4


def test_prompt_tokens_for_parts_names_tool_calls_and_tools() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },  # 4 + ceil((3 + 12) / 4) + 85 = 93
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q":"x"}'},
                    }
                ],
            },  # 4 + ceil((4 + 9) / 4) = 8
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},  # 4 + 2
        ],
        "tools": [
            {"type": "function", "function": {"name": "look", "description": "Look it up"}},
        ],  # 8 + ceil((4 + 10) / 4) = 12
    }
    assert count_prompt_tokens(body) == 3 + 93 + 8 + 6 + 12
    assert count_prompt_tokens(json.dumps(body).encode()) == 3 + 93 + 8 + 6 + 12


async def test_server_reports_the_documented_count(
    http: aiohttp.ClientSession, fake: FakeServer
) -> None:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Answer in one word, please."},
            {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "noop"}}],
    }
    async with http.post(fake.base_url + "/chat/completions", json=body) as resp:
        usage = (await resp.json())["usage"]
    assert usage["prompt_tokens"] == count_prompt_tokens(body) == 3 + (4 + 7) + (4 + 3) + (8 + 1)


def _user_request(text: str) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return msgspec.convert(body, ChatRequest)


@given(
    text=st.text(min_size=1, max_size=40),
    answer_tokens=st.integers(0, 60),
    chunks=st.none() | st.integers(1, 70),
    limit=st.none() | st.integers(1, 80),
    reasoning=st.integers(0, 20),
)
def test_answer_plan_invariants(
    text: str, answer_tokens: int, chunks: int | None, limit: int | None, reasoning: int
) -> None:
    behaviour = ModelBehaviour(
        answer_tokens=answer_tokens, chunks=chunks, reasoning_tokens=reasoning
    )
    plan = plan_answer(_user_request(text), behaviour, limit)

    words = plan.text.split(" ") if plan.text else []
    visible = len(words)
    # Words joined by single spaces, one token each; chunks hold whole tokens.
    assert all(words)
    assert sum(plan.piece_tokens) == visible
    assert len(plan.pieces) == len(plan.piece_tokens)
    assert all(n >= 1 for n in plan.piece_tokens)
    if chunks is not None:
        assert len(plan.pieces) == min(chunks, visible)
        assert max(plan.piece_tokens, default=0) - min(plan.piece_tokens, default=0) <= 1
    assert plan.completion_tokens == visible + plan.reasoning_tokens
    if limit is not None:
        assert plan.completion_tokens <= limit
    room = answer_tokens if limit is None else limit - min(reasoning, limit)
    assert visible == min(answer_tokens, room)
    assert plan.finish_reason == ("length" if answer_tokens > room else "stop")
