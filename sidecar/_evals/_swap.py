"""``tollgate eval swap``: may a candidate model replace a route's first model?

The route's items that have checkers (the items the router sends to the route) go through the
real adapters to the incumbent (the route's current first model) and to the candidate; each
answer is checked, and the two models are compared item by item.

The verdict (``decide``) accepts the candidate only if all of these hold:

* it can take every one of the items (the router's hard filters: context window,
  capabilities, the route's required tags);
* no call failed (a provider error makes the comparison inconclusive, whichever side it hit);
* its pass rate is not below the incumbent's by more than ``tolerance``;
* the exact McNemar test on the items where exactly one model passed does not show it worse
  (one-sided p below ``alpha``);
* with ``strict``, the paired bootstrap interval of the difference lies above ``-tolerance``
  (non-inferiority shown, not merely not disproved: this needs many items);
* with ``max_cost_ratio`` / ``max_latency_ratio``, its cost / median latency is at most that
  multiple of the incumbent's.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence

import anyio
import msgspec

from adapters import Adapter, ChatRequest, ProviderError, TextDelta, ToolCallDelta, UsageReport
from sidecar._api import parse_chat_request
from sidecar._config import Config
from sidecar._estimate import measure_prompt
from sidecar._infer import route_query
from sidecar._prices import PriceTable
from sidecar._router import route

from ._checkers import Answer, ToolCallAnswer, check
from ._report import table
from ._stats import PairedComparison, compare_paired
from ._tasks import TaskItem

__all__ = [
    "ModelRun",
    "ModelSummary",
    "SwapError",
    "SwapOptions",
    "SwapReport",
    "decide",
    "route_items",
    "run_swap",
    "unfit_items",
]


class SwapError(Exception):
    """The swap cannot be evaluated (unknown route or model, no items with checkers)."""


class SwapOptions(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    candidate: str
    tolerance: float = 0.02
    alpha: float = 0.05
    strict: bool = False
    max_cost_ratio: float | None = None
    max_latency_ratio: float | None = None
    seed: int = 0
    concurrency: int = 4
    call_timeout_s: float = 120.0


class ModelRun(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    # Why the answer failed its check, or the provider's error.
    reason: str = ""
    error: bool = False
    latency_ms: float = 0.0
    cost_micros: int = 0


class ItemRun(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    incumbent: ModelRun
    candidate: ModelRun


class ModelSummary(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    provider: str
    # Where its calls went: "real" (the provider's API) or "fake".
    source: str
    passed: int
    errors: int
    cost_usd: float
    latency_median_ms: float
    latency_p90_ms: float


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    accepted: bool
    # Why it was refused, or why it passed.
    reasons: list[str]


class SwapReport(msgspec.Struct, frozen=True, kw_only=True):
    route: str
    config_hash: str
    tasks_digest: str
    options: SwapOptions
    incumbent: ModelSummary
    candidate: ModelSummary
    comparison: PairedComparison
    unfit: list[str]
    verdict: Verdict
    items: list[ItemRun]
    # What --apply changed in the config file (None: not applied).
    applied: str | None = None


def route_items(config: Config, items: Sequence[TaskItem], route_name: str) -> list[TaskItem]:
    """The items with checkers that the router sends to ``route_name``."""
    chosen = []
    for item in items:
        if item.checker is None:
            continue
        request, _ = parse_chat_request(msgspec.json.encode(item.request))
        size = measure_prompt(request.messages, request.tools, request.response_format)
        query, _ = route_query(request, item.declared, size.estimated_tokens)
        if route(query, config).route == route_name:
            chosen.append(item)
    return chosen


def unfit_items(
    config: Config, items: Sequence[TaskItem], route_name: str, model: str
) -> list[str]:
    """Why ``model`` could not take some of the items as the route's only model."""
    route_config = config.routes[route_name]
    solo = f"{route_name}.eval-solo"
    trial = msgspec.structs.replace(
        config,
        classes={**config.classes, solo: msgspec.structs.replace(
            config.classes[route_config.model_class], members=[model], degrade_to=None)},
        routes={**config.routes, route_name: msgspec.structs.replace(
            route_config, model_class=solo, max_degrade=0, cascade_from=None)},
    )  # fmt: skip
    problems = []
    for item in items:
        request, _ = parse_chat_request(msgspec.json.encode(item.request))
        size = measure_prompt(request.messages, request.tools, request.response_format)
        query, _ = route_query(request, route_name, size.estimated_tokens)
        decision = route(query, trial)
        if not decision.chain:
            reasons = ", ".join(d.reason for d in decision.dropped) or "no candidate"
            problems.append(f"{item.id}: {reasons}")
    return problems


