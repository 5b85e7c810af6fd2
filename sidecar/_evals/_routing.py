"""``tollgate eval routing``: the router alone over the labelled task set, and what it decided.

Pure: the same config, task set and price table give the same report, figure for figure. No
provider is called; each item goes through the same steps as a live request up to the routing
decision (decode, estimate, infer, route) with every provider healthy.

Definitions (per item; the report counts them per task type and overall):

* the item *lands* on the first model the request would be dispatched to: the first of the
  cascade's cheaper class on a cascade route, else the first of the chain;
* *accurate*: the landing model's class is one of the item's acceptable classes;
* *under-routed*: its class is weaker than every acceptable class (a quality risk);
  *over-routed*: stronger than every acceptable class (money wasted); *lateral*: neither (a
  class of comparable strength that the item does not list); *no route*: no model can take it;
* class strength: each class's ``tier`` when every class has one, else the price of its first
  member (input plus output USD per million tokens);
* a *violation*: a model anywhere in the item's chain (cascade included) that breaks one of the
  item's hard constraints — context window, vision, tools, structured output, compliance tags.
  The router filters on these, so any violation is a routing-table or router defect;
* *cost*: the landing model's price for the item's estimated input tokens and expected output
  tokens; *flagship cost*: the same item on the first member of the baseline class;
* *inferred correctly*: the task inference names the item's true type;
* *unrouted*: the request took the default route (untagged with no usable inference, or an
  unknown declared task); *mistyped (flagged)*: ``TaskMistyped`` would be logged; *declared
  wrong*: the item declares a task type of the vocabulary that is not its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from adapters import Usage
from sidecar._api import parse_chat_request
from sidecar._config import Config, ModelConfig
from sidecar._estimate import measure_prompt
from sidecar._infer import TASK_TYPES, infer_task, looks_mistyped, route_query
from sidecar._prices import PriceTable
from sidecar._router import Candidate, route

from ._tasks import TaskItem

__all__ = [
    "ItemOutcome",
    "RoutingReport",
    "RunInfo",
    "Summary",
    "class_strength",
    "evaluate_routing",
]

Verdict = Literal["accurate", "under", "over", "lateral", "no_route"]


class ItemOutcome(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    task_type: str
    declared: str | None
    inferred: str
    route: str
    selector: str
    model: str | None
    model_class: str | None
    acceptable: list[str]
    verdict: Verdict
    violations: list[str]
    cost_micros: int
    flagship_cost_micros: int
    unrouted: bool
    mistyped_flagged: bool
    declared_wrong: bool


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    items: int
    accurate: int
    under: int
    over: int
    lateral: int
    no_route: int
    violations: int
    accuracy: float
    under_rate: float
    over_rate: float
    cost_usd: float
    flagship_cost_usd: float
    # 1 - cost / flagship cost: the share of the always-flagship bill that routing saves.
    saving: float
    inferred_correctly: int
    inference_accuracy: float
    unrouted: int
    mistyped_flagged: int
    declared_wrong: int
    # Flagged items whose declared type really is wrong.
    mistyped_caught: int


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    config_hash: str
    tasks_digest: str
    tasks: int
    # "tier" or "price".
    strength_basis: str
    strength: dict[str, float]
    baseline_class: str
    baseline_model: str
    prices: str


class RoutingReport(msgspec.Struct, frozen=True, kw_only=True):
    run: RunInfo
    overall: Summary
    by_type: dict[str, Summary]
    # Things about the set and the config that make figures less meaningful (e.g. an item's
    # acceptable class that the config does not have).
    problems: list[str]
    items: list[ItemOutcome]

    @property
    def passed_constraints(self) -> bool:
        return self.overall.violations == 0


def class_strength(config: Config, prices: PriceTable) -> tuple[dict[str, float], str]:
    """Each class's strength and what it is based on ("tier" or "price")."""
    classes = config.classes
    if classes and all(c.tier is not None for c in classes.values()):
        return {name: float(c.tier or 0) for name, c in classes.items()}, "tier"
    strength: dict[str, float] = {}
    for name, cls in classes.items():
        base = prices.prices(cls.members[0]).base
        strength[name] = round(float(base.input + base.output), 6)
    return strength, "price"


def _baseline_class(config: Config, strength: Mapping[str, float]) -> str:
    if "flagship" in config.classes:
        return "flagship"
    return max(sorted(strength), key=lambda name: strength[name])


def _violations(item: TaskItem, model: ModelConfig, name: str) -> list[str]:
    c = item.constraints
    found: list[str] = []
    if model.context_window < c.context_tokens + item.expected_output_tokens:
        found.append(f"{name}: context_window {model.context_window} < {c.context_tokens} + "
                     f"{item.expected_output_tokens}")  # fmt: skip
    for needed, capability in (
        (c.vision, "vision"),
        (c.tools, "tools"),
        (c.structured_output, "structured_output"),
    ):
        if needed and capability not in model.capabilities:
            found.append(f"{name}: lacks {capability}")
    for tag in c.compliance:
        if tag not in model.tags:
            found.append(f"{name}: lacks tag {tag}")
    return found


