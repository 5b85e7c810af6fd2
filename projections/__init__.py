"""Projections: pure folds of the event log (budget state, usage views, audit timelines)."""
