"""Budget ledgers: where a hold is decided against the budget book and made durable.

The cost boundary prices a hold; a ledger decides it and keeps the book current. Two kinds:

* :class:`LocalLedger` (the SQLite store, one sidecar): the book in this process is the whole
  truth. A hold is checked and applied with no await in between, then logged durably by the
  executor with the request's other events, in one commit.
* :class:`SharedLedger` (the JetStream store, several sidecars on one stream): every sidecar
  follows the stream's budget subjects, so its book sees every sidecar's holds and releases. A
  hold is decided on the book and appended *conditionally*: only if the newest hold in the
  stream is still the newest hold the book has applied (``append_holds(after=...)``, i.e.
  ``Nats-Expected-Last-Subject-Sequence`` on the hold subject). If another sidecar's hold came
  first, the ledger reads the holds it missed, applies them and decides again. So every hold
  is decided on a book that contains every hold before it: ``spent + reserved <= limit`` holds
  across sidecars exactly as it does in one process.

Invariants of the shared ledger:

* ``hold_seq`` is the seq of a hold (or 0) such that every hold up to it is in the book. Own
  holds advance it when acknowledged (the condition guarantees nothing came between); the
  follower and the catch-up advance it hold by hold, in stream order.
* Releases (settlements, expiries) are not part of the condition: they only lower what is held,
  so a book that has not seen one yet decides conservatively. Each sidecar applies its own at
  once and everyone else's as the follower delivers them; the fold is idempotent, so applying an
  event twice (locally, then from the stream) changes nothing.
* Holds are decided in rounds: the first request to find nobody deciding takes every hold
  waiting, decides them in order (each counting the ones before it,
  ``BudgetBook.check(pending=...)``) and appends the admitted ones as one atomic, conditional
  batch; requests that arrive meanwhile form the next round. A refusal is final once the round's
  admitted holds are stored (it may have counted them); after a conflict the whole round is
  decided again. A book missing other sidecars' holds counts less than the truth, so what does
  not fit on it does not fit.
* Expiries use an event id derived from the reservation id, so sweepers of several sidecars
  (including one sweeping for a sidecar that died) store one expiry: the stream deduplicates
  them, and the fold expires a reservation once anyway. The shared ledger does not apply its own
  expiries ahead of the stream, so every book applies the one that was stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Final, Protocol

import anyio

from events import (
    BudgetReservationExpired,
    Event,
    EventStore,
    HoldConflictError,
    JetStreamEventStore,
    StoredEvent,
    StoreError,
)
from projections import BudgetBook, Refusal

__all__ = ["Ledger", "LocalLedger", "SharedLedger", "expiry_event_id", "open_ledger"]

_REPLAY_PAGE: Final = 5000
# A shared expiry the stream has not delivered back yet is not sent again before this.
_EXPIRY_RESEND_NS: Final = 10 * 1_000_000_000
# How long a catch-up may wait for a hold the server reported to become readable.
_CATCH_UP_S: Final = 10.0
_CATCH_UP_PAGE: Final = 1000


def expiry_event_id(reservation_id: str) -> str:
    """The event id of a reservation's expiry: the same in every sidecar, so it is stored once."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"tollgate/expiry/{reservation_id}"))


class Ledger(Protocol):
    """Decides budget holds and keeps the budget book current (see the module doc)."""

    @property
    def book(self) -> BudgetBook: ...

    async def rebuild(self) -> None:
        """Fold the log into the book (before serving)."""
        ...

    async def run(self) -> None:
        """Keep the book current while the sidecar serves (returns when there is nothing to do)."""
        ...

    async def hold(
        self, keys: list[str], amount: int, change: Event, before: list[Event]
    ) -> Refusal | None:
        """Decide ``change`` (a reservation or top-up of ``amount`` on ``keys``).

        None: it holds, and the book has it. Else the refusal; nothing was held. ``before`` are
        the request's events that must be logged ahead of the hold: a ledger that logs holds
        itself logs them first and empties the list.
        """
        ...

    @property
    def logs_holds(self) -> bool:
        """Whether :meth:`hold` made the hold durable itself (else the caller must)."""
        ...

    def expire(self, due: list[tuple[str, int]], make: Callable[[str, int], Event]) -> list[Event]:
        """Expiries to log for ``due`` (reservation id, held) made by ``make``."""
        ...


