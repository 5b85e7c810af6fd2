"""The sidecar's projections, built from its config: usage, alerts and budgets, kept current from
the log by a :class:`~projections.ProjectionRunner`, and what the admin API serves from them."""

from __future__ import annotations

from typing import Any

from projections import (
    USAGE_DIMENSIONS,
    ProjectionRunner,
    Projections,
    UsageFilter,
    UsageRow,
    UsageView,
    render_prometheus,
)

from ._boundary import budget_specs
from ._config import Config

__all__ = [
    "build_projections",
    "metrics_text",
    "parse_usage_dims",
    "primary_models",
    "usage_report",
]


def primary_models(config: Config) -> dict[str, frozenset[str]]:
    """For each class, the models that serve its requests without degrading: its own members,
    plus the cheap class's of any cascade route onto it (a cheap answer that passed its checks is
    the route working as designed, not a degradation)."""
    primary = {name: set(cls.members) for name, cls in config.classes.items()}
    for route in config.routes.values():
        if route.cascade_from is not None:
            primary[route.model_class] |= set(config.classes[route.cascade_from].members)
    return {name: frozenset(models) for name, models in primary.items()}


def build_projections(config: Config) -> Projections:
    return Projections(
        budget_specs=budget_specs(config),
        alert_policy=config.alerts,
        primary_models=primary_models(config),
    )


def metrics_text(config: Config, runner: ProjectionRunner) -> str:
    p = runner.projections
    kinds = {name: provider.kind for name, provider in config.providers.items()}
    return render_prometheus(
        p.totals, p.alerts, p.budgets, provider_kinds=kinds, position=p.position
    )


def parse_usage_dims(text: str | None) -> tuple[str, ...]:
    """The usage dimensions to group by, from a comma-separated list (None: all of them).

    Raises ValueError naming the unknown ones (its message names no option: callers do). Empty
    items are ignored, so ``""`` is no grouping.
    """
    if text is None:
        return USAGE_DIMENSIONS
    dims = tuple(d for d in text.split(",") if d)
    unknown = sorted(set(dims) - set(USAGE_DIMENSIONS))
    if unknown:
        raise ValueError(
            f"unknown dimension(s) {', '.join(unknown)} (known: {', '.join(USAGE_DIMENSIONS)})"
        )
    return dims


def usage_report(
    view: UsageView, where: UsageFilter, by: tuple[str, ...] = USAGE_DIMENSIONS
) -> dict[str, Any]:
    """The usage view as JSON: one entry per group, plus the total over them."""
    dims = [d for d in USAGE_DIMENSIONS if d in by]
    groups = view.query(where, by=dims)
    total = UsageRow()
    for _, row in groups:
        total.merge(row)
    return {
        "by": dims,
        "rows": [{**group, **usage_figures(row)} for group, row in groups],
        "total": usage_figures(total),
    }


def usage_figures(row: UsageRow) -> dict[str, Any]:
    def quantiles(sketch: Any) -> dict[str, float | None]:
        return {
            f"p{int(q * 100)}_ms": None if (v := sketch.quantile(q)) is None else v / 1e6
            for q in (0.5, 0.95, 0.99)
        }

    return {
        "requests": row.requests,
        "successes": row.successes,
        "failures": dict(sorted(row.failures.items())),
        "attempts": row.attempts,
        "attempt_errors": dict(sorted(row.attempt_errors.items())),
        "retries": row.retries,
        "fallbacks": row.fallbacks,
        "cascade_escalations": row.cascade_escalations,
        "input_tokens": row.input_tokens,
        "cached_input_tokens": row.cached_input_tokens,
        "output_tokens": row.output_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_usd": row.cost_micros / 1e6,
        "cost_micros": row.cost_micros,
        "latency": quantiles(row.latency),
        "ttft": quantiles(row.ttft),
        "ttlt": quantiles(row.ttlt),
    }
