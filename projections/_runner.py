"""Feeding the folds from the log: catch up, keep up; checkpoint; rebuild from sequence 0.

:class:`Projections` holds the folds (usage, alerts, budgets) at one log position. It is pure:
events in, state out. :class:`ProjectionRunner` is the I/O around it: it restores a checkpoint,
reads the store from there as it grows, appends the alerts the folds raise, and writes a
checkpoint now and then and on exit.

Invariant: every fold sees every event once, in log order, so the state at position ``n`` is a
function of the first ``n`` events alone — a rebuild from 0 equals the live state, byte for byte.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

import anyio
import msgspec

from events import (
    AlertCleared,
    AlertRaised,
    Event,
    EventStore,
    StoreClosedError,
    StoredEvent,
)

from ._alerts import AlertBook, AlertChange, AlertPolicy, AlertState
from ._budget import BookState, BudgetBook, BudgetSnapshot, BudgetSpec
from ._usage import UsageState, UsageView

__all__ = [
    "ProjectionRunner",
    "Projections",
    "ProjectionsState",
    "alert_events",
    "write_checkpoint",
]

_log = logging.getLogger(__name__)

CHECKPOINT_VERSION: Final = 3
FORGET_EVERY: Final = 10_000
_PAGE: Final = 5_000
FORGET_AFTER_NS: Final = 86_400 * 10**9


class ProjectionsState(msgspec.Struct, frozen=True, kw_only=True):
    """What the projections say at ``position``: equal states encode to equal bytes."""

    position: int
    usage: UsageState
    totals: UsageState
    alerts: AlertState
    budgets: BudgetSnapshot


class _Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    position: int
    # The id of the log's first event: a checkpoint of another log (a new file, a recreated
    # stream) is not continued.
    origin: str
    usage: UsageState
    totals: UsageState
    alerts: AlertState
    budgets: BookState


class Projections:
    def __init__(
        self,
        *,
        budget_specs: Iterable[BudgetSpec],
        alert_policy: AlertPolicy,
        primary_models: Mapping[str, frozenset[str]],
    ) -> None:
        self._specs = list(budget_specs)
        self._policy = alert_policy
        self._primary = primary_models
        self.reset()

    def reset(self) -> None:
        """Back to the state before the first event."""
        self.usage = UsageView()
        # The same fold without days, for metrics: a scrape reads a view that does not grow.
        self.totals = UsageView(by_day=False)
        self.alerts = AlertBook(self._policy, self._primary)
        self.budgets = BudgetBook(self._specs)
        self.position = 0
        self.origin = ""

    def apply(self, stored: StoredEvent) -> list[AlertChange]:
        """Fold one event; the alerts it raised or cleared."""
        if stored.seq <= self.position:
            return []  # seen already (a redelivery, or a tail overlapping a checkpoint)
        event = stored.event
        # Budgets first: the budget alert reads the book with this event applied.
        self.budgets.apply(event)
        self.usage.apply(event)
        self.totals.apply(event)
        changes = self.alerts.apply(event, self.budgets)
        if stored.seq % FORGET_EVERY == 0:
            # Bounded memory (and checkpoints): closed reservations are remembered only to
            # ignore late copies of their events. Event time, so a rebuild forgets alike.
            self.budgets.forget(event.ts_ns - FORGET_AFTER_NS)
        if stored.seq == 1:
            self.origin = event.event_id
        self.position = stored.seq
        return changes

    def state(self) -> ProjectionsState:
        return ProjectionsState(
            position=self.position,
            usage=self.usage.state(),
            totals=self.totals.state(),
            alerts=self.alerts.state(),
            budgets=self.budgets.snapshot(),
        )

    def checkpoint(self) -> bytes:
        return msgspec.msgpack.encode(
            _Checkpoint(
                version=CHECKPOINT_VERSION,
                position=self.position,
                origin=self.origin,
                usage=self.usage.state(),
                totals=self.totals.state(),
                alerts=self.alerts.state(),
                budgets=self.budgets.book_state(),
            )
        )

    def restore(self, data: bytes) -> None:
        """Continue from a checkpoint taken by ``checkpoint`` (with the same configuration)."""
        saved = msgspec.msgpack.decode(data, type=_Checkpoint)
        if saved.version != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {saved.version} is not {CHECKPOINT_VERSION}")
        self.usage = UsageView.from_state(saved.usage)
        self.totals = UsageView.from_state(saved.totals)
        self.alerts = AlertBook.from_state(saved.alerts, self._policy, self._primary)
        self.budgets = BudgetBook.from_book_state(self._specs, saved.budgets)
        self.position = saved.position
        self.origin = saved.origin


def alert_events(trigger: Event, changes: Iterable[AlertChange]) -> list[Event]:
    """The events announcing ``changes``, at the time of the event that caused them.

    Their ids derive from the trigger's, so a sidecar that replays the same recent stretch of log
    after a restart (or a second sidecar folding the same shared log) appends the same events
    again, and the store keeps one copy of each (JetStream: within its deduplication window,
    which is why the runner announces only recent alerts).
    """
    events: list[Event] = []
    for change in changes:
        kind = "raised" if change.raised else "cleared"
        event_id = str(
            uuid.uuid5(
                uuid.NAMESPACE_OID, f"{trigger.event_id}/{change.alert}/{change.subject}/{kind}"
            )
        )
        envelope: dict[str, Any] = {
            "event_id": event_id,
            "ts_ns": trigger.ts_ns,
            "request_id": "",
            "tenant": "",
            "task": "",
            "config_hash": trigger.config_hash,
            "cause_event_id": trigger.event_id,
        }
        if change.raised:
            events.append(
                AlertRaised(
                    **envelope,
                    alert=change.alert,
                    subject=change.subject,
                    value=change.value,
                    threshold=change.threshold,
                    message=change.message,
                )
            )
        else:
            events.append(
                AlertCleared(
                    **envelope,
                    alert=change.alert,
                    subject=change.subject,
                    value=change.value,
                    threshold=change.threshold,
                )
            )
    return events


class ProjectionRunner:
    """Keeps ``projections`` current with ``store``, and appends ``AlertRaised`` and
    ``AlertCleared`` to it as the folds raise them."""

    def __init__(
        self,
        store: EventStore,
        projections: Projections,
        *,
        checkpoint_path: str | None,
        checkpoint_interval_s: float = 10.0,
        announce_horizon_s: float = 240.0,
        poll_s: float = 0.05,
    ) -> None:
        self.store = store
        self.projections = projections
        self._checkpoint_path = checkpoint_path
        self._interval_s = checkpoint_interval_s
        self._horizon_ns = int(announce_horizon_s * 1e9)
        self._poll_s = poll_s
        self._advanced = anyio.Event()
        self._waiting = 0
        self._saved_position = -1

    @property
    def position(self) -> int:
        return self.projections.position

    async def load_checkpoint(self) -> None:
        """Start from the checkpoint if there is a usable one (of this log); otherwise from
        sequence 0."""
        path = self._checkpoint_path
        if path is None or not await anyio.Path(path).exists():
            return
        try:
            self.projections.restore(await anyio.Path(path).read_bytes())
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            # A torn or foreign checkpoint costs a rebuild, never wrong figures.
            _log.warning("ignoring checkpoint %s (%s): rebuilding from the log", path, exc)
        await self._check_origin()
        self._saved_position = self.projections.position

    async def run(self) -> None:
        """Fold every event as it is logged, forever (cancel to stop; a checkpoint is written).

        It reads the log in pages and, once caught up, again every ``poll_s``: a tail woken by
        every commit would cost a read per commit on the request path's busiest moments,
        where a page every 50 ms folds the same events for a fraction of the work (the
        projections lag by at most that).
        """
        # Alerts tripped by older events are folded but not announced again: a sidecar that
        # replays a long log (a new pod) would otherwise re-append every past alert, and the
        # store only deduplicates within its window (JetStream: 5 minutes).
        announce_from_ns = time.time_ns() - self._horizon_ns
        try:
            async with anyio.create_task_group() as tasks:
                if self._checkpoint_path is not None:
                    tasks.start_soon(self._checkpoint_periodically)
                while (page := await self._fold_page(announce_from_ns)) is not None:
                    if len(page) < _PAGE:
                        await anyio.sleep(self._poll_s)
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                # What was logged since the last page is folded (not announced) before the
                # checkpoint, so a stopped sidecar leaves the projections of its whole log.
                while (page := await self._fold_page(None)) and len(page) == _PAGE:
                    pass
                await self.save_checkpoint()

    async def _fold_page(self, announce_from_ns: int | None) -> list[StoredEvent] | None:
        """Fold the next page of the log; None once the store is closed. Alerts of events at
        or after ``announce_from_ns`` are announced (none if None)."""
        try:
            page = await self.store.read(self.projections.position, _PAGE)
        except StoreClosedError:
            return None
        for stored in page:
            changes = self.projections.apply(stored)
            if changes and announce_from_ns is not None and stored.event.ts_ns >= announce_from_ns:
                await self._announce(stored.event, changes)
        if page:
            self._wake()
        return page

    async def _check_origin(self) -> None:
        """Start over when the checkpoint belongs to another log, or runs past this one."""
        position = self.projections.position
        if position == 0:
            return
        first = await self.store.read(0, 1)
        if (
            not first
            or first[0].event.event_id != self.projections.origin
            or await self.store.last_seq() < position
        ):
            _log.warning(
                "the checkpoint %s is not of this event log: rebuilding from the log",
                self._checkpoint_path,
            )
            self.projections.reset()

    async def wait_for(self, seq: int) -> None:
        """Return once the projections have folded the event at ``seq``."""
        self._waiting += 1
        try:
            while self.projections.position < seq:
                await self._advanced.wait()
        finally:
            self._waiting -= 1

    async def save_checkpoint(self) -> None:
        path = self._checkpoint_path
        if path is None or self.projections.position == self._saved_position:
            return
        position = self.projections.position
        data = self.projections.checkpoint()
        await anyio.to_thread.run_sync(write_checkpoint, path, data)
        self._saved_position = position

    async def _announce(self, trigger: Event, changes: list[AlertChange]) -> None:
        for change in changes:
            log = _log.warning if change.raised else _log.info
            log("alert %s: %s", "raised" if change.raised else "cleared", change.message)
        await self.store.submit(alert_events(trigger, changes))

    async def _checkpoint_periodically(self) -> None:
        while True:
            await anyio.sleep(self._interval_s)
            try:
                await self.save_checkpoint()
            except OSError as exc:
                _log.warning("cannot write checkpoint %s: %s", self._checkpoint_path, exc)

    def _wake(self) -> None:
        if self._waiting:
            self._advanced.set()
            self._advanced = anyio.Event()


def write_checkpoint(path: str, data: bytes) -> None:
    """Replace the checkpoint at ``path`` with ``data``, atomically."""
    # Write beside, then rename: a reader (or a crash) sees the old checkpoint or the new one.
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
