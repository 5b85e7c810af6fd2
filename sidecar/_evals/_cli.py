"""``tollgate eval``: the ``routing``, ``faults`` and ``swap`` subcommands."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

import anyio
import msgspec

from sidecar._config import Config, config_hash, load_config
from sidecar._prices import PriceTable

from ._apply import ApplyError, apply_swap
from ._faults import PROTOCOLS, faults_markdown, run_fault_matrix
from ._markdown import routing_markdown
from ._providers import ProviderMode, answer_book, eval_adapters
from ._report import write_report
from ._routing import evaluate_routing
from ._swap import SwapError, SwapOptions, SwapReport, route_items, run_swap, swap_markdown
from ._tasks import TaskSetError, load_tasks, tasks_digest

T = TypeVar("T")

__all__ = ["add_eval_parser", "run_eval"]

DEFAULT_OUT = "tollgate-eval"


def add_eval_parser(commands: Any) -> None:
    """Register ``eval`` on the ``tollgate`` command's subparsers."""
    parser = commands.add_parser(
        "eval", help="evaluate routing, fault handling, or a model swap (writes reports)"
    )
    evals = parser.add_subparsers(dest="eval_command", required=True, metavar="EVAL")

    routing = evals.add_parser(
        "routing", help="run the router alone over the labelled task set and report its accuracy"
    )
    routing.add_argument("--config", "-c", required=True, help="the TOML config file")
    routing.add_argument("--tasks", help="a task set (JSONL); default: the shipped one")
    routing.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="fail (exit 1) when the overall accuracy is below this fraction, e.g. 0.85",
    )
    routing.add_argument("--out", default=DEFAULT_OUT, help=f"report directory ({DEFAULT_OUT})")
    routing.add_argument(
        "--prices-at",
        type=date.fromisoformat,
        default=None,
        help="price models as on this UTC day (YYYY-MM-DD); default: today",
    )

    faults = evals.add_parser(
        "faults",
        help="run every fault of the fake providers through a real sidecar and check the outcome",
    )
    faults.add_argument(
        "--protocol",
        action="append",
        choices=PROTOCOLS,
        help="only this primary provider kind (repeatable); default: all",
    )
    faults.add_argument(
        "--timeout", type=float, default=0.3, help="the route timeouts in seconds (0.3)"
    )
    faults.add_argument(
        "--cell-deadline", type=float, default=10.0, help="a cell taking longer hangs (10 s)"
    )
    faults.add_argument("--concurrency", type=int, default=8, help="cells at once (8)")
    faults.add_argument("--out", default=DEFAULT_OUT, help=f"report directory ({DEFAULT_OUT})")

    swap = evals.add_parser(
        "swap",
        help="compare a candidate model with a route's first model on the route's checked items",
    )
    swap.add_argument("--config", "-c", required=True, help="the TOML config file")
    swap.add_argument("--route", required=True, help="the route to change")
    swap.add_argument("--candidate", required=True, help="a model from the config's [models]")
    swap.add_argument("--tasks", help="a task set (JSONL); default: the shipped one")
    swap.add_argument(
        "--apply",
        action="store_true",
        help="if the candidate passes, make it the route's first model in the config file",
    )
    swap.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="how much lower its pass rate may be (a fraction; 0.02)",
    )
    swap.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of 'worse' (0.05)"
    )
    swap.add_argument(
        "--strict",
        action="store_true",
        help="also require the bootstrap interval of the difference above -tolerance",
    )
    swap.add_argument("--max-cost-ratio", type=float, default=None, help="e.g. 1.2: +20%% at most")
    swap.add_argument(
        "--max-latency-ratio", type=float, default=None, help="median latency, e.g. 1.5"
    )
    swap.add_argument(
        "--providers",
        choices=["auto", "real", "fake"],
        default="auto",
        help="real APIs where keys are set (auto), all real, or all fakes",
    )
    swap.add_argument(
        "--fake-quality",
        action="append",
        default=[],
        metavar="MODEL=Q",
        help="on a fake provider, the fraction of checked items MODEL gets right (1.0)",
    )
    swap.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (0)")
    swap.add_argument("--concurrency", type=int, default=4, help="calls at once (4)")
    swap.add_argument("--call-timeout", type=float, default=120.0, help="per call, seconds")
    swap.add_argument("--out", default=DEFAULT_OUT, help=f"report directory ({DEFAULT_OUT})")


def run_eval(args: argparse.Namespace) -> int:
    try:
        if args.eval_command == "routing":
            return _routing(args)
        if args.eval_command == "faults":
            return _faults(args)
        if args.eval_command == "swap":
            return _swap(args)
    except TaskSetError as exc:
        print(f"tollgate: invalid task set: {exc}", file=sys.stderr)
        return 2
    except SwapError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unknown eval command {args.eval_command!r}")


