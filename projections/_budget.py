"""Budget state: a pure fold of the budget events, and the figures the cost boundary decides on.

A budget key is ``<budget name>/<scope value>/<period>``: ``global/*/2026-11-22`` (a UTC day),
``tenants/acme/2026-11`` (a UTC month), ``route-code/code/total``. Budget names never contain
``/`` and periods never do, so a scope value may.

The invariant (design, "The budget invariant"): for every key, ``spent + reserved <= limit``.
The book keeps it by construction, provided the cost boundary only appends a ``BudgetReserved`` or
``BudgetToppedUp`` after ``check`` said it fits, with no await between ``check`` and ``apply``.
``apply`` itself never refuses: the log is the truth, and a fold records facts. The only ways past
a limit are a settlement above the hold (an overrun, which the boundary reports as
``BudgetOverrun``) and a limit lowered below current usage.

Semantics decided here:

* Idempotency without a set of every event id ever seen: a reservation is opened once (by
  reservation id), each attempt is settled once (by reservation id + attempt), a top-up counts
  once (by its event id, remembered only while the reservation is live), an expiry happens once
  (by reservation id), and a limit change applies only if it is later, by ``(ts_ns, event_id)``,
  than the change in force for the same target, so a redelivered old change never reverts a newer
  one. Applying any event twice changes nothing.
* A final settlement for an attempt that was already settled still closes the reservation (it is a
  release), but its cost is not counted again.
* Expiry counts ``counted_micros`` (what the reservation still held) as spent. The hold is not
  forgotten: it stays with the expired reservation as a provisional charge that lives in ``spent``
  instead of ``reserved``. A late ``CostSettled`` ("settled later if the attempt's outcome is
  found") settles against it exactly as against a live hold: the cost it covers is already in
  spent, a cost above it is added (an overrun stays visible), and a final settlement takes what is
  left of the provisional charge back out of spent. So nothing is counted twice, and nothing
  billed is lost because a sweeper ran first.
* A reservation closed by a final settlement ignores every later event for it.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal, TypeAlias

import msgspec

from events import (
    BudgetLimitChanged,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    Event,
)

__all__ = [
    "BookState",
    "BudgetBook",
    "BudgetSnapshot",
    "BudgetSpec",
    "BudgetState",
    "Period",
    "Refusal",
    "ReservationState",
    "Scope",
    "budget_keys",
]

Scope: TypeAlias = Literal["global", "tenant", "route", "class"]
Period: TypeAlias = Literal["day", "month", "total"]
Micros: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]

_NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = datetime.date(1970, 1, 1)


class BudgetSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One configured budget: a limit per scope value (one for ``global``) and per period."""

    name: str
    scope: Scope
    period: Period
    limit_micros: Micros
    # Limits for particular scope values (a tenant, a route, a class) instead of ``limit_micros``.
    overrides: dict[str, Micros] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"budget name {self.name!r} must be non-empty and contain no '/'")


