from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar._config import Config, parse_config
from sidecar._router import RouteQuery, UnknownTargetError, route

CONFIG = parse_config(
    """
default_route = "chat"

[providers.openai]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[providers.local]
kind = "openai_compatible"
base_url = "http://127.0.0.1:2/v1"

[models.big]
provider = "openai"
context_window = 200000
max_output_tokens = 8000
capabilities = ["vision", "tools", "structured_output", "streaming"]
tags = ["pii_safe"]
[models.mid]
provider = "openai"
context_window = 32000
max_output_tokens = 4000
capabilities = ["tools", "streaming"]
[models.small]
provider = "local"
context_window = 8000
max_output_tokens = 2000
tags = ["pii_safe"]

[classes.flagship]
members = ["big", "mid"]
degrade_to = "fast"
[classes.fast]
members = ["mid", "small"]
degrade_to = "tiny"
[classes.tiny]
members = ["small"]

[routes.chat]
class = "fast"
max_tokens = 500
[routes.code]
class = "flagship"
max_degrade = 0
[routes.reason]
class = "flagship"
max_degrade = 2
[routes.private]
class = "flagship"
require_tags = ["pii_safe"]
[routes.cheap-first]
class = "flagship"
cascade_from = "tiny"
max_degrade = 0
""",
    base_dir=Path("."),
)


def query(selector: str = "auto", **kwargs: object) -> RouteQuery:
    fields: dict[str, object] = {"selector": selector, "input_tokens": 100, **kwargs}
    return RouteQuery(**fields)  # type: ignore[arg-type]


def chain(selector: str = "auto", config: Config = CONFIG, **kwargs: object) -> list[str]:
    return [c.model for c in route(query(selector, **kwargs), config).chain]


def test_task_maps_to_its_class_then_the_degraded_path() -> None:
    decision = route(query(task="chat"), CONFIG)
    assert decision.route == "chat"
    assert decision.selector_kind == "task"
    assert not decision.unrouted
    assert [(c.model, c.model_class, c.degrade_depth) for c in decision.chain] == [
        ("mid", "fast", 0),
        ("small", "fast", 0),
    ]


def test_max_degrade_bounds_the_degraded_path() -> None:
    assert chain(task="code") == ["big", "mid"]  # max_degrade = 0: the class alone
    assert chain(task="reason") == ["big", "mid", "small"]  # duplicates appear once


@pytest.mark.parametrize("task", [None, "", "no-such-task"])
def test_missing_or_unknown_task_takes_the_default_route(task: str | None) -> None:
    decision = route(query(task=task), CONFIG)
    assert decision.route == "chat"
    assert decision.unrouted
    assert decision.selector_kind == "default"
    assert decision.requested_task == (task or "")


def test_task_in_model_wins_over_header() -> None:
    decision = route(query("task:code", task="chat"), CONFIG)
    assert decision.route == "code"
    assert decision.requested_task == "code"


def test_class_and_model_selectors() -> None:
    assert chain("class:tiny") == ["small"]
    decision = route(query("mid", task="chat"), CONFIG)
    assert [c.model for c in decision.chain] == ["mid"]
    assert decision.selector_kind == "model"
    assert decision.route == "chat"  # the task still picks the route's settings


@pytest.mark.parametrize(("selector", "kind"), [("class:premium", "class"), ("gpt-9", "model")])
def test_unknown_targets_are_errors(selector: str, kind: str) -> None:
    with pytest.raises(UnknownTargetError) as info:
        route(query(selector), CONFIG)
    assert info.value.kind == kind


def test_capabilities_context_and_health_drop_candidates_with_reasons() -> None:
    vision = route(query(task="reason", needs=frozenset({"vision"})), CONFIG)
    assert [c.model for c in vision.chain] == ["big"]
    assert {(d.model, d.reason) for d in vision.dropped} == {
        ("mid", "lacks_vision"),
        ("small", "lacks_vision"),
    }
    long = route(query(task="reason", input_tokens=31_500), CONFIG)
    assert [c.model for c in long.chain] == ["big"]
    assert {d.reason for d in long.dropped} == {"context_window"}
    sick = route(query(task="chat"), CONFIG, unavailable_providers={"openai"})
    assert [c.model for c in sick.chain] == ["small"]
    assert sick.dropped[0].reason == "provider_unavailable"


def test_required_tags() -> None:
    decision = route(query(task="private"), CONFIG)
    assert [c.model for c in decision.chain] == ["big", "small"]
    assert [(d.model, d.reason) for d in decision.dropped] == [("mid", "lacks_tag:pii_safe")]


def test_max_tokens_defaults_to_the_route_and_is_clamped_per_model() -> None:
    decision = route(query(task="reason", max_tokens=6000), CONFIG)
    assert [(c.model, c.max_tokens) for c in decision.chain] == [
        ("big", 6000),
        ("mid", 4000),
        ("small", 2000),
    ]
    assert [c.max_tokens for c in route(query(task="chat"), CONFIG).chain] == [500, 500]


def test_nothing_fits_gives_an_empty_chain() -> None:
    decision = route(query(task="code", input_tokens=500_000), CONFIG)
    assert decision.chain == ()
    assert len(decision.dropped) == 2


@given(
    selector=st.sampled_from(["auto", "task:chat", "task:code", "class:flagship", "class:fast"]),
    task=st.sampled_from([None, "chat", "code", "reason", "private", "unknown"]),
    input_tokens=st.integers(0, 250_000),
    max_tokens=st.one_of(st.none(), st.integers(1, 10_000)),
    needs=st.frozensets(st.sampled_from(["vision", "tools", "structured_output", "streaming"])),
    down=st.frozensets(st.sampled_from(["openai", "local"])),
)
def test_every_candidate_is_either_chosen_fit_or_dropped_with_a_reason(
    selector: str,
    task: str | None,
    input_tokens: int,
    max_tokens: int | None,
    needs: frozenset[str],
    down: frozenset[str],
) -> None:
    q = RouteQuery(
        selector=selector, task=task, input_tokens=input_tokens, max_tokens=max_tokens, needs=needs
    )
    decision = route(q, CONFIG, unavailable_providers=down)
    considered = [c.model for c in decision.chain] + [d.model for d in decision.dropped]
    assert len(considered) == len(set(considered))
    for candidate in decision.chain:
        model = CONFIG.models[candidate.model]
        assert model.provider not in down
        assert needs <= set(model.capabilities)
        assert input_tokens + candidate.max_tokens <= model.context_window
        assert candidate.max_tokens <= model.max_output_tokens
    # The chain keeps the class's order, degraded classes after the route's own.
    depths = [c.degrade_depth for c in decision.chain]
    assert depths == sorted(depths)


def test_a_cascade_route_carries_its_cheap_stage() -> None:
    decision = route(query(task="cheap-first"), CONFIG)
    assert [c.model for c in decision.cascade] == ["small"]
    assert [c.model for c in decision.chain] == ["big", "mid"]
    # Naming a class or a model opts out of the route's cascade.
    assert route(query("class:flagship", task="cheap-first"), CONFIG).cascade == ()
    assert route(query("mid", task="cheap-first"), CONFIG).cascade == ()
    assert route(query(task="chat"), CONFIG).cascade == ()
