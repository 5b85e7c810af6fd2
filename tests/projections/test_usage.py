"""The usage view: totals equal sums over the raw events, attribution to the right model, merging
rows and a checkpoint in the middle of a log changing nothing."""

from __future__ import annotations

from collections import Counter

import msgspec
from flows import T0, Flow, logs
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    AttemptFailed,
    AttemptSucceeded,
    BudgetReservationExpired,
    CascadeEscalated,
    CostSettled,
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    StoredEvent,
)
from projections import BudgetBook, UsageFilter, UsageView


def fold(log: list[StoredEvent]) -> UsageView:
    view = UsageView()
    for stored in log:
        view.apply(stored.event)
    return view


def of(log: list[StoredEvent], kind: type) -> list[Event]:  # type: ignore[type-arg]
    return [s.event for s in log if isinstance(s.event, kind)]


@settings(max_examples=150, deadline=None)
@given(logs())
def test_totals_equal_sums_over_the_raw_events(log: list[StoredEvent]) -> None:
    [(_, total)] = fold(log).query(by=())
    settled = of(log, CostSettled)
    failed = of(log, RequestFailed)
    assert total.requests == len(of(log, RequestCompleted)) + len(failed)
    assert total.successes == len(of(log, RequestCompleted))
    assert total.failures == dict(Counter(e.error_type for e in failed))  # type: ignore[attr-defined]
    assert total.attempts == len(of(log, AttemptSucceeded)) + len(of(log, AttemptFailed))
    assert total.attempt_errors == dict(
        Counter(e.error_class for e in of(log, AttemptFailed))  # type: ignore[attr-defined]
    )
    assert total.retries == len(of(log, RetryScheduled))
    assert total.fallbacks == len(of(log, FallbackTaken))
    assert total.cascade_escalations == len(of(log, CascadeEscalated))
    assert total.input_tokens == sum(e.usage.input_tokens for e in settled)  # type: ignore[attr-defined]
    assert total.output_tokens == sum(e.usage.output_tokens for e in settled)  # type: ignore[attr-defined]
    assert total.cached_input_tokens == sum(
        e.usage.cached_input_tokens  # type: ignore[attr-defined]
        for e in settled
    )
    # Cost is what the budget book counts as spent: settlements, plus expired holds that no
    # late settlement replaced.
    book = BudgetBook([])
    for stored in log:
        book.apply(stored.event)
    assert total.cost_micros == sum(b.spent_micros for b in book.snapshot().budgets)
    expired = of(log, BudgetReservationExpired)
    late = {e.reservation_id for e in settled} & {e.reservation_id for e in expired}  # type: ignore[attr-defined]
    if not late:
        assert total.cost_micros == sum(e.cost_micros for e in settled) + sum(  # type: ignore[attr-defined]
            e.counted_micros  # type: ignore[attr-defined]
            for e in expired
        )
    assert total.latency.count == total.requests


@settings(max_examples=100, deadline=None)
@given(logs(), st.data())
def test_a_checkpoint_anywhere_continues_to_the_same_state(
    log: list[StoredEvent], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(log)))
    first = fold(log[:cut])
    saved = msgspec.msgpack.encode(first.state())
    resumed = UsageView.from_state(msgspec.msgpack.decode(saved, type=type(first.state())))
    for stored in log[cut:]:
        resumed.apply(stored.event)
    assert msgspec.msgpack.encode(resumed.state()) == msgspec.msgpack.encode(fold(log).state())


@settings(max_examples=100, deadline=None)
@given(logs())
def test_groups_partition_the_total(log: list[StoredEvent]) -> None:
    view = fold(log)
    [(_, total)] = view.query(by=())
    for by in (("tenant",), ("day", "model"), ("provider", "task", "model_class")):
        groups = view.query(by=by)
        assert sum(r.requests for _, r in groups) == total.requests
        assert sum(r.cost_micros for _, r in groups) == total.cost_micros
        assert sum(r.latency.count for _, r in groups) == total.latency.count