def _verdict(
    landed: str | None, acceptable: Sequence[str], strength: Mapping[str, float]
) -> Verdict:
    if landed is None:
        return "no_route"
    if landed in acceptable:
        return "accurate"
    known = [strength[a] for a in acceptable if a in strength]
    if landed not in strength or not known:
        return "lateral"
    if strength[landed] < min(known):
        return "under"
    if strength[landed] > max(known):
        return "over"
    return "lateral"


def _cost(prices: PriceTable, model: str, item: TaskItem, max_tokens: int) -> int:
    usage = Usage(
        input_tokens=item.constraints.context_tokens,
        output_tokens=min(item.expected_output_tokens, max_tokens),
    )
    return prices.cost_micros(model, usage)


def evaluate_item(
    item: TaskItem,
    config: Config,
    prices: PriceTable,
    strength: Mapping[str, float],
    baseline_model: str,
) -> ItemOutcome:
    request, _ = parse_chat_request(msgspec.json.encode(item.request))
    size = measure_prompt(request.messages, request.tools, request.response_format)
    query, inference = route_query(request, item.declared, size.estimated_tokens)
    decision = route(query, config)
    # Every item is inferred, tagged or not, so the inference is scored on all of them.
    inferred = inference or infer_task(request, size.estimated_tokens)
    first: Candidate | None = (
        decision.cascade[0] if decision.cascade else decision.chain[0] if decision.chain else None
    )
    violations = [
        problem
        for candidate in (*decision.cascade, *decision.chain)
        for problem in _violations(item, config.models[candidate.model], candidate.model)
    ]
    declared = decision.requested_task
    baseline_tokens = config.models[baseline_model].max_output_tokens
    return ItemOutcome(
        id=item.id,
        task_type=item.task_type,
        declared=item.declared,
        inferred=inferred.task,
        route=decision.route,
        selector=decision.selector_kind,
        model=first.model if first else None,
        model_class=first.model_class if first else None,
        acceptable=list(item.acceptable),
        verdict=_verdict(first.model_class if first else None, item.acceptable, strength),
        violations=violations,
        cost_micros=_cost(prices, first.model, item, first.max_tokens) if first else 0,
        flagship_cost_micros=_cost(prices, baseline_model, item, baseline_tokens),
        unrouted=decision.unrouted,
        mistyped_flagged=bool(declared) and looks_mistyped(declared, inferred),
        declared_wrong=item.declared in TASK_TYPES and item.declared != item.task_type,
    )


def _ratio(part: int | float, whole: int | float) -> float:
    return round(part / whole, 4) if whole else 0.0


def summarize(outcomes: Sequence[ItemOutcome]) -> Summary:
    n = len(outcomes)
    count = {v: sum(o.verdict == v for o in outcomes) for v in ("accurate", "under", "over")}
    cost = sum(o.cost_micros for o in outcomes)
    flagship = sum(o.flagship_cost_micros for o in outcomes)
    inferred = sum(o.inferred == o.task_type for o in outcomes)
    return Summary(
        items=n,
        accurate=count["accurate"],
        under=count["under"],
        over=count["over"],
        lateral=sum(o.verdict == "lateral" for o in outcomes),
        no_route=sum(o.verdict == "no_route" for o in outcomes),
        violations=sum(len(o.violations) for o in outcomes),
        accuracy=_ratio(count["accurate"], n),
        under_rate=_ratio(count["under"], n),
        over_rate=_ratio(count["over"], n),
        cost_usd=round(cost / 1e6, 6),
        flagship_cost_usd=round(flagship / 1e6, 6),
        saving=round(1 - cost / flagship, 4) if flagship else 0.0,
        inferred_correctly=inferred,
        inference_accuracy=_ratio(inferred, n),
        unrouted=sum(o.unrouted for o in outcomes),
        mistyped_flagged=sum(o.mistyped_flagged for o in outcomes),
        declared_wrong=sum(o.declared_wrong for o in outcomes),
        mistyped_caught=sum(o.mistyped_flagged and o.declared_wrong for o in outcomes),
    )


def evaluate_routing(
    items: Sequence[TaskItem],
    config: Config,
    prices: PriceTable,
    *,
    config_hash: str,
    tasks_digest: str,
    prices_note: str,
) -> RoutingReport:
    strength, basis = class_strength(config, prices)
    baseline_class = _baseline_class(config, strength)
    baseline_model = config.classes[baseline_class].members[0]
    outcomes = [evaluate_item(i, config, prices, strength, baseline_model) for i in items]
    by_type = {
        task: summarize([o for o in outcomes if o.task_type == task])
        for task in sorted({o.task_type for o in outcomes})
    }
    problems = sorted(
        {
            f"acceptable class {name!r} of item {item.id} is not in the config"
            for item in items
            for name in item.acceptable
            if name not in config.classes
        }
    )
    partial = [name for name, c in config.classes.items() if c.tier is not None]
    if basis == "price" and partial:
        problems.append(
            f"only some classes have a tier ({', '.join(sorted(partial))}); strength is by price"
        )
    return RoutingReport(
        run=RunInfo(
            config_hash=config_hash,
            tasks_digest=tasks_digest,
            tasks=len(items),
            strength_basis=basis,
            strength=dict(sorted(strength.items())),
            baseline_class=baseline_class,
            baseline_model=baseline_model,
            prices=prices_note,
        ),
        overall=summarize(outcomes),
        by_type=by_type,
        problems=problems,
        items=sorted(outcomes, key=lambda o: o.id),
    )