class LocalLedger:
    """One process, one book: check and apply with no await in between (see the module doc)."""

    logs_holds = False

    def __init__(self, book: BudgetBook, store: EventStore) -> None:
        self._book = book
        self._store = store

    @property
    def book(self) -> BudgetBook:
        return self._book

    async def rebuild(self) -> None:
        after = 0
        while page := await self._store.read(after, _REPLAY_PAGE):
            for stored in page:
                self._book.apply(stored.event)
            after = page[-1].seq

    async def run(self) -> None:
        return

    async def hold(
        self, keys: list[str], amount: int, change: Event, before: list[Event]
    ) -> Refusal | None:
        # No await between check and apply: concurrent requests on the event loop can't both
        # take the last of a budget. The executor appends the hold before the provider call.
        refusal = self._book.check(keys, amount)
        if refusal is None:
            self._book.apply(change)
        return refusal

    def expire(self, due: list[tuple[str, int]], make: Callable[[str, int], Event]) -> list[Event]:
        events = [make(rid, held) for rid, held in due]
        for event in events:
            self._book.apply(event)
        return events


class _Intent:
    __slots__ = ("amount", "change", "done", "error", "keys", "refusal")

    def __init__(self, keys: list[str], amount: int, change: Event) -> None:
        self.keys = keys
        self.amount = amount
        self.change = change
        self.done = anyio.Event()
        self.refusal: Refusal | None = None
        self.error: BaseException | None = None


