"""The budget projection: keys and periods, each event's effect, and the invariant under random
interleavings (hypothesis), with replay giving exactly the live state."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from events import (
    BudgetLimitChanged,
    BudgetOverrun,
    BudgetRefused,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    Event,
    RequestReceived,
    TokenUsage,
    decode_event,
    encode_event,
)
from projections import BudgetBook, BudgetSpec, Refusal, budget_keys

# 2026-11-22T10:00:00Z
T0 = int(datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.UTC).timestamp()) * 10**9
HOUR = 3600 * 10**9

SPECS = [
    BudgetSpec(name="global", scope="global", period="day", limit_micros=1_000),
    BudgetSpec(
        name="tenants", scope="tenant", period="month", limit_micros=600, overrides={"big": 900}
    ),
    BudgetSpec(name="route-code", scope="route", period="total", limit_micros=800),
    BudgetSpec(name="flagship", scope="class", period="day", limit_micros=700),
]

_ids = itertools.count()


def envelope(ts_ns: int = T0) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids):06d}",
        "ts_ns": ts_ns,
        "request_id": "req",
        "tenant": "acme",
        "task": "code",
        "config_hash": "h",
    }


def reserved(
    rid: str, keys: list[str], amount: int, expires_at_ns: int = T0 + HOUR
) -> BudgetReserved:
    return BudgetReserved(
        **envelope(),
        reservation_id=rid,
        budgets=keys,
        amount_micros=amount,
        expires_at_ns=expires_at_ns,
        model="m",
        provider="p",
    )


def topped_up(rid: str, amount: int) -> BudgetToppedUp:
    return BudgetToppedUp(
        **envelope(), reservation_id=rid, amount_micros=amount, model="m", provider="p"
    )


def settled(rid: str, attempt: int, cost: int, *, final: bool, ts_ns: int = T0) -> CostSettled:
    return CostSettled(
        **envelope(ts_ns),
        reservation_id=rid,
        attempt=attempt,
        model="m",
        provider="p",
        usage=TokenUsage(input_tokens=1),
        cost_micros=cost,
        final=final,
    )


def expired(rid: str, counted: int, ts_ns: int = T0 + HOUR) -> BudgetReservationExpired:
    return BudgetReservationExpired(**envelope(ts_ns), reservation_id=rid, counted_micros=counted)


def limit_changed(budget: str, limit: int, ts_ns: int = T0) -> BudgetLimitChanged:
    return BudgetLimitChanged(**envelope(ts_ns), budget=budget, limit_micros=limit)


def figures(book: BudgetBook, key: str) -> tuple[int | None, int, int]:
    s = book.state(key)
    return s.limit_micros, s.reserved_micros, s.spent_micros


def encoded(book: BudgetBook) -> bytes:
    return msgspec.msgpack.encode(book.snapshot())


# -- keys and periods ------------------------------------------------------------------------


def test_keys_name_scope_value_and_utc_period() -> None:
    keys = budget_keys(SPECS, tenant="acme", route="code", model_class="flagship", ts_ns=T0)
    assert keys == [
        "global/*/2026-11-22",
        "tenants/acme/2026-11",
        "route-code/code/total",
        "flagship/flagship/2026-11-22",
    ]


@pytest.mark.parametrize(
    ("instant", "day", "month"),
    [
        # The last nanosecond of November, then the first of December (UTC).
        ("2026-11-30T23:59:59.999999999", "2026-11-30", "2026-11"),
        ("2026-12-01T00:00:00", "2026-12-01", "2026-12"),
        ("2026-12-31T23:59:59.999999999", "2026-12-31", "2026-12"),
        ("2027-01-01T00:00:00", "2027-01-01", "2027-01"),
        ("2028-02-29T12:00:00", "2028-02-29", "2028-02"),
        ("1970-01-01T00:00:00", "1970-01-01", "1970-01"),
    ],
)
def test_periods_at_boundaries(instant: str, day: str, month: str) -> None:
    whole, _, fraction = instant.partition(".")
    seconds = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC).timestamp()
    ts_ns = int(seconds) * 10**9 + int(fraction.ljust(9, "0") or 0)
    keys = budget_keys(SPECS, tenant="t", route="r", model_class="c", ts_ns=ts_ns)
    assert keys[0] == f"global/*/{day}"
    assert keys[1] == f"tenants/t/{month}"
    assert keys[2] == "route-code/r/total"


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # up to 2100
def test_periods_agree_with_datetime_in_utc(ts_ns: int) -> None:
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    when = epoch + datetime.timedelta(microseconds=ts_ns // 1000)
    keys = budget_keys(SPECS, tenant="t", route="r", model_class="c", ts_ns=ts_ns)
    assert keys[0] == f"global/*/{when:%Y-%m-%d}"
    assert keys[1] == f"tenants/t/{when:%Y-%m}"


def test_book_keys_use_its_specs() -> None:
    book = BudgetBook(SPECS)
    assert book.keys(tenant="acme", route="code", model_class="flagship", ts_ns=T0) == budget_keys(
        SPECS, tenant="acme", route="code", model_class="flagship", ts_ns=T0
    )


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="contain no '/'"):
        BudgetSpec(name="a/b", scope="global", period="day", limit_micros=1)
    with pytest.raises(msgspec.ValidationError, match=r">= 0 - at `\$\[0\].limit_micros`"):
        msgspec.convert(
            [{"name": "a", "scope": "global", "period": "day", "limit_micros": -1}],
            list[BudgetSpec],
        )
    with pytest.raises(msgspec.ValidationError, match="scope"):
        msgspec.convert(
            {"name": "a", "scope": "planet", "period": "day", "limit_micros": 1}, BudgetSpec
        )
    with pytest.raises(ValueError, match="defined twice"):
        BudgetBook([SPECS[0], SPECS[0]])


# -- limits, overrides, check ----------------------------------------------------------------


def test_limits_come_from_specs_and_overrides_per_scope_value() -> None:
    book = BudgetBook(SPECS)
    assert book.state("tenants/acme/2026-11").limit_micros == 600
    assert book.state("tenants/big/2026-11").limit_micros == 900
    assert book.state("global/*/2026-11-22").remaining_micros == 1_000
    # A budget the configuration no longer names: tracked, never refuses.
    book.apply(reserved("r1", ["gone/acme/2026-11"], 10**9))
    assert figures(book, "gone/acme/2026-11") == (None, 10**9, 0)
    assert book.check(["gone/acme/2026-11"], 10**12) is None


def test_check_refuses_with_the_first_key_that_does_not_fit() -> None:
    book = BudgetBook(SPECS)
    keys = ["global/*/2026-11-22", "tenants/acme/2026-11", "flagship/flagship/2026-11-22"]
    book.apply(reserved("r1", keys, 500))
    book.apply(settled("r1", 1, 100, final=False))
    # global 1000: 100 spent + 400 held; tenants 600: the same; flagship 700: the same.
    assert book.check(keys, 100) is None
    assert book.check(keys, 101) == Refusal(
        budget="tenants/acme/2026-11",
        limit_micros=600,
        spent_micros=100,
        reserved_micros=400,
        needed_micros=101,
    )
    refusal = book.check(list(reversed(keys)), 250)
    assert refusal is not None
    assert refusal.budget == "flagship/flagship/2026-11-22"
    # Up to the limit exactly fits.
    assert book.check(["global/*/2026-11-22"], 500) is None


def test_check_never_mutates() -> None:
    book = BudgetBook(SPECS)
    before = encoded(book)
    assert book.check(["tenants/new/2026-11"], 601) is not None
    assert book.check(["tenants/new/2026-11"], 1) is None
    assert encoded(book) == before


# -- each event's effect ---------------------------------------------------------------------


def test_reserve_holds_on_every_key_once() -> None:
    book = BudgetBook(SPECS)
    event = reserved(
        "r1", ["global/*/2026-11-22", "tenants/acme/2026-11", "global/*/2026-11-22"], 70
    )
    book.apply(event)
    book.apply(event)
    assert figures(book, "global/*/2026-11-22") == (1_000, 70, 0)
    assert figures(book, "tenants/acme/2026-11") == (600, 70, 0)
    assert book.unsettled() == ["r1"]
    state = book.reservation("r1")
    assert state is not None
    assert state.held_micros == 70
    assert state.budgets == ["global/*/2026-11-22", "tenants/acme/2026-11"]


def test_top_up_grows_the_hold_once_per_event() -> None:
    book = BudgetBook(SPECS)
    book.apply(reserved("r1", ["global/*/2026-11-22"], 70))
    first = topped_up("r1", 30)
    book.apply(first)
    book.apply(first)
    book.apply(topped_up("r1", 5))
    assert figures(book, "global/*/2026-11-22") == (1_000, 105, 0)
    book.apply(topped_up("unknown", 5))
    assert figures(book, "global/*/2026-11-22") == (1_000, 105, 0)


def test_settle_moves_cost_from_hold_to_spent_and_final_releases() -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100))
    book.apply(settled("r1", 1, 30, final=False))
    assert figures(book, key) == (1_000, 70, 30)
    book.apply(settled("r1", 2, 20, final=True))
    assert figures(book, key) == (1_000, 0, 50)
    assert book.unsettled() == []
    assert book.reservation("r1") is None
    # Closed: every later event for it changes nothing.
    before = encoded(book)
    for late in (
        settled("r1", 3, 99, final=True),
        topped_up("r1", 10),
        expired("r1", 10),
        reserved("r1", [key], 100),
    ):
        book.apply(late)
    assert encoded(book) == before


def test_overrun_empties_the_hold_and_counts_the_full_cost() -> None:
    book = BudgetBook(SPECS)
    key = "route-code/code/total"
    book.apply(reserved("r1", [key], 700))
    book.apply(settled("r1", 1, 650, final=False))
    book.apply(settled("r1", 2, 200, final=True))  # 150 above the hold
    assert figures(book, key) == (800, 0, 850)
    assert book.state(key).remaining_micros == -50
    # BudgetOverrun and BudgetRefused are audit facts.
    book.apply(
        BudgetOverrun(**envelope(), reservation_id="r1", reserved_micros=50, actual_micros=200)
    )
    book.apply(
        BudgetRefused(
            **envelope(),
            budget=key,
            limit_micros=800,
            spent_micros=850,
            reserved_micros=0,
            needed_micros=1,
        )
    )
    assert figures(book, key) == (800, 0, 850)


def test_an_attempt_is_settled_once() -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100))
    book.apply(settled("r1", 1, 30, final=False))
    # The same attempt again under a new event id (a retried append): not counted again.
    book.apply(settled("r1", 1, 30, final=False))
    assert figures(book, key) == (1_000, 70, 30)
    # A final settlement of an attempt already settled is a release: it closes, adds nothing.
    book.apply(settled("r1", 1, 30, final=True))
    assert figures(book, key) == (1_000, 0, 30)
    assert book.unsettled() == []


def test_expiry_counts_the_hold_as_spent_once() -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100, expires_at_ns=T0 + HOUR))
    book.apply(reserved("r2", [key], 50, expires_at_ns=T0 + 2 * HOUR))
    book.apply(reserved("r0", [key], 10, expires_at_ns=T0 + HOUR))
    book.apply(settled("r1", 1, 40, final=False))
    assert book.expired(T0 + HOUR - 1) == []
    assert book.expired(T0 + HOUR) == ["r0", "r1"]
    assert book.expired(T0 + 3 * HOUR) == ["r0", "r1", "r2"]
    event = expired("r1", 60)
    book.apply(event)
    book.apply(event)
    assert figures(book, key) == (1_000, 60, 100)  # r0 and r2 still held; r1: 40 + 60 spent
    assert book.unsettled() == ["r0", "r2"]
    assert book.expired(T0 + 3 * HOUR) == ["r0", "r2"]
    state = book.reservation("r1")
    assert state is not None
    assert state.expired
    assert state.held_micros == 60


@pytest.mark.parametrize(
    ("cost", "final", "spent"),
    [
        (25, True, 65),  # 40 + 25: the rest of the provisional 60 is taken back
        (25, False, 100),  # not final: the provisional charge stands
        (60, True, 100),
        (90, True, 130),  # 30 above the hold: an overrun, counted
        (90, False, 130),
    ],
)
def test_late_settlement_corrects_an_expiry(cost: int, final: bool, spent: int) -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100))
    book.apply(settled("r1", 1, 40, final=False))
    book.apply(expired("r1", 60))
    late = settled("r1", 2, cost, final=final)
    book.apply(late)
    book.apply(late)
    assert figures(book, key) == (1_000, 0, spent)
    assert (book.reservation("r1") is None) == final


def test_late_final_release_after_expiry_takes_the_provisional_charge_back() -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100))
    book.apply(settled("r1", 1, 40, final=False))
    book.apply(expired("r1", 60))
    book.apply(topped_up("r1", 10))  # an expired hold grows in spent
    assert figures(book, key) == (1_000, 0, 110)
    book.apply(settled("r1", 1, 40, final=True))  # attempt 1 again: a release
    assert figures(book, key) == (1_000, 0, 40)


def test_limit_change_by_name_and_by_key_latest_wins() -> None:
    book = BudgetBook(SPECS)
    acme, big, new = "tenants/acme/2026-11", "tenants/big/2026-11", "tenants/new/2026-11"
    book.apply(reserved("r1", [acme, big], 10))
    by_key = limit_changed(acme, 50, ts_ns=T0 + 1)
    book.apply(by_key)
    assert book.state(acme).limit_micros == 50
    assert book.state(big).limit_micros == 900
    by_name = limit_changed("tenants", 300, ts_ns=T0 + 2)
    book.apply(by_name)  # newer than the key's change: every key of the budget, overrides too
    assert [book.state(k).limit_micros for k in (acme, big, new)] == [300, 300, 300]
    book.apply(by_key)  # a redelivered older change does not revert a newer one
    assert book.state(acme).limit_micros == 300
    book.apply(limit_changed(acme, 5, ts_ns=T0 + 3))  # lowered below usage: allowed
    assert book.state(acme).remaining_micros == -5
    assert book.check([acme], 0) is not None
    assert book.check([acme, big], 1) == Refusal(
        budget=acme, limit_micros=5, spent_micros=0, reserved_micros=10, needed_micros=1
    )
    # A change for a key not seen yet applies when it appears.
    book.apply(limit_changed("global/*/2026-11-23", 7, ts_ns=T0 + 4))
    assert book.state("global/*/2026-11-23").limit_micros == 7
    book.apply(reserved("r2", ["global/*/2026-11-23"], 7))
    assert figures(book, "global/*/2026-11-23") == (7, 7, 0)


def test_limit_changes_commute() -> None:
    changes = [
        limit_changed("tenants", 300, ts_ns=T0 + 2),
        limit_changed("tenants/acme/2026-11", 50, ts_ns=T0 + 1),
        limit_changed("tenants/acme/2026-11", 70, ts_ns=T0 + 3),
        limit_changed("tenants", 400, ts_ns=T0 + 4),
    ]
    results = set()
    for order in itertools.permutations(changes):
        book = BudgetBook(SPECS)
        book.apply(reserved("r", ["tenants/acme/2026-11", "tenants/big/2026-11"], 1))
        for change in order:
            book.apply(change)
        results.add(encoded(book))
    assert len(results) == 1


def test_other_events_change_nothing() -> None:
    book = BudgetBook(SPECS)
    before = encoded(book)
    book.apply(
        RequestReceived(
            **envelope(),
            transport="unix",
            model_requested="auto",
            stream=False,
            message_count=1,
            prompt_chars=1,
            prompt_sha256="x",
        )
    )
    assert encoded(book) == before


def test_forget_bounds_memory_without_changing_the_snapshot() -> None:
    book = BudgetBook(SPECS)
    key = "global/*/2026-11-22"
    book.apply(reserved("r1", [key], 100))
    book.apply(settled("r1", 1, 10, final=True, ts_ns=T0 + 1))
    book.apply(reserved("r2", [key], 100))
    book.apply(expired("r2", 100, ts_ns=T0 + 2))
    book.apply(reserved("r3", [key], 100))
    book.apply(settled("r3", 1, 10, final=True, ts_ns=T0 + 9))
    before = encoded(book)
    book.forget(T0 + 5)
    assert encoded(book) == before
    assert book.reservation("r2") is None
    assert book._closed == {"r3": T0 + 9}
    # A late settlement of a forgotten reservation is ignored; r3 is still remembered as closed.
    book.apply(settled("r2", 1, 10, final=True))
    book.apply(reserved("r3", [key], 100))
    assert encoded(book) == before


def test_snapshot_is_sorted_and_deterministic() -> None:
    events: list[Event] = [
        reserved("r2", ["tenants/b/2026-11", "global/*/2026-11-22"], 5),
        reserved("r1", ["tenants/a/2026-11"], 7),
    ]
    one, two = BudgetBook(SPECS), BudgetBook(SPECS)
    for e in events:
        one.apply(e)
    for e in reversed(events):
        two.apply(e)
    snap = one.snapshot()
    assert [b.key for b in snap.budgets] == sorted(b.key for b in snap.budgets)
    assert [r.reservation_id for r in snap.reservations] == ["r1", "r2"]
    assert encoded(one) == encoded(two)
    assert msgspec.json.encode(snap) == msgspec.json.encode(two.snapshot())


# -- the invariant under random interleavings ------------------------------------------------

TENANTS = ["acme", "big"]
ROUTES = ["code", "chat"]
CLASSES = ["flagship", "fast"]


class BudgetMachine(RuleBasedStateMachine):
    """Drives a book as the cost boundary would, and checks it against its own ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.book = BudgetBook(SPECS)
        self.log: list[Event] = []
        self.now = T0
        self.rids = itertools.count()
        # Per reservation: its keys, whether closed, and the cost counted (first settlement of
        # each attempt while not closed).
        self.keys_of: dict[str, list[str]] = {}
        self.closed: set[str] = set()
        self.counted: dict[str, int] = {}
        self.settled_attempts: dict[str, set[int]] = {}
        # Per key: how far usage may be above the limit (overruns, lowered limits).
        self.slack: dict[str, int] = {}

    def emit(self, event: Event) -> None:
        # Through the log's codec, as a replay would see it.
        event = decode_event(encode_event(event))
        self.book.apply(event)
        self.log.append(event)

    def open_rids(self) -> list[str]:
        return [r for r in self.keys_of if r not in self.closed]

    def usage(self, key: str) -> int:
        s = self.book.state(key)
        return s.spent_micros + s.reserved_micros

    @rule(
        tenant=st.sampled_from(TENANTS),
        route=st.sampled_from(ROUTES),
        model_class=st.sampled_from(CLASSES),
        amount=st.integers(0, 500),
        ttl=st.integers(1, 3 * HOUR),
    )
    def reserve(self, tenant: str, route: str, model_class: str, amount: int, ttl: int) -> None:
        keys = self.book.keys(tenant=tenant, route=route, model_class=model_class, ts_ns=self.now)
        before = encoded(self.book)
        refusal = self.book.check(keys, amount)
        assert encoded(self.book) == before
        if refusal is not None:
            assert refusal.budget in keys
            assert refusal.spent_micros + refusal.reserved_micros + amount > refusal.limit_micros
            self.emit(BudgetRefused(**envelope(self.now), **msgspec.structs.asdict(refusal)))
            return
        rid = f"r{next(self.rids)}"
        self.emit(
            BudgetReserved(
                **envelope(self.now),
                reservation_id=rid,
                budgets=keys,
                amount_micros=amount,
                expires_at_ns=self.now + ttl,
                model="m",
                provider="p",
            )
        )
        self.keys_of[rid] = keys
        self.counted[rid] = 0
        self.settled_attempts[rid] = set()

    @precondition(lambda self: self.open_rids())
    @rule(data=st.data(), amount=st.integers(0, 300))
    def top_up(self, data: st.DataObject, amount: int) -> None:
        rid = data.draw(st.sampled_from(self.open_rids()))
        if self.book.check(self.keys_of[rid], amount) is None:
            self.emit(
                BudgetToppedUp(
                    **envelope(self.now),
                    reservation_id=rid,
                    amount_micros=amount,
                    model="m",
                    provider="p",
                )
            )

    @precondition(lambda self: self.open_rids())
    @rule(
        data=st.data(),
        attempt=st.integers(1, 3),
        share=st.fractions(0, 1),
        over=st.one_of(st.just(0), st.integers(1, 200)),
        final=st.booleans(),
    )
    def settle(self, data: st.DataObject, attempt: int, share: Any, over: int, final: bool) -> None:
        rid = data.draw(st.sampled_from(self.open_rids()))
        state = self.book.reservation(rid)
        assert state is not None
        held = state.held_micros
        cost = int(held * share) + over  # at most the hold, or an overrun above it
        if attempt not in self.settled_attempts[rid]:
            self.settled_attempts[rid].add(attempt)
            self.counted[rid] += cost
            for key in self.keys_of[rid]:
                self.slack[key] = self.slack.get(key, 0) + max(0, cost - held)
        self.emit(
            CostSettled(
                **envelope(self.now),
                reservation_id=rid,
                attempt=attempt,
                model="m",
                provider="p",
                usage=TokenUsage(),
                cost_micros=cost,
                final=final,
            )
        )
        if final:
            self.closed.add(rid)

    @rule(advance=st.integers(0, 2 * HOUR))
    def sweep(self, advance: int) -> None:
        self.now += advance
        for rid in self.book.expired(self.now):
            state = self.book.reservation(rid)
            assert state is not None
            assert state.expires_at_ns <= self.now
            assert not state.expired
            self.emit(
                BudgetReservationExpired(
                    **envelope(self.now), reservation_id=rid, counted_micros=state.held_micros
                )
            )
        assert self.book.expired(self.now) == []

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.log))
        self.emit(event)

    @rule(
        data=st.data(),
        by_name=st.booleans(),
        limit=st.integers(0, 1_500),
        skew=st.integers(-HOUR, HOUR),
    )
    def change_limit(self, data: st.DataObject, by_name: bool, limit: int, skew: int) -> None:
        keys = [s.key for s in self.book.snapshot().budgets]
        if by_name or not keys:
            target = data.draw(st.sampled_from([s.name for s in SPECS]))
        else:
            target = data.draw(st.sampled_from(keys))
        self.emit(limit_changed(target, limit, ts_ns=self.now + skew))
        for key in keys:  # an excused step: usage may now stand above the new limit
            limit_now = self.book.state(key).limit_micros
            assert limit_now is not None
            self.slack[key] = max(self.slack.get(key, 0), self.usage(key) - limit_now)

    @invariant()
    def within_limits_except_overruns_and_lowered_limits(self) -> None:
        for state in self.book.snapshot().budgets:
            assert state.limit_micros is not None
            usage = state.spent_micros + state.reserved_micros
            slack = self.slack.get(state.key, 0)
            assert usage <= state.limit_micros + slack, state
            # Slack only shrinks back as usage falls: no later step may use it up again.
            self.slack[state.key] = min(slack, max(0, usage - state.limit_micros))

    @invariant()
    def nothing_counted_twice(self) -> None:
        expected: dict[str, tuple[int, int]] = {}
        for rid, keys in self.keys_of.items():
            state = self.book.reservation(rid)
            assert (state is None) == (rid in self.closed)
            held = 0 if state is None else state.held_micros
            assert held >= 0
            assert self.book.held(rid) == held  # the cheap read agrees with the full state
            live = state is not None and not state.expired
            for key in keys:
                reserved, used = expected.get(key, (0, 0))
                expected[key] = (reserved + (held if live else 0), used + self.counted[rid] + held)
        assert set(self.book.unsettled()) == {
            r for r in self.keys_of if (s := self.book.reservation(r)) and not s.expired
        }
        for budget in self.book.snapshot().budgets:
            assert budget.reserved_micros >= 0
            reserved, used = expected.get(budget.key, (0, 0))
            assert budget.reserved_micros == reserved
            assert budget.spent_micros + budget.reserved_micros == used

    @invariant()
    def replay_gives_the_live_state(self) -> None:
        rebuilt = BudgetBook(SPECS)
        for event in self.log:
            rebuilt.apply(event)
            rebuilt.apply(event)  # every event twice: the second changes nothing
        assert encoded(rebuilt) == encoded(self.book)


BudgetMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBudgetMachine = BudgetMachine.TestCase