async def _call(
    adapter: Adapter, upstream: ChatRequest, timeout_s: float
) -> tuple[Answer, UsageReport | None, float]:
    text: list[str] = []
    calls: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    usage: UsageReport | None = None
    started = time.perf_counter()
    with anyio.fail_after(timeout_s):
        async with await adapter.send(upstream) as stream:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    text.append(chunk.text)
                elif isinstance(chunk, ToolCallDelta):
                    if chunk.name:
                        names[chunk.index] = chunk.name
                    calls.setdefault(chunk.index, []).append(chunk.arguments)
                elif isinstance(chunk, UsageReport):
                    usage = chunk
    latency_ms = (time.perf_counter() - started) * 1000
    tool_calls = tuple(ToolCallAnswer(names.get(i, ""), "".join(calls[i])) for i in sorted(calls))
    return Answer("".join(text), tool_calls), usage, latency_ms


async def _run_model(
    item: TaskItem,
    model: str,
    config: Config,
    route_name: str,
    adapters: Mapping[str, Adapter],
    prices: PriceTable,
    timeout_s: float,
) -> ModelRun:
    settings = config.models[model]
    request, params = parse_chat_request(msgspec.json.encode(item.request))
    limit = request.output_limit or config.routes[route_name].max_tokens
    upstream = ChatRequest(
        model=settings.id or model,
        messages=request.messages,
        max_tokens=min(limit, settings.max_output_tokens),
        stream=False,
        params=params,
    )
    try:
        answer, usage, latency_ms = await _call(adapters[settings.provider], upstream, timeout_s)
    except ProviderError as exc:
        return ModelRun(passed=False, error=True, reason=f"{exc.error_class.value}: {exc.message}")
    except TimeoutError:
        return ModelRun(passed=False, error=True, reason=f"no answer within {timeout_s:g} s")
    cost = prices.cost_micros(model, usage.usage) if usage is not None else 0
    assert item.checker is not None
    result = await check(item.checker, answer)
    return ModelRun(
        passed=result.passed,
        reason=result.reason,
        latency_ms=round(latency_ms, 3),
        cost_micros=cost,
    )


def _summary(model: str, provider: str, source: str, runs: Sequence[ModelRun]) -> ModelSummary:
    latencies = sorted(r.latency_ms for r in runs if not r.error)
    p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))] if latencies else 0.0
    return ModelSummary(
        model=model,
        provider=provider,
        source=source,
        passed=sum(r.passed for r in runs),
        errors=sum(r.error for r in runs),
        cost_usd=round(sum(r.cost_micros for r in runs) / 1e6, 6),
        latency_median_ms=round(statistics.median(latencies), 3) if latencies else 0.0,
        latency_p90_ms=round(p90, 3),
    )


def decide(
    options: SwapOptions,
    comparison: PairedComparison,
    incumbent: ModelSummary,
    candidate: ModelSummary,
    unfit: Sequence[str],
) -> Verdict:
    reasons: list[str] = []
    tolerance = options.tolerance
    if unfit:
        reasons.append(
            f"{candidate.model} cannot take {len(unfit)} of the route's items "
            f"({'; '.join(unfit[:5])}{'; ...' if len(unfit) > 5 else ''})"
        )
    if incumbent.errors or candidate.errors:
        reasons.append(
            f"{incumbent.errors + candidate.errors} calls failed (incumbent {incumbent.errors}, "
            f"candidate {candidate.errors}): the comparison is inconclusive"
        )
    c = comparison
    if c.difference < -tolerance:
        reasons.append(
            f"pass rate {c.candidate_pass_rate:.1%} against {c.incumbent_pass_rate:.1%}: "
            f"{c.difference:+.1%} is worse than the tolerance of -{tolerance:.1%}"
        )
    if c.worse_p < options.alpha:
        reasons.append(
            f"significantly worse: it failed {c.only_incumbent} items the incumbent passed and "
            f"passed {c.only_candidate} it failed (McNemar one-sided p = {c.worse_p:.3g} < "
            f"{options.alpha:g})"
        )
    if options.strict and c.ci_low < -tolerance:
        reasons.append(
            f"not shown non-inferior: the {c.confidence:.0%} interval of the difference "
            f"[{c.ci_low:+.1%}, {c.ci_high:+.1%}] reaches below -{tolerance:.1%}"
        )
    if options.max_cost_ratio is not None and candidate.cost_usd > (
        incumbent.cost_usd * options.max_cost_ratio
    ):
        reasons.append(
            f"cost ${candidate.cost_usd:.6f} is over {options.max_cost_ratio:g}x the "
            f"incumbent's ${incumbent.cost_usd:.6f}"
        )
    if options.max_latency_ratio is not None and candidate.latency_median_ms > (
        incumbent.latency_median_ms * options.max_latency_ratio
    ):
        reasons.append(
            f"median latency {candidate.latency_median_ms:.1f} ms is over "
            f"{options.max_latency_ratio:g}x the incumbent's {incumbent.latency_median_ms:.1f} ms"
        )
    if reasons:
        return Verdict(accepted=False, reasons=reasons)
    return Verdict(
        accepted=True,
        reasons=[
            f"pass rate {c.candidate_pass_rate:.1%} against {c.incumbent_pass_rate:.1%} "
            f"({c.difference:+.1%}, tolerance -{tolerance:.1%}; McNemar one-sided p = "
            f"{c.worse_p:.3g}); cost ${candidate.cost_usd:.6f} against "
            f"${incumbent.cost_usd:.6f}"
        ],
    )