def test_each_figure_lands_on_the_model_it_concerns() -> None:
    flow = Flow("r1").received().reserve("alpha")
    flow.fail("alpha", "overloaded", then="retry").fail("alpha", "server_error", then="beta")
    flow.top_up("beta").succeed("beta", tokens=(40, 7), cost=300)
    view = fold([StoredEvent(i, e) for i, e in enumerate(flow.events, 1)])
    rows = {(g["model"], g["provider"]): r for g, r in view.query(by=("model", "provider"))}
    alpha, beta = rows[("alpha", "primary")], rows[("beta", "backup")]
    assert (alpha.attempts, alpha.retries, alpha.fallbacks) == (2, 1, 1)
    assert alpha.attempt_errors == {"overloaded": 1, "server_error": 1}
    assert (alpha.requests, alpha.cost_micros) == (0, 0)
    assert (beta.requests, beta.successes, beta.attempts) == (1, 1, 1)
    assert (beta.input_tokens, beta.output_tokens, beta.cost_micros) == (40, 7, 300)
    median = beta.latency.quantile(0.5)
    assert median is not None and abs(median - 210_000_000) <= 2_100_000
    # Every row of the request carries the class the route chose.
    assert {g["model_class"] for g, _ in view.query(by=("model_class",))} == {"main"}


def test_a_failed_request_lands_on_the_last_model_tried_and_an_expiry_on_the_held_model() -> None:
    failed = Flow("r1").received().reserve("alpha").fail("alpha", "timeout", then="beta")
    failed.top_up("beta").fail("beta", "timeout").give_up()
    crashed = Flow("r2").received().reserve("gamma").expire(counted=777)
    log = [StoredEvent(i, e) for i, e in enumerate(failed.events + crashed.events, 1)]
    rows = {g["model"]: r for g, r in fold(log).query(by=("model",))}
    assert rows["beta"].failures == {"all_candidates_failed": 1}
    assert rows["gamma"].cost_micros == 777
    assert rows["gamma"].requests == 0  # no terminal event: the request never ended


def test_requests_are_forgotten_once_ended_and_settled() -> None:
    flows = [Flow(f"r{i}").received().reserve("alpha").succeed("alpha") for i in range(50)]
    view = fold([StoredEvent(i, e) for i, e in enumerate([e for f in flows for e in f.events], 1)])
    assert view.state().open_requests == []
    # One still in flight is remembered.
    open_flow = Flow("open").received().reserve("alpha")
    for e in open_flow.events:
        view.apply(e)
    assert [r.request_id for r in view.state().open_requests] == ["open"]


def test_filters_and_days() -> None:
    early = Flow("r1", tenant="acme", ts_ns=T0).received().reserve("alpha").succeed("alpha")
    late = Flow("r2", tenant="globex", ts_ns=T0 + 2 * 3600 * 10**9)  # the next UTC day
    late.received().reserve("alpha").succeed("alpha")
    view = fold([StoredEvent(i, e) for i, e in enumerate(early.events + late.events, 1)])
    days = [g["day"] for g, _ in view.query(by=("day",))]
    assert days == ["2026-11-22", "2026-11-23"]
    [(_, only)] = view.query(UsageFilter(since="2026-11-23"), by=())
    assert only.requests == 1
    assert view.query(UsageFilter(tenant="nobody"), by=()) == []
    [(_, acme)] = view.query(UsageFilter(tenant="acme", until="2026-11-22"), by=())
    assert acme.requests == 1


def test_an_expiry_is_charged_to_its_request_until_a_late_settlement_replaces_it() -> None:
    flow = Flow("r1", tenant="acme", task="code").received().reserve("beta")
    # The sweeper's event carries no tenant or task.
    env = {**flow.env(60_000), "tenant": "", "task": ""}
    flow.events.append(BudgetReservationExpired(**env, reservation_id="r1", counted_micros=500))
    view = fold([StoredEvent(i, e) for i, e in enumerate(flow.events, 1)])
    [(group, row)] = view.query(by=("tenant", "task", "model"))
    assert (group, row.cost_micros) == ({"tenant": "acme", "task": "code", "model": "beta"}, 500)
    flow.attempt = 1
    flow.settle(300, model="beta")
    view = fold([StoredEvent(i, e) for i, e in enumerate(flow.events, 1)])
    [(_, total)] = view.query(by=())
    assert total.cost_micros == 300