class SharedLedger:
    """Several sidecars, one stream: conditional holds, a followed book (see the module doc)."""

    logs_holds = True

    def __init__(self, book: BudgetBook, store: JetStreamEventStore, *, max_batch: int = 256):
        self._book = book
        self._store = store
        self._max_batch = max_batch
        self.hold_seq = 0
        # Where the follower is: everything on the budget subjects up to here is in the book.
        self.position = 0
        # Holds waiting to be decided; one caller at a time decides a round of them.
        self._intents: list[_Intent] = []
        self._deciding = False
        self._round_done = anyio.Event()
        self._expiring: dict[str, int] = {}
        # Conflicts met (a figure for tests and metrics).
        self.conflicts = 0

    @property
    def book(self) -> BudgetBook:
        return self._book

    async def rebuild(self) -> None:
        """Follow the budget subjects until everything stored at the start is in the book."""
        caught_up = anyio.Event()
        async with anyio.create_task_group() as tasks:

            async def stop_when_caught_up() -> None:
                await caught_up.wait()
                tasks.cancel_scope.cancel()

            tasks.start_soon(stop_when_caught_up)
            await self._follow(caught_up)

    async def run(self) -> None:
        """Follow the budget subjects, until cancelled. Holds do not depend on it (a hold that
        meets a newer one catches up by itself); it keeps the book fresh, which saves conflicts
        and brings other sidecars' releases."""
        await self._follow(None)

    async def _follow(self, caught_up: anyio.Event | None) -> None:
        subjects = self._store.subjects
        follow = self._store.follow([subjects.budget], self.position, caught_up=caught_up)
        try:
            async for stored in follow:
                self._apply(stored)
                self.position = stored.seq
        finally:
            await follow.aclose()

    def _apply(self, stored: StoredEvent) -> None:
        """Apply one stored budget event (from the follower or a catch-up) to the book."""
        if self._store.subjects.is_hold(stored.event):
            if stored.seq <= self.hold_seq:
                return  # applied already (our own, or read by a catch-up)
            self.hold_seq = stored.seq
        elif isinstance(stored.event, BudgetReservationExpired):
            self._expiring.pop(stored.event.reservation_id, None)
        self._book.apply(stored.event)

    async def hold(
        self, keys: list[str], amount: int, change: Event, before: list[Event]
    ) -> Refusal | None:
        if before:
            # Ahead of the hold in the store's queue, so they land before it.
            await self._store.submit(list(before))
            before.clear()
        intent = _Intent(keys, amount, change)
        self._intents.append(intent)
        # Shielded: once asked for, the hold's outcome must be known (a hold stored for a request
        # that stopped waiting would stay unsettled until it expires). The store bounds the wait.
        with anyio.CancelScope(shield=True):
            while not intent.done.is_set():
                if self._deciding:
                    await self._round_done.wait()
                    continue
                # Nobody is deciding: decide one round, for every hold waiting (ours included),
                # then let the others see their outcome or take the next round.
                self._deciding = True
                batch = self._intents[: self._max_batch]
                del self._intents[: self._max_batch]
                try:
                    await self._decide(batch)
                except Exception as exc:
                    for other in batch:
                        if not other.done.is_set():
                            other.error = exc
                            other.done.set()
                finally:
                    self._deciding = False
                    self._round_done.set()
                    self._round_done = anyio.Event()
        if intent.error is not None:
            raise intent.error
        return intent.refusal

    async def _decide(self, batch: list[_Intent]) -> None:
        """Decide ``batch`` on the book and append the admitted holds conditionally; after a
        conflict, catch up and decide again what was admitted."""
        while batch:
            pending: dict[str, int] = {}
            admitted: list[_Intent] = []
            refused: list[tuple[_Intent, Refusal]] = []
            for intent in batch:
                refusal = self._book.check(intent.keys, intent.amount, pending)
                if refusal is not None:
                    refused.append((intent, refusal))
                    continue
                admitted.append(intent)
                for key in dict.fromkeys(intent.keys):
                    pending[key] = pending.get(key, 0) + intent.amount
            if admitted:
                after = self.hold_seq
                try:
                    seqs = await self._store.append_holds([i.change for i in admitted], after=after)
                except HoldConflictError as conflict:
                    # Nothing of this round was stored, so its refusals may have counted holds
                    # that do not exist: the whole round is decided again on the caught-up book.
                    self.conflicts += 1
                    await self._catch_up(conflict.newest)
                    continue
                # The condition held: nothing came between ``after`` and our holds.
                for intent, seq in zip(admitted, seqs, strict=True):
                    if seq > self.hold_seq:
                        self.hold_seq = seq
                        self._book.apply(intent.change)
                    intent.done.set()
            # Final only now: every hold a refusal counted is in the stream.
            for intent, refusal in refused:
                intent.refusal = refusal
                intent.done.set()
            return

    async def _catch_up(self, newest: int) -> None:
        """Apply every hold after ``hold_seq`` (at least up to ``newest``)."""
        deadline = anyio.current_time() + _CATCH_UP_S
        while True:
            page = await self._store.read_holds(self.hold_seq, _CATCH_UP_PAGE)
            for stored in page:
                self._apply(stored)
            if len(page) == _CATCH_UP_PAGE:
                continue
            if self.hold_seq >= newest:
                return
            if anyio.current_time() > deadline:
                raise StoreError(
                    f"the stream reported hold {newest}, but only {self.hold_seq} can be read"
                )
            # The server reported a newer hold than we can read yet (a replica behind).
            await anyio.sleep(0.01)

    def expire(self, due: list[tuple[str, int]], make: Callable[[str, int], Event]) -> list[Event]:
        now = time.monotonic_ns()
        events: list[Event] = []
        for rid, held in due:
            sent = self._expiring.get(rid)
            if sent is not None and now - sent < _EXPIRY_RESEND_NS:
                continue
            self._expiring[rid] = now
            events.append(make(rid, held))
        return events


def open_ledger(book: BudgetBook, store: EventStore) -> Ledger:
    """The ledger the store calls for: shared on a JetStream stream, local otherwise."""
    if isinstance(store, JetStreamEventStore):
        return SharedLedger(book, store)
    return LocalLedger(book, store)
