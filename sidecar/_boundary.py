"""The cost boundary: reserve before every paid call, refuse at the limit, settle the actual cost.

Invariant (design, "The budget invariant"): for every budget key, ``spent + reserved <= limit``.
It is enforced here, in one place: :meth:`CostBoundary.hold` checks and applies a reservation or
top-up to the book in one synchronous step (no await in between, so concurrent requests on the
event loop can't both take the last of a budget), and the executor makes the reservation durable
(``append``) before it calls the provider. After a crash the book is rebuilt from the log, and a
reservation that was never settled expires by policy, counted as spent at what it held.

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
    new_id,
)
from projections import BudgetBook, BudgetSpec

from ._config import Config
from ._errors import TollgateError
from ._prices import PriceTable

__all__ = ["BudgetExceededError", "CostBoundary", "Tab", "budget_specs", "token_usage"]

_REPLAY_PAGE = 5000

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
    def __init__(self, config: Config, prices: PriceTable, book: BudgetBook) -> None:
        self._prices = prices
        self._book = book
        self._enforcing = bool(config.budgets)
        self._grace_s = config.server.reservation_grace_s

    @classmethod
    async def open(cls, config: Config, store: EventStore) -> CostBoundary:
        """Price every model (a model without a price fails start-up) and rebuild the budget
        book from the whole log."""
        boundary = cls(config, PriceTable.from_config(config), BudgetBook(budget_specs(config)))
        after = 0
        while page := await store.read(after, _REPLAY_PAGE):
            for stored in page:
                boundary._book.apply(stored.event)
            after = page[-1].seq
        return boundary

    @property
    def book(self) -> BudgetBook:
        return self._book

    def open_tab(self, *, request_id: str, tenant: str, route: str, model_class: str) -> Tab:
        keys = self._book.keys(
            tenant=tenant, route=route, model_class=model_class, ts_ns=time.time_ns()
        )
        return Tab(request_id, keys)

    def hold(
        self,
        tab: Tab,
        envelope: Envelope,
        *,
        model: str,
        provider: str,
        input_tokens: int,
        max_tokens: int,
        deadline_s: float,
    ) -> tuple[list[Event], bool]:
        """Before an attempt: hold its worst-case price. Returns the events to log and whether
        one of them must be durable before the call (a reservation or a top-up).

        Raises ``budget_exceeded`` when a budget can't take it; no provider may be called then.
        """
        events: list[Event] = self._flush(tab, envelope, final=False)
        if not self._enforcing or not tab.keys:
            return events, False
        worst = self._prices.worst_case_micros(model, input_tokens, max_tokens)
        if not tab.reserved:
            need = worst
        else:
            state = self._book.reservation(tab.reservation_id)
            need = worst - (state.held_micros if state is not None else 0)
            if need <= 0:
                return events, False
        refusal = self._book.check(tab.keys, need)
        if refusal is not None:
            events.append(BudgetRefused(**envelope(), **msgspec.structs.asdict(refusal)))
            raise BudgetExceededError(events, refusal.budget, refusal.limit_micros)
        change: Event
        if not tab.reserved:
            change = BudgetReserved(
                **envelope(),
                reservation_id=tab.reservation_id,
                budgets=tab.keys,
                amount_micros=need,
                expires_at_ns=time.time_ns() + int((deadline_s + self._grace_s) * 1e9),
                model=model,
                provider=provider,
            )
            tab.reserved = True
        else:
            change = BudgetToppedUp(
                **envelope(),
                reservation_id=tab.reservation_id,
                amount_micros=need,
                model=model,
                provider=provider,
            )
        # Checked and applied with no await in between: the invariant's one enforcement point.
        self._book.apply(change)
        events.append(change)
        return events, True

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
            state = self._book.reservation(tab.reservation_id)
            cost = state.held_micros if state is not None else 0
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
        what it held. A reservation's id is its request's id."""
        events: list[Event] = []
        for reservation_id in self._book.expired(now_ns):
            state = self._book.reservation(reservation_id)
            held = state.held_micros if state is not None else 0
            event = BudgetReservationExpired(
                event_id=new_id(),
                ts_ns=now_ns,
                request_id=reservation_id,
                tenant="",
                task="",
                config_hash=config_hash,
                reservation_id=reservation_id,
                counted_micros=held,
            )
            self._book.apply(event)
            events.append(event)
        return events

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
        state = self._book.reservation(tab.reservation_id) if tab.reserved else None
        if state is not None and settlement.cost_micros > state.held_micros:
            # The provider billed past the reserved worst case: the one way over a limit.
            events.append(
                BudgetOverrun(
                    **envelope(),
                    reservation_id=tab.reservation_id,
                    reserved_micros=state.held_micros,
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
