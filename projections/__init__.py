"""Projections: pure folds of the event log (budget state, usage views, audit timelines, alerts)
and the runner that feeds them from a store."""

from ._alerts import AlertBook, AlertChange, AlertPolicy, AlertState, BreakerState
from ._audit import (
    AttemptSummary,
    AuditEntry,
    AuditTimeline,
    audit_timeline,
    describe_event,
    render_timeline,
)
from ._budget import (
    BookState,
    BudgetBook,
    BudgetSnapshot,
    BudgetSpec,
    BudgetState,
    Period,
    Refusal,
    ReservationState,
    Scope,
    budget_keys,
)
from ._metrics import render_prometheus
from ._runner import (
    ProjectionRunner,
    Projections,
    ProjectionsState,
    alert_events,
    write_checkpoint,
)
from ._sketch import DurationSketch, SketchState
from ._usage import (
    USAGE_DIMENSIONS,
    USAGE_EVENT_TYPES,
    UsageFilter,
    UsageKey,
    UsageRow,
    UsageRowState,
    UsageState,
    UsageView,
)

__all__ = [
    "USAGE_DIMENSIONS",
    "USAGE_EVENT_TYPES",
    "AlertBook",
    "AlertChange",
    "AlertPolicy",
    "AlertState",
    "AttemptSummary",
    "AuditEntry",
    "AuditTimeline",
    "BookState",
    "BreakerState",
    "BudgetBook",
    "BudgetSnapshot",
    "BudgetSpec",
    "BudgetState",
    "DurationSketch",
    "Period",
    "ProjectionRunner",
    "Projections",
    "ProjectionsState",
    "Refusal",
    "ReservationState",
    "Scope",
    "SketchState",
    "UsageFilter",
    "UsageKey",
    "UsageRow",
    "UsageRowState",
    "UsageState",
    "UsageView",
    "alert_events",
    "audit_timeline",
    "budget_keys",
    "describe_event",
    "render_prometheus",
    "render_timeline",
    "write_checkpoint",
]
