"""The alert rules: each fires when its condition begins, once, and clears when it ends."""

from __future__ import annotations

import msgspec
from flows import MS, T0, Flow

from events import BudgetLimitChanged, CircuitClosed, CircuitHalfOpened, CircuitOpened, Event
from projections import AlertBook, AlertChange, AlertPolicy, BudgetBook, BudgetSpec

POLICY = AlertPolicy(degraded_min_requests=10, unrouted_min_requests=10)
PRIMARY = {"main": frozenset({"alpha"})}


def feed(
    book: AlertBook, events: list[Event], budgets: BudgetBook | None = None
) -> list[AlertChange]:
    changes: list[AlertChange] = []
    for e in events:
        if budgets is not None:
            budgets.apply(e)
        changes += book.apply(e, budgets)
    return changes


def served(n: int, model: str, *, start_s: float = 0, unrouted: bool = False) -> list[Event]:
    events: list[Event] = []
    for i in range(n):
        flow = Flow(f"{model}-{start_s}-{i}", ts_ns=T0 + int((start_s + i) * 1000) * MS)
        events += flow.received(unrouted=unrouted).reserve("alpha").succeed(model).events
    return events


def test_the_degraded_share_fires_above_the_threshold_only() -> None:
    book = AlertBook(POLICY, PRIMARY)
    # 7 of 10 on the class's own model: 30% degraded is not above 30%.
    assert feed(book, served(7, "alpha") + served(3, "beta", start_s=10)) == []
    # One more degraded request: 4 of 11.
    [change] = feed(book, served(1, "beta", start_s=20))
    assert (change.raised, change.alert, change.subject) == (True, "degraded_share", "main")
    assert change.value == 4 / 11
    # It fires once while the condition lasts ...
    assert feed(book, served(2, "beta", start_s=30)) == []
    # ... and clears when the class's own model serves most traffic again.
    changes = feed(book, served(20, "alpha", start_s=40))
    assert [(c.raised, c.alert) for c in changes] == [(False, "degraded_share")]
    assert book.active() == []


def test_the_degraded_share_needs_enough_requests_and_forgets_old_ones() -> None:
    book = AlertBook(POLICY, PRIMARY)
    assert feed(book, served(9, "beta")) == []  # 100% but fewer than 10 requests
    [raised] = feed(book, served(1, "beta", start_s=9))
    assert raised.raised
    # Six minutes later the window (5 minutes) holds only new requests.
    changes = feed(book, served(10, "alpha", start_s=400))
    assert [c.raised for c in changes] == [False]


def test_breaker_alerts_follow_the_breaker() -> None:
    book = AlertBook(POLICY, PRIMARY)
    env = Flow("r").env
    [opened] = book.apply(
        CircuitOpened(**env(), provider="primary", failures=5, window_s=30, cooldown_s=15)
    )
    assert (opened.alert, opened.subject, opened.raised) == ("breaker_open", "primary", True)
    assert book.breakers == {"primary": "open"}
    assert book.apply(CircuitHalfOpened(**env(), provider="primary")) == []
    assert book.breakers == {"primary": "half_open"}
    [closed] = book.apply(CircuitClosed(**env(), provider="primary"))
    assert not closed.raised and book.breakers == {"primary": "closed"}


def test_budget_thresholds_fire_at_80_and_95_percent_and_clear_when_the_limit_rises() -> None:
    budgets = BudgetBook([BudgetSpec(name="all", scope="global", period="day", limit_micros=1000)])
    book = AlertBook(POLICY, PRIMARY)

    def spend(name: str, cost: int) -> list[AlertChange]:
        flow = Flow(name).received().reserve("alpha", amount=cost).succeed("alpha", cost=cost)
        return feed(book, flow.events, budgets)

    assert spend("a", 700) == []
    [at80] = spend("b", 150)
    assert (at80.alert, at80.subject, at80.threshold) == (
        "budget_threshold",
        "all/-/2026-11-22@0.8",
        0.8,
    )
    [at95] = spend("c", 100)
    assert at95.threshold == 0.95 and at95.value == 0.95
    raise_limit = BudgetLimitChanged(**Flow("x").env(), budget="all", limit_micros=10_000)
    changes = feed(book, [raise_limit], budgets)
    assert sorted((c.raised, c.threshold) for c in changes) == [(False, 0.8), (False, 0.95)]


def test_the_unrouted_rate_fires_above_its_threshold() -> None:
    book = AlertBook(POLICY, PRIMARY)
    assert feed(book, served(9, "alpha") + served(1, "alpha", start_s=9, unrouted=True)) == []
    [change] = feed(book, served(1, "alpha", start_s=10, unrouted=True))
    assert (change.alert, change.subject, change.value) == ("unrouted_rate", "tasks", 2 / 11)


def test_the_state_round_trips_and_continues_identically() -> None:
    events = served(6, "beta") + served(6, "alpha", start_s=6, unrouted=True)
    whole = AlertBook(POLICY, PRIMARY)
    changes_whole = feed(whole, events)
    first = AlertBook(POLICY, PRIMARY)
    changes_first = feed(first, events[:40])
    data = msgspec.msgpack.encode(first.state())
    resumed = AlertBook.from_state(
        msgspec.msgpack.decode(data, type=type(first.state())), POLICY, PRIMARY
    )
    assert changes_first + feed(resumed, events[40:]) == changes_whole
    assert changes_whole  # the log does raise something
    assert msgspec.msgpack.encode(resumed.state()) == msgspec.msgpack.encode(whole.state())
