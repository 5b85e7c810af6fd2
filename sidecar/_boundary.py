"""The cost boundary: reserve before every paid call, refuse at the limit, settle the actual cost.

Invariant (design, "The budget invariant"): for every budget key, ``spent + reserved <= limit``.
It is enforced here, in one place: :meth:`CostBoundary.hold` prices a reservation or top-up and
hands it to the ledger (``_ledger``), which checks and applies it to the book with nothing in
between: in one process by doing both with no await between them (the executor then makes the
reservation durable with ``append`` before it calls the provider), across the sidecars sharing a
JetStream stream by a conditional append that fails if another sidecar's hold came first. After
a crash the book is rebuilt from the log, and a reservation that was never settled expires by
policy, counted as spent at what it held.

A request has one reservation, with the request's id as its id. Each attempt is settled once,
by one ``CostSettled``; the last one is final and releases what is left of the hold. The settlement
of an attempt is logged when the next attempt starts (it may free hold for it) or when the request
ends (then it is final), so there is exactly one settlement per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from adapters import Usage
from events import (
    BudgetOverrun,
    BudgetRefused,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    Event,
    EventStore,
    TokenUsage,
)
from projections import BudgetBook, BudgetSpec

from ._config import Config
from ._errors import TollgateError
from ._ledger import Ledger, expiry_event_id, open_ledger
from ._prices import PriceTable

__all__ = ["BudgetExceededError", "CostBoundary", "Tab", "budget_specs", "token_usage"]

Envelope = Callable[[], dict[str, Any]]


def budget_specs(config: Config) -> list[BudgetSpec]:
    return [
        BudgetSpec(
            name=name,
            scope=budget.scope,
            period=budget.period,
            limit_micros=_micros(budget.limit_usd),
            overrides={value: _micros(limit) for value, limit in budget.overrides.items()},
        )
        for name, budget in config.budgets.items()
    ]


def _micros(usd: float) -> int:
    return round(usd * 1_000_000)


class _Unsettled(msgspec.Struct, frozen=True):
    """An attempt's cost, known but not yet logged."""

    attempt: int
    model: str
    provider: str
    usage: TokenUsage
    cost_micros: int


class Tab:
    """One request's account with the boundary."""

    __slots__ = ("cost_micros", "keys", "reservation_id", "reserved", "unsettled")

    def __init__(self, reservation_id: str, keys: list[str]) -> None:
        self.reservation_id = reservation_id
        self.keys = keys
        # Whether a BudgetReserved was made (only when some budget applies).
        self.reserved = False
        # The last attempt's settlement, logged once it is known whether it is the final one.
        self.unsettled: _Unsettled | None = None
        # What the request's attempts cost, in micro-dollars.
        self.cost_micros = 0


