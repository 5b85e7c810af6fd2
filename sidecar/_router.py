"""The router: a pure function from (query, config, provider health) to a decision.

No I/O and no clock, so every decision can be tested exhaustively and replayed from the log.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from ._config import Config, ModelConfig, RouteConfig

__all__ = [
    "Candidate",
    "Dropped",
    "RouteDecision",
    "RouteQuery",
    "UnknownTargetError",
    "route",
]

TASK_PREFIX = "task:"
CLASS_PREFIX = "class:"
# Model values that mean "route this by its task" (OpenAI clients insist on sending a model).
AUTO_SELECTORS = frozenset({"", "auto", "tollgate"})


class UnknownTargetError(ValueError):
    """The request named a class or model that the config does not have."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")
        self.kind = kind
        self.name = name


class RouteQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What the router needs to know about a request."""

    # The request's ``model``: "task:<task>", "class:<class>", a model name, or "auto".
    selector: str
    # The task from a header or metadata, if any.
    task: str | None = None
    input_tokens: int
    # The client's max_tokens, if it gave one.
    max_tokens: int | None = None
    # Capabilities the request itself needs (images → vision, tools, a JSON schema, streaming).
    needs: frozenset[str] = frozenset()
    # The task inferred from the content (``_infer``): an untagged request takes its route
    # when the config has one, instead of the default route.
    inferred_task: str | None = None


class Candidate(msgspec.Struct, frozen=True):
    model: str
    provider: str
    upstream_model: str
    model_class: str
    # Steps down the degraded path: 0 for the route's own class.
    degrade_depth: int
    max_tokens: int
    context_window: int


class Dropped(msgspec.Struct, frozen=True):
    model: str
    provider: str
    reason: str


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    model_class: str
    # How the target was named: "task", "class", "model", "inferred" (an untagged request
    # routed by its inferred task) or "default".
    selector_kind: str
    # The task the request declared ("" if none).
    requested_task: str
    # True when the declared task was missing or unknown and the default route was taken.
    unrouted: bool
    chain: tuple[Candidate, ...]
    dropped: tuple[Dropped, ...]
    route_config: RouteConfig
    # For a cascade route: the cheaper class's candidates, tried (and checked) first.
    cascade: tuple[Candidate, ...] = ()


def route(
    query: RouteQuery, config: Config, unavailable_providers: Collection[str] = ()
) -> RouteDecision:
    """Resolve the query to an ordered chain of candidates, recording why any were dropped.

    An empty chain means nothing can serve the request; the caller answers ``no_route``.
    Raises :class:`UnknownTargetError` for a class or model name the config lacks.
    """
    selector = query.selector
    task = query.task or ""
    if selector.startswith(TASK_PREFIX):
        task = selector[len(TASK_PREFIX) :]
        selector = ""
    route_name = task if task in config.routes else config.default_route
    # Only a request that names no task at all is routed by inference; a declared task, even
    # one without a route, is the client's choice (and TaskUnrouted tells the operator).
    inferred = (
        not task
        and selector in AUTO_SELECTORS
        and query.inferred_task is not None
        and query.inferred_task in config.routes
    )
    if inferred:
        route_name = query.inferred_task or route_name
    route_config = config.routes[route_name]

    if selector.startswith(CLASS_PREFIX):
        class_name = selector[len(CLASS_PREFIX) :]
        if class_name not in config.classes:
            raise UnknownTargetError("class", class_name)
        kind, unrouted = "class", False
        members = _degraded_path(config, class_name, route_config.max_degrade)
    elif selector not in AUTO_SELECTORS:
        if selector not in config.models:
            raise UnknownTargetError("model", selector)
        # A pinned model gets exactly that model: the client opted out of routing.
        class_name, kind, unrouted = "", "model", False
        members = [(selector, "", 0)]
    else:
        class_name = route_config.model_class
        unrouted = task not in config.routes and not inferred
        kind = "inferred" if inferred else "default" if unrouted else "task"
        members = _degraded_path(config, class_name, route_config.max_degrade)

    # Sorted once: the first missing capability names the reason a candidate is dropped.
    needs = tuple(sorted(query.needs | frozenset(route_config.requires)))
    dropped: list[Dropped] = []

    def fit(members: list[tuple[str, str, int]]) -> tuple[Candidate, ...]:
        chain: list[Candidate] = []
        for name, member_class, depth in members:
            model = config.models[name]
            max_tokens = min(query.max_tokens or route_config.max_tokens, model.max_output_tokens)
            reason = _unfit(
                model,
                query.input_tokens + max_tokens,
                needs,
                route_config,
                unavailable_providers,
            )
            if reason is not None:
                dropped.append(Dropped(name, model.provider, reason))
                continue
            chain.append(
                Candidate(
                    model=name,
                    provider=model.provider,
                    upstream_model=model.id or name,
                    model_class=member_class,
                    degrade_depth=depth,
                    max_tokens=max_tokens,
                    context_window=model.context_window,
                )
            )
        return tuple(chain)

    cascade: tuple[Candidate, ...] = ()
    if kind in ("task", "inferred", "default") and route_config.cascade_from is not None:
        cascade = fit(_degraded_path(config, route_config.cascade_from, 0))
    chain = fit(members)
    return RouteDecision(
        route=route_name,
        model_class=class_name,
        selector_kind=kind,
        requested_task=task,
        unrouted=unrouted,
        chain=chain,
        dropped=tuple(dropped),
        route_config=route_config,
        cascade=cascade,
    )


def _degraded_path(config: Config, class_name: str, max_degrade: int) -> list[tuple[str, str, int]]:
    """(model, class, depth) for the class's members, then its degraded classes' members."""
    members: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    current: str | None = class_name
    depth = 0
    while current is not None and depth <= max_degrade:
        for model in config.classes[current].members:
            if model not in seen:
                seen.add(model)
                members.append((model, current, depth))
        current = config.classes[current].degrade_to
        depth += 1
    return members


def _unfit(
    model: ModelConfig,
    tokens_needed: int,
    needs: tuple[str, ...],
    route_config: RouteConfig,
    unavailable_providers: Collection[str],
) -> str | None:
    """Why ``model`` cannot take the request, or None if it can. Hard constraints only."""
    if model.provider in unavailable_providers:
        return "provider_unavailable"
    for capability in needs:
        if capability not in model.capabilities:
            return f"lacks_{capability}"
    for tag in route_config.require_tags:
        if tag not in model.tags:
            return f"lacks_tag:{tag}"
    if tokens_needed > model.context_window:
        return "context_window"
    return None
