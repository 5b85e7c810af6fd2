"""Projections: pure folds of the event log (budget state, usage views, audit timelines)."""

from ._budget import (
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

__all__ = [
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