class CostBoundary:
    def __init__(self, config: Config, prices: PriceTable, ledger: Ledger) -> None:
        self._prices = prices
        self._ledger = ledger
        self._book = ledger.book
        self._enforcing = bool(config.budgets)
        self._grace_s = config.server.reservation_grace_s

    @classmethod
    async def open(cls, config: Config, store: EventStore) -> CostBoundary:
        """Price every model (a model without a price fails start-up) and rebuild the budget
        book from the log: the whole log for one sidecar, the budget events of every sidecar
        on a shared JetStream stream (``_ledger``)."""
        prices = PriceTable.from_config(config)
        ledger = open_ledger(BudgetBook(budget_specs(config)), store)
        await ledger.rebuild()
        return cls(config, prices, ledger)

    @property
    def book(self) -> BudgetBook:
        return self._book

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    async def run(self) -> None:
        """Keep the book current while the sidecar serves (other sidecars' holds and
        releases on a shared stream); returns at once for a single sidecar."""
        await self._ledger.run()

    def open_tab(self, *, request_id: str, tenant: str, route: str, model_class: str) -> Tab:
        keys = self._book.keys(
            tenant=tenant, route=route, model_class=model_class, ts_ns=time.time_ns()
        )
        return Tab(request_id, keys)

    async def hold(
        self,
        tab: Tab,
        envelope: Envelope,
        pending: list[Event],
        *,
        model: str,
        provider: str,
        input_tokens: int,
        max_tokens: int,
        deadline_s: float,
    ) -> tuple[list[Event], bool]:
        """Before an attempt: hold its worst-case price. Returns the events to log after
        ``pending`` and whether they must be durable before the call (a reservation or a
        top-up the caller logs).

        ``pending`` are the request's events not logged yet; the last attempt's settlement is
        added to them. A ledger that logs holds itself (several sidecars) logs them first and
        empties the list. Raises ``budget_exceeded`` when a budget can't take it; no provider
        may be called then (its events are the refusal, to log after ``pending``).
        """
        pending += self._flush(tab, envelope, final=False)
        if not self._enforcing or not tab.keys:
            return [], False
        worst = self._prices.worst_case_micros(model, input_tokens, max_tokens)
        change: Event
        if not tab.reserved:
            need = worst
            change = BudgetReserved(
                **envelope(),
                reservation_id=tab.reservation_id,
                budgets=tab.keys,
                amount_micros=need,
                expires_at_ns=time.time_ns() + int((deadline_s + self._grace_s) * 1e9),
                model=model,
                provider=provider,
            )
        else:
            need = worst - self._book.held(tab.reservation_id)
            if need <= 0:
                return [], False
            change = BudgetToppedUp(
                **envelope(),
                reservation_id=tab.reservation_id,
                amount_micros=need,
                model=model,
                provider=provider,
            )
        # The invariant's one enforcement point: the ledger checks and applies (and, on a shared
        # stream, appends conditionally) so that no other hold can come in between.
        refusal = await self._ledger.hold(tab.keys, need, change, pending)
        if refusal is not None:
            refused = BudgetRefused(**envelope(), **msgspec.structs.asdict(refusal))
            raise BudgetExceededError([refused], refusal.budget, refusal.limit_micros)
        tab.reserved = True
        if self._ledger.logs_holds:
            return [], False
        return [change], True

    def settle(
        self,
        tab: Tab,
        envelope: Envelope,
        *,
        attempt: int,
        model: str,
        provider: str,
        usage: Usage | None,
        held_on_failure: bool,
    ) -> int:
        """After an attempt: what it cost. The settlement is logged by the next :meth:`hold`
        or by :meth:`close`.

        ``usage`` is what the provider reported; without it the attempt cost nothing, unless it
        failed after the provider began answering (``held_on_failure``): its bill is unknown,
        so it is counted at what was held for it (the conservative choice).
        """
        if usage is not None:
            cost = self._prices.cost_micros(model, usage)
        elif held_on_failure and tab.reserved:
            cost = self._book.held(tab.reservation_id)
        else:
            cost = 0
        tab.cost_micros += cost
        tab.unsettled = _Unsettled(attempt, model, provider, token_usage(usage or Usage()), cost)
        return cost

    def close(self, tab: Tab, envelope: Envelope) -> list[Event]:
        """The request is over: log the last settlement as final, releasing the hold."""
        events = self._flush(tab, envelope, final=True)
        if tab.reserved and not events:
            # Nothing left to settle (e.g. a top-up was refused): release with no cost.
            release = CostSettled(
                **envelope(),
                reservation_id=tab.reservation_id,
                attempt=0,
                model="",
                provider="",
                usage=TokenUsage(),
                cost_micros=0,
                final=True,
            )
            self._book.apply(release)
            events.append(release)
        return events

    def expire_due(self, now_ns: int, config_hash: str) -> list[Event]:
        """Expire reservations past their time (the sweeper's step); each counts as spent at
        what it held. A reservation's id is its request's id. On a shared stream this covers
        every sidecar's reservations, a dead sidecar's included."""
        due = [(rid, self._book.held(rid)) for rid in self._book.expired(now_ns)]

        def expiry(reservation_id: str, held: int) -> Event:
            return BudgetReservationExpired(
                event_id=expiry_event_id(reservation_id),
                ts_ns=now_ns,
                request_id=reservation_id,
                tenant="",
                task="",
                config_hash=config_hash,
                reservation_id=reservation_id,
                counted_micros=held,
            )

        return self._ledger.expire(due, expiry) if due else []

    def _flush(self, tab: Tab, envelope: Envelope, *, final: bool) -> list[Event]:
        unsettled = tab.unsettled
        if unsettled is None:
            return []
        tab.unsettled = None
        # Stamped now, when it is logged, so that the log's times follow its order.
        settlement = CostSettled(
            **envelope(),
            reservation_id=tab.reservation_id,
            attempt=unsettled.attempt,
            model=unsettled.model,
            provider=unsettled.provider,
            usage=unsettled.usage,
            cost_micros=unsettled.cost_micros,
            final=final,
        )
        events: list[Event] = []
        held = self._book.held(tab.reservation_id) if tab.reserved else 0
        if tab.reserved and settlement.cost_micros > held:
            # The provider billed past the reserved worst case: the one way over a limit.
            events.append(
                BudgetOverrun(
                    **envelope(),
                    reservation_id=tab.reservation_id,
                    reserved_micros=held,
                    actual_micros=settlement.cost_micros,
                )
            )
        self._book.apply(settlement)
        return [settlement, *events]


class BudgetExceededError(TollgateError):
    def __init__(self, events: list[Event], budget: str, limit_micros: int) -> None:
        super().__init__(
            "budget_exceeded",
            f"the budget {budget} (limit ${limit_micros / 1e6:.6f}) can't take this request",
            status=429,
            code="budget_exceeded",
            details={"budget": budget, "limit_usd": limit_micros / 1e6},
        )
        self.events = events


def token_usage(usage: Usage) -> TokenUsage:
    return TokenUsage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
