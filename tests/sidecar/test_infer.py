"""Task inference: the pure classifier, the router's use of it, and the sidecar end to end.

The examples here are written independently of the shipped task set (which the classifier's
cue lists were tuned on), so they check that it generalizes a little beyond its templates.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from e2e_helpers import kinds, only, request_events
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.fakes import FakeOpenAIServer
from events import RouteDecided, TaskMistyped, TaskUnrouted
from sidecar._api import ChatCompletionRequest, parse_chat_request
from sidecar._config import parse_config
from sidecar._estimate import measure_prompt
from sidecar._infer import TASK_TYPES, Inference, infer_task, looks_mistyped, route_query
from sidecar._router import route
from sidecar._service import Sidecar, open_sidecar

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQ"
    "DJ/pLvAAAAAElFTkSuQmCC"
)


def parse(body: dict[str, Any]) -> ChatCompletionRequest:
    return parse_chat_request(msgspec.json.encode({"model": "auto", **body}))[0]


def infer(text: str, **body: Any) -> Inference:
    request = parse({"messages": [{"role": "user", "content": text}], **body})
    return infer_task(request, measure_prompt(request.messages, request.tools).estimated_tokens)


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Could you implement a debounce helper in JavaScript for my search box?", "code"),
        ("Why does this crash?\n```go\nfunc main() { var m map[string]int; m[\"a\"] = 1 }\n```",
         "code"),
        ("What's 18% of 2,450 dollars?", "math"),
        ("If a tank fills at 12 litres a minute, how many minutes until it holds 300 litres?",
         "math"),
        ("Give me a TL;DR of the meeting notes below.\n\nWe agreed to ship on Friday.",
         "summarize"),
        ("Please rephrase this so it sounds less harsh: 'Your work is late again.'", "rewrite"),
        ("Translate 'see you tomorrow' into Portuguese.", "rewrite"),
        ("Categorize this ticket as billing, bug or feature request: the export button is gone.",
         "classify"),
        ("Five houses in a row, each a different colour... Use the clues to deduce who owns the "
         "zebra. Think it through.", "reasoning"),
        ("Pull out every date and amount from this receipt and return JSON.", "extract"),
        ("How are you doing today?", "chat"),
        ("What's your favourite season and why?", "chat"),
    ],
)  # fmt: skip
def test_cues_in_the_text_decide_the_task(text: str, task: str) -> None:
    assert infer(text).task == task


def test_hard_features_outweigh_cue_words() -> None:
    image = [
        {"type": "text", "text": "Summarize what you see."},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    assert infer_task(parse({"messages": [{"role": "user", "content": image}]}), 2000).task == (
        "vision"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert infer("Summarize my calendar.", tools=tools).task == "tools"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    inferred = infer("Here is a note from Ann.", response_format=schema)
    assert (inferred.task, inferred.signals) == ("extract", ("response_format:json_schema",))


def test_a_long_document_with_a_question_is_long_context() -> None:
    document = "The quarterly plan lists the staffing of every office in detail. " * 300
    inferred = infer(document + "\n\nAccording to the plan, who staffs the Oslo office?")
    assert inferred.task == "long_context"
    assert "long_prompt" in inferred.signals
    # A short one with the same question is not.
    assert infer("According to the plan, who staffs the Oslo office?").task != "long_context"


def test_only_the_ends_of_a_long_message_are_read_for_cues() -> None:
    filler = "plain words about nothing in particular. " * 500
    hidden = filler + "Please classify the sentiment of this." + filler
    assert "cue:classify" not in infer(hidden).signals
    assert "cue:classify" in infer("Please classify the sentiment of this." + filler).signals


def test_no_evidence_is_chat_without_signals() -> None:
    inferred = infer("Hello there")
    assert (inferred.task, inferred.signals, inferred.confident) == ("chat", (), False)


def test_a_declared_type_is_mistyped_only_against_confident_contrary_evidence() -> None:
    code = infer("Write a Python function that parses ISO dates.\n```python\n```")
    assert code.task == "code" and code.confident
    assert looks_mistyped("summarize", code)
    assert not looks_mistyped("code", code)
    # Names outside the vocabulary (an operator's own routes) are never judged.
    assert not looks_mistyped("pii", code)
    # Weak evidence judges nothing.
    assert not looks_mistyped("code", infer("Hello there"))
    # Compatible types are not contradictions: a math problem declared as reasoning.
    math = infer("Solve for x: 4x + 2 = 18. What is 3 + 4 * 2?")
    assert math.task == "math" and math.confident
    assert not looks_mistyped("reasoning", math)
    assert looks_mistyped("rewrite", math)


CONFIG = parse_config(
    """