def budget_keys(
    specs: Iterable[BudgetSpec], *, tenant: str, route: str, model_class: str, ts_ns: int
) -> list[str]:
    """The keys of the budgets that apply to a request at wall-clock time ``ts_ns`` (UTC periods),
    in the order of ``specs``."""
    day, month = _periods(ts_ns // _NS_PER_DAY)
    values = {"global": "*", "tenant": tenant, "route": route, "class": model_class}
    periods = {"day": day, "month": month, "total": "total"}
    return [f"{s.name}/{values[s.scope]}/{periods[s.period]}" for s in specs]


@functools.lru_cache(maxsize=8)
def _periods(day_index: int) -> tuple[str, str]:
    day = (_EPOCH + datetime.timedelta(days=day_index)).isoformat()
    return day, day[:7]


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why an amount does not fit: the figures of ``BudgetRefused``, for the first refusing key."""

    budget: str
    limit_micros: int
    spent_micros: int
    reserved_micros: int
    needed_micros: int


class BudgetState(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    # None for a key whose budget the configuration does not name (an old budget in the log).
    limit_micros: int | None
    reserved_micros: int
    spent_micros: int
    # ``limit - spent - reserved``; negative after an overrun or a lowered limit.
    remaining_micros: int | None


class ReservationState(msgspec.Struct, frozen=True, kw_only=True):
    reservation_id: str
    budgets: list[str]
    # Still held: in ``reserved`` while live, in ``spent`` (provisionally) once expired.
    held_micros: int
    settled_micros: int
    expires_at_ns: int
    expired: bool
    attempts: list[int]


class BudgetSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every key's figures and every live reservation, sorted: equal states encode to equal bytes.

    Expired and closed reservations are left out (their effect is in the keys' figures), so
    ``forget`` never changes a snapshot.
    """

    budgets: list[BudgetState]
    reservations: list[ReservationState]


class _ReservationRecord(msgspec.Struct, frozen=True, array_like=True):
    rid: str
    budgets: list[str]
    held: int
    settled: int
    expires_at_ns: int
    expired_ns: int | None
    attempts: list[int]
    top_ups: list[str]


class BookState(msgspec.Struct, frozen=True, kw_only=True):
    """A budget book's whole state, in its own order (a checkpoint, not a comparison: compare
    ``snapshot``)."""

    # (key, reserved, spent): limits come from the config in force when it is restored.
    budgets: list[tuple[str, int, int]]
    name_limits: list[tuple[str, int, str, int]]
    key_limits: list[tuple[str, int, str, int]]
    live: list[_ReservationRecord]
    expired: list[_ReservationRecord]
    closed: list[tuple[str, int]]


class _Budget:
    __slots__ = ("key", "limit", "reserved", "spent")

    def __init__(self, key: str, limit: int | None) -> None:
        self.key = key
        self.limit = limit
        self.reserved = 0
        self.spent = 0

    def state(self) -> BudgetState:
        remaining = None if self.limit is None else self.limit - self.spent - self.reserved
        return BudgetState(
            key=self.key,
            limit_micros=self.limit,
            reserved_micros=self.reserved,
            spent_micros=self.spent,
            remaining_micros=remaining,
        )


class _Reservation:
    __slots__ = (
        "attempts",
        "budgets",
        "expired_ns",
        "expires_at_ns",
        "held",
        "rid",
        "settled",
        "top_ups",
    )

    def __init__(self, rid: str, budgets: list[_Budget], held: int, expires_at_ns: int) -> None:
        self.rid = rid
        self.budgets = budgets
        self.held = held
        self.settled = 0
        self.expires_at_ns = expires_at_ns
        # When the expiry was applied (its event's ts_ns); None while the hold is live.
        self.expired_ns: int | None = None
        self.attempts: set[int] = set()
        self.top_ups: set[str] = set()

    def state(self) -> ReservationState:
        return ReservationState(
            reservation_id=self.rid,
            budgets=[b.key for b in self.budgets],
            held_micros=self.held,
            settled_micros=self.settled,
            expires_at_ns=self.expires_at_ns,
            expired=self.expired_ns is not None,
            attempts=sorted(self.attempts),
        )


# A limit change's place in time: later wins; equal means the same event applied again.
_Stamp: TypeAlias = tuple[int, str]


class BudgetBook:
    """Budget state folded from the log. ``check`` decides without mutating; ``apply`` folds.

    Every operation costs O(keys of the reservation); only ``expired`` (the sweeper), ``snapshot``
    and limit changes by name look at more.
    """

    def __init__(self, specs: Iterable[BudgetSpec]) -> None:
        self._specs: dict[str, BudgetSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"budget {spec.name!r} is defined twice")
            self._specs[spec.name] = spec
        self._budgets: dict[str, _Budget] = {}
        self._by_name: dict[str, list[_Budget]] = {}
        self._name_limits: dict[str, tuple[_Stamp, int]] = {}
        self._key_limits: dict[str, tuple[_Stamp, int]] = {}
        self._live: dict[str, _Reservation] = {}
        # Expired but not finally settled, in expiry order: a late settlement may still come.
        self._expired: dict[str, _Reservation] = {}
        # Closed by a final settlement: reservation id -> ts_ns of the closing event, in order.
        self._closed: dict[str, int] = {}

    # -- decisions (no mutation) ---------------------------------------------------------------

    def keys(self, *, tenant: str, route: str, model_class: str, ts_ns: int) -> list[str]:
        """``budget_keys`` with this book's specs."""
        return budget_keys(
            self._specs.values(), tenant=tenant, route=route, model_class=model_class, ts_ns=ts_ns
        )

    def budget_names(self) -> frozenset[str]:
        """The configured budgets' names."""
        return frozenset(self._specs)

    def check(
        self,
        keys: Sequence[str],
        amount_micros: int,
        pending: Mapping[str, int] | None = None,
    ) -> Refusal | None:
        """The first key that ``amount_micros`` more would take past its limit, or None if it fits.

        Enforces the invariant: a hold is only added when ``spent + reserved + amount <= limit``.
        ``pending``: holds decided but not applied yet (per key), counted as reserved, so that
        several holds can be decided in a row before any of them is applied (a batch of holds
        appended at once, all or nothing).
        """
        for key in keys:
            budget = self._budgets.get(key)
            if budget is None:
                limit, spent, reserved = self._limit_for(key), 0, 0
            else:
                limit, spent, reserved = budget.limit, budget.spent, budget.reserved
            if pending:
                reserved += pending.get(key, 0)
            if limit is not None and spent + reserved + amount_micros > limit:
                return Refusal(
                    budget=key,
                    limit_micros=limit,
                    spent_micros=spent,
                    reserved_micros=reserved,
                    needed_micros=amount_micros,
                )
        return None

    def state(self, key: str) -> BudgetState:
        budget = self._budgets.get(key)
        return (budget or _Budget(key, self._limit_for(key))).state()

    def reservation(self, reservation_id: str) -> ReservationState | None:
        """A live or expired (not finally settled) reservation; None once closed or unknown."""
        r = self._live.get(reservation_id) or self._expired.get(reservation_id)
        return None if r is None else r.state()

    def held(self, reservation_id: str) -> int:
        """What a live or expired reservation still holds (``reservation(id).held_micros``,
        without building its state); 0 once closed or unknown."""
        r = self._live.get(reservation_id) or self._expired.get(reservation_id)
        return 0 if r is None else r.held

    def expired(self, now_ns: int) -> list[str]:
        """Live reservations whose ``expires_at_ns`` has passed: what the sweeper should expire.

        Ordered by expiry, then id. The sweeper appends ``BudgetReservationExpired`` with
        ``counted_micros = held(id)``.
        """
        due = [r for r in self._live.values() if r.expires_at_ns <= now_ns]
        return [r.rid for r in sorted(due, key=lambda r: (r.expires_at_ns, r.rid))]

    def unsettled(self) -> list[str]:
        """Reservations still holding budget (neither finally settled nor expired), sorted."""
        return sorted(self._live)

    def snapshot(self) -> BudgetSnapshot:
        return BudgetSnapshot(
            budgets=[self._budgets[k].state() for k in sorted(self._budgets)],
            reservations=[self._live[r].state() for r in sorted(self._live)],
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def book_state(self) -> BookState:
        """Everything the fold knows (unlike ``snapshot``, also what makes it idempotent), so
        ``from_book_state`` continues exactly where this book is."""

        def reservation(r: _Reservation) -> _ReservationRecord:
            return _ReservationRecord(
                r.rid,
                [b.key for b in r.budgets],
                r.held,
                r.settled,
                r.expires_at_ns,
                r.expired_ns,
                sorted(r.attempts),
                sorted(r.top_ups),
            )

        return BookState(
            budgets=[(b.key, b.reserved, b.spent) for b in self._budgets.values()],
            name_limits=[(k, *stamp, limit) for k, (stamp, limit) in self._name_limits.items()],
            key_limits=[(k, *stamp, limit) for k, (stamp, limit) in self._key_limits.items()],
            live=[reservation(r) for r in self._live.values()],
            expired=[reservation(r) for r in self._expired.values()],
            closed=list(self._closed.items()),
        )

    @classmethod
    def from_book_state(cls, specs: Iterable[BudgetSpec], state: BookState) -> BudgetBook:
        book = cls(specs)
        book._name_limits = {k: ((ts, eid), limit) for k, ts, eid, limit in state.name_limits}
        book._key_limits = {k: ((ts, eid), limit) for k, ts, eid, limit in state.key_limits}
        for key, reserved, spent in state.budgets:
            # The limit comes from today's specs (and the limit changes in the log), not from
            # the checkpoint: the config may have changed since it was written.
            budget = book._budget(key)
            budget.reserved, budget.spent = reserved, spent
        for records, table in ((state.live, book._live), (state.expired, book._expired)):
            for rec in records:
                r = _Reservation(
                    rec.rid, [book._budget(k) for k in rec.budgets], rec.held, rec.expires_at_ns
                )
                r.settled, r.expired_ns = rec.settled, rec.expired_ns
                r.attempts, r.top_ups = set(rec.attempts), set(rec.top_ups)
                table[r.rid] = r
        book._closed = dict(state.closed)
        return book

    # -- the fold ------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event. Events that are not about budget state (including the audit facts
        ``BudgetRefused`` and ``BudgetOverrun``) change nothing."""
        match event:
            case CostSettled():
                self._settle(event)
            case BudgetReserved():
                self._reserve(event)
            case BudgetToppedUp():
                self._top_up(event)
            case BudgetReservationExpired():
                self._expire(event)
            case BudgetLimitChanged():
                self._change_limit(event)
            case _:
                pass

    def forget(self, before_ns: int) -> None:
        """Drop the memory of reservations closed or expired before ``before_ns`` (event time).

        Bounds memory on a long-running sidecar; the snapshot does not change. A forgotten
        reservation ignores late settlements, and a copy of its ``BudgetReserved`` would open it
        again, so the horizon must lie beyond any redelivery (the store's dedup window) and any
        late settlement worth counting.
        """
        while self._closed:
            rid, closed_ns = next(iter(self._closed.items()))
            if closed_ns >= before_ns:
                break
            del self._closed[rid]
        while self._expired:
            r = next(iter(self._expired.values()))
            if r.expired_ns is None or r.expired_ns >= before_ns:
                break
            del self._expired[r.rid]

    def _reserve(self, e: BudgetReserved) -> None:
        rid = e.reservation_id
        if rid in self._live or rid in self._expired or rid in self._closed:
            return  # opened once per reservation id
        # A key listed twice is held once.
        budgets = [self._budget(key) for key in dict.fromkeys(e.budgets)]
        for b in budgets:
            b.reserved += e.amount_micros  # fits: the boundary checked spent + reserved + amount
        self._live[rid] = _Reservation(rid, budgets, e.amount_micros, e.expires_at_ns)

    def _top_up(self, e: BudgetToppedUp) -> None:
        r = self._live.get(e.reservation_id) or self._expired.get(e.reservation_id)
        if r is None or e.event_id in r.top_ups:
            return
        r.top_ups.add(e.event_id)
        r.held += e.amount_micros  # fits: the boundary checked it like a reservation
        for b in r.budgets:
            if r.expired_ns is None:
                b.reserved += e.amount_micros
            else:
                b.spent += e.amount_micros  # an expired hold is counted as spent

    def _settle(self, e: CostSettled) -> None:
        r = self._live.get(e.reservation_id) or self._expired.get(e.reservation_id)
        if r is None:
            return  # closed (or unknown): nothing is held to settle against
        cost = 0 if e.attempt in r.attempts else e.cost_micros  # each attempt settles once
        r.attempts.add(e.attempt)
        r.settled += cost
        covered = min(cost, r.held)  # paid from the hold; the rest (an overrun) passes the limit
        released = r.held - covered if e.final else 0
        r.held -= covered + released
        live = r.expired_ns is None
        for b in r.budgets:
            if live:
                b.reserved -= covered + released
                b.spent += cost
            else:
                # The expired hold is already in spent: add only the overrun, take back the rest.
                b.spent += cost - covered - released
        if e.final:
            del (self._live if live else self._expired)[r.rid]
            self._closed[r.rid] = e.ts_ns

    def _expire(self, e: BudgetReservationExpired) -> None:
        r = self._live.pop(e.reservation_id, None)
        if r is None:
            return  # already expired or closed (or unknown): expires once
        for b in r.budgets:
            b.reserved -= r.held
            b.spent += e.counted_micros  # == r.held when the sweeper read it from this book
        r.held = e.counted_micros
        r.expired_ns = e.ts_ns
        self._expired[r.rid] = r

    def _change_limit(self, e: BudgetLimitChanged) -> None:
        stamp = (e.ts_ns, e.event_id)
        by_key = "/" in e.budget
        table = self._key_limits if by_key else self._name_limits
        current = table.get(e.budget)
        if current is not None and current[0] >= stamp:
            return  # the same change again, or an older one: the latest stays in force
        table[e.budget] = (stamp, e.limit_micros)
        if by_key:
            budget = self._budgets.get(e.budget)
            targets = [] if budget is None else [budget]
        else:
            targets = self._by_name.get(e.budget, [])
        for b in targets:
            b.limit = self._limit_for(b.key)

    def _budget(self, key: str) -> _Budget:
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget(key, self._limit_for(key))
            self._by_name.setdefault(_name(key), []).append(budget)
        return budget

    def _limit_for(self, key: str) -> int | None:
        """The latest limit change for the key or its name, else the spec's override for the
        scope value, else the spec's limit; None for a budget the specs do not name."""
        name = _name(key)
        pinned = self._key_limits.get(key)
        by_name = self._name_limits.get(name)
        if by_name is not None and (pinned is None or by_name[0] > pinned[0]):
            pinned = by_name
        if pinned is not None:
            return pinned[1]
        spec = self._specs.get(name)
        if spec is None:
            return None
        scope_value = key[len(name) + 1 : key.rfind("/")]
        return spec.overrides.get(scope_value, spec.limit_micros)


def _name(key: str) -> str:
    return key.partition("/")[0]