def _run(entry: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(entry, backend="asyncio")


@contextmanager
def _quiet() -> Iterator[None]:
    """The faults are on purpose: their warnings (breakers opening, alerts) are noise here,
    unless the operator asked for DEBUG."""
    loggers = [logging.getLogger(name) for name in ("tollgate", "projections", "events")]
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _faults(args: argparse.Namespace) -> int:
    with _quiet():
        report = _run(
            lambda: run_fault_matrix(
                protocols=args.protocol or PROTOCOLS,
                timeout_s=args.timeout,
                cell_deadline_s=args.cell_deadline,
                concurrency=args.concurrency,
            )
        )
    paths = write_report(args.out, "faults", report, faults_markdown(report))
    print(f"{report.cells} cells: {report.passed} passed, {report.failed} failed")
    for cell in report.results:
        if not cell.passed:
            stream = "streamed" if cell.stream else "not streamed"
            print(f"FAILED: {cell.protocol} / {cell.fault} / {stream}: {cell.detail}")
    print("Reports: " + ", ".join(str(p) for p in paths))
    return 0 if report.failed == 0 else 1


def _qualities(values: list[str], config: Config) -> dict[str, float]:
    qualities: dict[str, float] = {}
    for value in values:
        model, sep, number = value.rpartition("=")
        try:
            quality = float(number)
        except ValueError:
            quality = -1.0
        if not sep or model not in config.models or not 0 <= quality <= 1:
            raise SwapError(
                f"--fake-quality {value!r}: expected MODEL=Q with a model of the config and "
                "0 <= Q <= 1"
            )
        qualities[model] = quality
    return qualities


def _swap(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.route not in config.routes:
        raise SwapError(
            f"unknown route {args.route!r} (routes: {', '.join(sorted(config.routes))})"
        )
    if args.candidate not in config.models:
        raise SwapError(
            f"unknown model {args.candidate!r}: add it under [models] first "
            f"(models: {', '.join(sorted(config.models))})"
        )
    incumbent = config.classes[config.routes[args.route].model_class].members[0]
    if args.candidate == incumbent:
        raise SwapError(f"{args.candidate} is already route {args.route!r}'s first model")
    all_items = load_tasks(args.tasks)
    items = route_items(config, all_items, args.route)
    if not items:
        raise SwapError(f"no item with a checker routes to {args.route!r} in the task set")
    options = SwapOptions(
        route=args.route,
        candidate=args.candidate,
        tolerance=args.tolerance,
        alpha=args.alpha,
        strict=args.strict,
        max_cost_ratio=args.max_cost_ratio,
        max_latency_ratio=args.max_latency_ratio,
        seed=args.seed,
        concurrency=args.concurrency,
        call_timeout_s=args.call_timeout,
    )
    qualities = _qualities(args.fake_quality, config)
    models = {m: qualities.get(m, 1.0) for m in (incumbent, args.candidate)}
    prices = PriceTable.from_config(config)
    mode: ProviderMode = args.providers

    async def evaluate() -> SwapReport:
        async with eval_adapters(config, mode, models=models, book=answer_book(items)) as (
            adapters,
            sources,
        ):
            return await run_swap(
                config,
                items,
                options,
                adapters,
                sources,
                prices,
                config_hash=config_hash(config),
                tasks_digest=tasks_digest(all_items),
            )

    report = _run(evaluate)
    status = 0 if report.verdict.accepted else 1
    if args.apply and report.verdict.accepted:
        try:
            change = apply_swap(args.config, config, args.route, args.candidate)
        except ApplyError as exc:
            print(f"tollgate: not applied: {exc}", file=sys.stderr)
            status = 1
        else:
            report = msgspec.structs.replace(report, applied=change)
    name = "swap-" + re.sub(r"[^A-Za-z0-9._-]+", "_", f"{args.route}-{args.candidate}")
    paths = write_report(args.out, name, report, swap_markdown(report))
    c = report.comparison
    print(
        f"route {args.route}: {report.incumbent.model} ({report.incumbent.source}) "
        f"{c.incumbent_pass_rate:.1%} vs {report.candidate.model} ({report.candidate.source}) "
        f"{c.candidate_pass_rate:.1%} on {c.items} items"
    )
    verdict = "ACCEPTED" if report.verdict.accepted else "REFUSED"
    print(f"{verdict}: " + "; ".join(report.verdict.reasons))
    if args.apply:
        if report.applied is not None:
            print(f"Applied to {args.config}: {report.applied}")
        elif not report.verdict.accepted:
            print(f"Not applied: {args.config} is unchanged.")
    print("Reports: " + ", ".join(str(p) for p in paths))
    return status


def _routing(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    items = load_tasks(args.tasks)
    day: date = args.prices_at or datetime.now(UTC).date()
    prices = PriceTable.from_config(config, at=datetime.combine(day, time(), UTC))
    source = (
        f"genai-prices {prices.genai_prices_version} as on {day.isoformat()}"
        if prices.genai_prices_version
        else "the config's prices"
    )
    report = evaluate_routing(
        items,
        config,
        prices,
        config_hash=config_hash(config),
        tasks_digest=tasks_digest(items),
        prices_note=source,
    )
    paths = write_report(args.out, "routing", report, routing_markdown(report))
    s = report.overall
    print(
        f"{s.items} items: accuracy {s.accuracy:.1%} (under {s.under}, over {s.over}, "
        f"lateral {s.lateral}, no route {s.no_route}), violations {s.violations}, "
        f"cost ${s.cost_usd:.4f} vs ${s.flagship_cost_usd:.4f} always-{report.run.baseline_class}"
        f" (saving {s.saving:.1%}), inference {s.inference_accuracy:.1%}, "
        f"unrouted {s.unrouted}, mistyped flagged {s.mistyped_flagged}"
    )
    print("Reports: " + ", ".join(str(p) for p in paths))
    failures = []
    if s.violations:
        failures.append(f"{s.violations} hard-constraint violations")
    if args.min_accuracy is not None and s.accuracy < args.min_accuracy:
        failures.append(f"accuracy {s.accuracy:.1%} is below {args.min_accuracy:.1%}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0