async def run_swap(
    config: Config,
    items: Sequence[TaskItem],
    options: SwapOptions,
    adapters: Mapping[str, Adapter],
    sources: Mapping[str, str],
    prices: PriceTable,
    *,
    config_hash: str,
    tasks_digest: str,
) -> SwapReport:
    """Run the route's items on both models and judge. ``items`` are the route's items."""
    route_config = config.routes[options.route]
    incumbent = config.classes[route_config.model_class].members[0]
    candidate = options.candidate
    limiter = anyio.CapacityLimiter(options.concurrency)
    runs: dict[tuple[str, str], ModelRun] = {}

    async def one(item: TaskItem, model: str) -> None:
        async with limiter:
            runs[item.id, model] = await _run_model(
                item, model, config, options.route, adapters, prices, options.call_timeout_s
            )

    async with anyio.create_task_group() as tasks:
        for item in items:
            for model in (incumbent, candidate):
                tasks.start_soon(one, item, model)
    item_runs = [
        ItemRun(id=i.id, incumbent=runs[i.id, incumbent], candidate=runs[i.id, candidate])
        for i in items
    ]
    comparison = compare_paired(
        [r.incumbent.passed for r in item_runs],
        [r.candidate.passed for r in item_runs],
        seed=options.seed,
    )

    def summary(model: str, side: str) -> ModelSummary:
        provider = config.models[model].provider
        return _summary(model, provider, sources[provider], [getattr(r, side) for r in item_runs])

    inc, cand = summary(incumbent, "incumbent"), summary(candidate, "candidate")
    unfit = unfit_items(config, items, options.route, candidate)
    return SwapReport(
        route=options.route,
        config_hash=config_hash,
        tasks_digest=tasks_digest,
        options=options,
        incumbent=inc,
        candidate=cand,
        comparison=comparison,
        unfit=unfit,
        verdict=decide(options, comparison, inc, cand, unfit),
        items=item_runs,
    )


def swap_markdown(report: SwapReport) -> str:
    c = report.comparison
    verdict = "ACCEPTED" if report.verdict.accepted else "REFUSED"
    rows = [
        [
            s.model,
            s.source,
            f"{s.passed}/{c.items}",
            f"{s.passed / c.items:.1%}" if c.items else "-",
            s.errors,
            f"{s.cost_usd:.6f}",
            f"{s.latency_median_ms:.1f}",
            f"{s.latency_p90_ms:.1f}",
        ]
        for s in (report.incumbent, report.candidate)
    ]
    out = [
        f"# Swap evaluation: route `{report.route}`\n",
        f"Incumbent `{report.incumbent.model}`, candidate `{report.candidate.model}`; "
        f"{c.items} items with checkers. Config `{report.config_hash}`, task set "
        f"`{report.tasks_digest}`.\n",
        f"**Verdict: {verdict}**\n",
        *(f"- {reason}\n" for reason in report.verdict.reasons),
        table(
            ["model", "via", "passed", "pass rate", "errors", "cost $", "median ms", "p90 ms"],
            rows,
        ),
        f"Difference (candidate - incumbent): {c.difference:+.1%}; "
        f"{c.confidence:.0%} paired bootstrap interval [{c.ci_low:+.1%}, {c.ci_high:+.1%}] "
        f"({c.resamples} resamples, seed {c.seed}). Discordant items: {c.only_incumbent} only "
        f"the incumbent passed, {c.only_candidate} only the candidate passed; exact McNemar "
        f"p = {c.mcnemar_p:.3g} (two-sided), {c.worse_p:.3g} (candidate worse, one-sided).\n",
    ]
    if report.unfit:
        out.append("## Items the candidate cannot take\n")
        out.extend(f"- {u}\n" for u in report.unfit)
    out.append("## Items\n")
    out.append(
        table(
            ["item", "incumbent", "candidate"],
            [[r.id, _cell(r.incumbent), _cell(r.candidate)] for r in report.items],
        )
    )
    if report.applied is not None:
        out.append(f"\nApplied to the config: {report.applied}.\n")
    return "\n".join(out)


def _cell(run: ModelRun) -> str:
    if run.passed:
        return "pass"
    return ("error: " if run.error else "fail: ") + json.dumps(run.reason)[1:-1][:120]
