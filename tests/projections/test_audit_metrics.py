"""The audit timeline and the Prometheus exposition, from hand-built logs."""

from __future__ import annotations

from flows import Flow, logs
from hypothesis import given, settings
from prometheus_client.parser import text_string_to_metric_families

from events import CircuitOpened, StoredEvent
from projections import (
    AlertBook,
    AlertPolicy,
    BudgetBook,
    BudgetSpec,
    UsageView,
    audit_timeline,
    render_prometheus,
    render_timeline,
)


def stored(events: list) -> list[StoredEvent]:  # type: ignore[type-arg]
    return [StoredEvent(i, e) for i, e in enumerate(events, 1)]


def test_the_timeline_of_a_request_that_fell_back_twice() -> None:
    flow = Flow("r1").received().reserve("alpha", amount=1000)
    flow.fail("alpha", "overloaded", then="beta")
    flow.events.append(
        CircuitOpened(**flow.env(), provider="primary", failures=1, window_s=30, cooldown_s=15)
    )
    flow.top_up("beta").fail("beta", "timeout", then="gamma").top_up("gamma", amount=700)
    flow.succeed("gamma", cost=420)
    timeline = audit_timeline(stored(flow.events))
    assert timeline is not None
    assert [(a.model, a.outcome) for a in timeline.attempts] == [
        ("alpha", "overloaded"),
        ("beta", "timeout"),
        ("gamma", "succeeded"),
    ]
    assert timeline.breakers == ["primary: open"]
    assert (timeline.reserved_micros, timeline.cost_micros) == (1000 + 500 + 700, 420)
    assert timeline.served_by == "gamma (backup)" and timeline.outcome == "completed"
    assert [e.seq for e in timeline.entries] == list(range(1, len(flow.events) + 1))
    text = render_timeline(timeline)
    assert "fallback alpha → beta after overloaded" in text
    assert "breaker of primary opened: 1 failures in 30 s, cooldown 15 s" in text
    assert "reserved $0.001000 for alpha against all/-/2026-11-22" in text
    assert "topped up the reservation by $0.000700 for gamma" in text
    assert "result  completed by gamma (backup)" in text


def test_a_request_without_events_has_no_timeline_and_one_without_an_end_is_in_flight() -> None:
    assert audit_timeline([]) is None
    timeline = audit_timeline(stored(Flow("r").received().reserve("alpha").events))
    assert timeline is not None and timeline.outcome == "in flight"


def exposition(log: list[StoredEvent], tenant_names: bool = False) -> str:
    usage = UsageView()
    alerts = AlertBook(AlertPolicy(), {"main": frozenset({"alpha"})})
    budgets = BudgetBook([BudgetSpec(name="all", scope="global", period="day", limit_micros=10**6)])
    for s in log:
        budgets.apply(s.event)
        usage.apply(s.event)
        alerts.apply(s.event, budgets)
    return render_prometheus(
        usage,
        alerts,
        budgets,
        provider_kinds={"primary": "openai", "backup": "anthropic"},
        position=len(log),
    )


@settings(max_examples=50, deadline=None)
@given(logs())
def test_the_exposition_parses_and_agrees_with_the_usage_view(log: list[StoredEvent]) -> None:
    families = {f.name: f for f in text_string_to_metric_families(exposition(log))}
    usage = UsageView()
    for s in log:
        usage.apply(s.event)
    [(_, total)] = usage.query(by=())
    assert sum(s.value for s in families["tollgate_requests"].samples) == total.requests
    assert sum(s.value for s in families["tollgate_attempts"].samples) == total.attempts
    histogram = families["gen_ai_client_operation_duration_seconds"]
    by_series: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for sample in histogram.samples:
        if sample.name.endswith("_bucket"):
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            by_series.setdefault(labels, []).append(sample.value)
    for counts in by_series.values():
        assert counts == sorted(counts)  # cumulative buckets never decrease
    assert sum(counts[-1] for counts in by_series.values()) == total.latency.count
    [position] = families["tollgate_projection_position"].samples
    assert position.value == len(log)


def test_label_values_are_escaped() -> None:
    flow = Flow("r", tenant='we"ird\\ten\nant').received().reserve("alpha").succeed("alpha")
    families = {f.name: f for f in text_string_to_metric_families(exposition(stored(flow.events)))}
    [sample] = families["tollgate_requests"].samples
    assert sample.labels["tenant"] == 'we"ird\\ten\nant'
    providers = {s.labels["gen_ai_provider_name"] for s in families["tollgate_attempts"].samples}
    assert providers == {"openai"}