default_route = "chat"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[models.small]
provider = "p"
context_window = 8000
price = { input = 1.0, output = 1.0 }
[models.big]
provider = "p"
context_window = 8000
price = { input = 5.0, output = 5.0 }
[classes.fast]
members = ["small"]
[classes.strong]
members = ["big"]
[routes.chat]
class = "fast"
[routes.code]
class = "strong"
""",
    base_dir=Path("."),
)


def decide(text: str, *, model: str = "auto", task: str | None = None) -> tuple[str, str, bool]:
    request = parse({"model": model, "messages": [{"role": "user", "content": text}]})
    query, _ = route_query(request, task, measure_prompt(request.messages).estimated_tokens)
    decision = route(query, CONFIG)
    return decision.route, decision.selector_kind, decision.unrouted


CODE_PROMPT = "Refactor this:\n```python\ndef f(x): return x+1\n```"


def test_the_router_takes_the_inferred_route_only_for_untagged_requests() -> None:
    assert decide(CODE_PROMPT) == ("code", "inferred", False)
    # A declared task wins, even a wrong one; an unknown declared task takes the default route.
    assert decide(CODE_PROMPT, task="chat") == ("chat", "task", False)
    assert decide(CODE_PROMPT, task="mystery") == ("chat", "default", True)
    assert decide(CODE_PROMPT, model="task:chat") == ("chat", "task", False)
    # An inferred type without a route, and no evidence at all, take the default route.
    assert decide("Translate 'hello' into Spanish.") == ("chat", "default", True)
    assert decide("Hi!") == ("chat", "default", True)
    # A client naming a class or a model opted out of routing by task.
    assert decide(CODE_PROMPT, model="class:fast")[1] == "class"
    assert decide(CODE_PROMPT, model="small")[1] == "model"


messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text()}
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(messages=messages, tokens=st.integers(0, 200_000), declared=st.sampled_from(TASK_TYPES))
def test_inference_is_total_and_deterministic(
    messages: list[dict[str, str]], tokens: int, declared: str
) -> None:
    request = parse({"messages": messages})
    first = infer_task(request, tokens)
    assert first == infer_task(request, tokens)
    assert first.task in TASK_TYPES
    assert set(first.scores) <= set(TASK_TYPES)
    assert bool(first.signals) == bool(first.scores)
    # Never flags a type as mistyped against itself.
    assert not looks_mistyped(first.task, first)
    assert isinstance(looks_mistyped(declared, first), bool)


# --- end to end: the real sidecar over its Unix socket --------------------------------------

E2E_CONFIG = """
default_route = "chat"

[server]
socket = "s.sock"

[store]
path = "events.db"

[providers.primary]
kind = "openai"
base_url = "{url}"
api_key_env = "TEST_PROVIDER_KEY"

[models.alpha]
provider = "primary"
id = "alpha-1"
context_window = 8000
price = {{ input = 1.0, output = 4.0 }}

[models.omega]
provider = "primary"
id = "omega-1"
context_window = 8000
price = {{ input = 5.0, output = 20.0 }}

[classes.fast]
members = ["alpha"]

[classes.strong]
members = ["omega"]

[routes.chat]
class = "fast"
max_tokens = 32

[routes.code]
class = "strong"
max_tokens = 32

[routes.summarize]
class = "fast"
max_tokens = 32
"""


@contextlib.asynccontextmanager
async def inferring_sidecar(short_dir: Path, fake: FakeOpenAIServer) -> AsyncIterator[Sidecar]:
    config = parse_config(E2E_CONFIG.format(url=fake.base_url), base_dir=short_dir)
    async with open_sidecar(config, environ={"TEST_PROVIDER_KEY": "fake-key"}) as sidecar:
        yield sidecar


async def post(
    sidecar: Sidecar, text: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tollgate/v1/chat/completions", json=body, headers=headers or {}
        ) as response,
    ):
        await response.read()
        return response.status, dict(response.headers)


async def test_an_untagged_request_is_routed_by_its_inferred_task(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    async with inferring_sidecar(short_dir, fake) as sidecar:
        status, headers = await post(sidecar, CODE_PROMPT)
        assert status == 200
        assert (headers["x-tollgate-route"], headers["x-tollgate-model"]) == ("code", "omega")
        events = await request_events(sidecar, headers["x-tollgate-request-id"])
        assert "TaskUnrouted" not in kinds(events)
        decided = only(events, RouteDecided)[0]
        assert isinstance(decided, RouteDecided)
        assert (decided.route, decided.selector) == ("code", "inferred")
    assert (await fake.control.stats()).models["omega-1"].requests == 1


async def test_a_mistyped_request_keeps_its_route_and_logs_task_mistyped(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    async with inferring_sidecar(short_dir, fake) as sidecar:
        status, headers = await post(sidecar, CODE_PROMPT, {"x-tollgate-task": "summarize"})
        assert status == 200
        assert headers["x-tollgate-route"] == "summarize"
        events = await request_events(sidecar, headers["x-tollgate-request-id"])
        assert kinds(events)[:3] == ["RequestReceived", "TaskMistyped", "RouteDecided"]
        mistyped = only(events, TaskMistyped)[0]
        assert isinstance(mistyped, TaskMistyped)
        assert (mistyped.declared_task, mistyped.inferred_task) == ("summarize", "code")
        assert "code_fence" in mistyped.signals
        assert mistyped.task == "summarize"
        # A request whose declared task fits its content logs nothing of the kind.
        status, headers = await post(sidecar, CODE_PROMPT, {"x-tollgate-task": "code"})
        events = await request_events(sidecar, headers["x-tollgate-request-id"])
        assert "TaskMistyped" not in kinds(events)


async def test_an_untagged_request_without_a_usable_inference_is_unrouted(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    async with inferring_sidecar(short_dir, fake) as sidecar:
        # Inferred "rewrite", which this config has no route for.
        status, headers = await post(sidecar, "Rewrite this more politely: go away.")
        assert (status, headers["x-tollgate-route"]) == (200, "chat")
        events = await request_events(sidecar, headers["x-tollgate-request-id"])
        unrouted = only(events, TaskUnrouted)[0]
        assert isinstance(unrouted, TaskUnrouted)
        assert (unrouted.requested_task, unrouted.default_route) == ("", "chat")
