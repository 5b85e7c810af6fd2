"""The Markdown form of the routing report (the JSON form carries the same figures)."""

from __future__ import annotations

from ._report import table
from ._routing import RoutingReport, Summary

__all__ = ["routing_markdown"]


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _row(name: str, s: Summary) -> list[object]:
    return [
        name,
        s.items,
        _pct(s.accuracy),
        s.under,
        s.over,
        s.lateral,
        s.no_route,
        s.violations,
        f"{s.cost_usd:.4f}",
        f"{s.flagship_cost_usd:.4f}",
        _pct(s.saving),
        _pct(s.inference_accuracy),
        s.unrouted,
        f"{s.mistyped_flagged} ({s.mistyped_caught}/{s.declared_wrong})",
    ]


def routing_markdown(report: RoutingReport) -> str:
    run = report.run
    header = [
        "task type",
        "items",
        "accuracy",
        "under",
        "over",
        "lateral",
        "no route",
        "violations",
        "cost $",
        "flagship $",
        "saving",
        "inference",
        "unrouted",
        "mistyped flagged (caught/wrong)",
    ]
    rows = [_row(task, s) for task, s in report.by_type.items()]
    rows.append(_row("**overall**", report.overall))
    out = [
        "# Routing evaluation\n",
        f"Config `{run.config_hash}`, task set `{run.tasks_digest}` ({run.tasks} items). "
        f"Class strength by {run.strength_basis}: "
        + ", ".join(f"{name} {value:g}" for name, value in run.strength.items())
        + f". Baseline: always `{run.baseline_model}` (class {run.baseline_class}). "
        f"Prices: {run.prices}.\n",
        table(header, rows),
        "**accuracy**: landed on an acceptable class. **under**/**over**: on a class weaker/"
        "stronger than every acceptable one (quality risk / wasted money); **lateral**: another "
        "class of comparable strength. **violations**: hard constraints broken by any model in "
        "the chain (must be 0). **cost**: estimated for the expected answer, against sending "
        "every item to the baseline. **inference**: task type inferred correctly. "
        "**unrouted**: took the default route. **mistyped flagged**: a TaskMistyped event would "
        "be logged (of which caught: the declared type really is wrong / items declaring a "
        "wrong type).\n",
    ]
    violations = [[o.id, v] for o in report.items for v in o.violations]
    out += _section("Hard-constraint violations", ["item", "violation"], violations)
    out += _section(
        "Items not on an acceptable class",
        ["item", "verdict", "declared", "inferred", "route", "model", "class", "acceptable"],
        [
            [
                o.id,
                o.verdict,
                o.declared or "-",
                o.inferred,
                o.route,
                o.model or "-",
                o.model_class or "-",
                ", ".join(o.acceptable),
            ]
            for o in report.items
            if o.verdict != "accurate"
        ],
    )
    out += _section(
        "Unrouted items (default route)",
        ["item", "task type", "declared", "inferred", "route"],
        [
            [o.id, o.task_type, o.declared or "-", o.inferred, o.route]
            for o in report.items
            if o.unrouted
        ],
    )
    out += _section(
        "Mistyped items",
        ["item", "task type", "declared", "inferred", "flagged", "declared wrong"],
        [
            [
                o.id,
                o.task_type,
                o.declared or "-",
                o.inferred,
                "yes" if o.mistyped_flagged else "no",
                "yes" if o.declared_wrong else "no",
            ]
            for o in report.items
            if o.mistyped_flagged or o.declared_wrong
        ],
    )
    out += _section(
        "Inference mistakes",
        ["item", "task type", "inferred"],
        [[o.id, o.task_type, o.inferred] for o in report.items if o.inferred != o.task_type],
    )
    if report.problems:
        out.append("## Problems\n")
        out.extend(f"- {p}\n" for p in report.problems)
    return "\n".join(out)


def _section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"## {title}\n", table(header, rows) if rows else "None.\n"]
