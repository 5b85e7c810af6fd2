"""Evaluations: routing against a labelled task set, fault injection, eval-gated model swaps.

``tollgate eval routing|faults|swap`` (``_cli``); the task set ships as ``tasks.jsonl``, made by
``_generate``. See "Evaluating and tuning routes" in the README.
"""

from ._cli import add_eval_parser, run_eval
from ._faults import FaultsReport, run_fault_matrix
from ._routing import RoutingReport, evaluate_routing
from ._swap import SwapOptions, SwapReport, run_swap
from ._tasks import TaskItem, TaskSetError, load_tasks

__all__ = [
    "FaultsReport",
    "RoutingReport",
    "SwapOptions",
    "SwapReport",
    "TaskItem",
    "TaskSetError",
    "add_eval_parser",
    "evaluate_routing",
    "load_tasks",
    "run_eval",
    "run_fault_matrix",
    "run_swap",
]
