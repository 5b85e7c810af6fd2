"""``tollgate usage | audit | replay | tail``: the projections and the log, from a terminal.

They read the SQLite log file read-only (or the JetStream stream, on a connection of their own),
so they are safe beside a running sidecar and work when it is stopped. ``usage`` starts from
the projections' checkpoint and folds only what was logged since.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

import anyio
import msgspec

from events import (
    Event,
    EventStore,
    StoredEvent,
    StoreError,
    encode_event_json,
    log_position,
    open_jetstream_store,
    read_log,
)
from projections import (
    USAGE_DIMENSIONS,
    USAGE_EVENT_TYPES,
    Projections,
    UsageFilter,
    UsageView,
    audit_timeline,
    describe_event,
    render_timeline,
    write_checkpoint,
)

from ._config import Config
from ._nats_connect import NatsConnectError, connect_nats
from ._observe import build_projections, parse_usage_dims, usage_report
from ._table import print_table

__all__ = ["add_observe_commands", "read_events", "run_observe_command"]

PROGRESS_EVERY = 50_000
T = TypeVar("T")


def add_observe_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="requests, tokens, cost and latency, grouped")
    usage.add_argument("--config", "-c", required=True, help="the TOML config file")
    usage.add_argument("--tenant")
    usage.add_argument("--task")
    usage.add_argument("--model")
    usage.add_argument("--provider")
    usage.add_argument("--class", dest="model_class")
    usage.add_argument("--since", help="a UTC date (2026-11-01) or a number of days back (7d)")
    usage.add_argument("--until", help="a UTC date, inclusive")
    usage.add_argument(
        "--by",
        default="tenant,task,model",
        help=f"comma-separated grouping, of: {', '.join(USAGE_DIMENSIONS)} (empty: one total)",
    )
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")

    audit = commands.add_parser("audit", help="every event of one request, explained")
    audit.add_argument("request_id")
    audit.add_argument("--config", "-c", required=True, help="the TOML config file")
    audit.add_argument("--json", action="store_true", help="print JSON instead of text")

    replay = commands.add_parser(
        "replay", help="rebuild the projections from the whole log and checkpoint them"
    )
    replay.add_argument("--config", "-c", required=True, help="the TOML config file")
    replay.add_argument(
        "--only-usage",
        action="store_true",
        help="fold the usage view alone, reading only the event types it needs",
    )
    replay.add_argument(
        "--no-checkpoint", action="store_true", help="rebuild and report, but write nothing"
    )

    tail = commands.add_parser("tail", help="print events as they are logged")
    tail.add_argument("--config", "-c", required=True, help="the TOML config file")
    tail.add_argument("--tenant")
    tail.add_argument("--task")
    tail.add_argument("--request", help="one request id")
    tail.add_argument(
        "--type", action="append", default=[], help="an event type (e.g. attempt_failed); repeat"
    )
    tail.add_argument(
        "--from-start", action="store_true", help="begin at the first event, not the newest"
    )
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--json", action="store_true", help="one JSON event per line")


def run_observe_command(args: argparse.Namespace, config: Config) -> int:
    try:
        match args.command:
            case "usage":
                return _usage(args, config)
            case "audit":
                return _audit(args, config)
            case "replay":
                return _replay(args, config)
            case _:
                return _tail(args, config)
    except (StoreError, NatsConnectError) as exc:
        print(f"tollgate {args.command}: {exc}", file=sys.stderr)
        return 1


def _usage(args: argparse.Namespace, config: Config) -> int:
    try:
        by = parse_usage_dims(args.by)
    except ValueError as exc:
        print(f"tollgate usage: --by: {exc}", file=sys.stderr)
        return 2
    try:
        since = _day(args.since)
        until = _day(args.until)
    except ValueError as exc:
        print(f"tollgate usage: {exc}", file=sys.stderr)
        return 2
    projections = _current(config)
    where = UsageFilter(
        tenant=args.tenant,
        task=args.task,
        model=args.model,
        provider=args.provider,
        model_class=args.model_class,
        since=since,
        until=until,
    )
    report = usage_report(projections.usage, where, by)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    dims = report["by"]
    header = [*dims, "requests", "ok", "failed", "attempts", "retries", "fallbacks"]
    header += ["in tok", "out tok", "cost $", "p50 ms", "p95 ms", "p99 ms", "ttft p50"]

    def cells(group: dict[str, Any], r: dict[str, Any]) -> list[str]:
        failed = sum(r["failures"].values())
        lat, ttft = r["latency"], r["ttft"]
        return [
            *(group.get(d, "") or "-" for d in dims),
            str(r["requests"]),
            str(r["successes"]),
            str(failed),
            str(r["attempts"]),
            str(r["retries"]),
            str(r["fallbacks"]),
            str(r["input_tokens"]),
            str(r["output_tokens"]),
            f"{r['cost_usd']:.6f}",
            *(_ms(lat[p]) for p in ("p50_ms", "p95_ms", "p99_ms")),
            _ms(ttft["p50_ms"]),
        ]

    rows = [cells(row, row) for row in report["rows"]]
    total = cells({}, report["total"])
    if dims:
        total[: len(dims)] = ["total", *([""] * (len(dims) - 1))]
    rows.append(total)
    print_table(header, rows, sys.stdout)
    print(f"\nFrom {config.store.path} up to event {projections.position}.")
    return 0


def _audit(args: argparse.Namespace, config: Config) -> int:
    timeline = audit_timeline(list(read_events(config, request_id=args.request_id)))
    if timeline is None:
        print(f"tollgate audit: no events for request {args.request_id!r}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(timeline)).decode() + "\n")
    else:
        print(render_timeline(timeline))
    return 0


def _replay(args: argparse.Namespace, config: Config) -> int:
    total = _position(config)
    projections = build_projections(config)
    view = UsageView()
    started = time.perf_counter()
    folded = 0
    if args.only_usage:
        events = read_events(config, types=USAGE_EVENT_TYPES)
        for stored in _progress(events, total, sys.stderr):
            view.apply(stored.event)
            folded += 1
    else:
        for stored in _progress(read_events(config), total, sys.stderr):
            projections.apply(stored)
            folded += 1
    elapsed = time.perf_counter() - started
    rate = total / elapsed if elapsed > 0 else float("inf")
    print(f"replayed {total:,} events ({folded:,} folded) in {elapsed:.2f} s: {rate:,.0f} events/s")
    if args.only_usage or args.no_checkpoint or config.store.checkpoint is None:
        return 0
    write_checkpoint(config.store.checkpoint, projections.checkpoint())
    print(f"checkpoint at event {projections.position} written to {config.store.checkpoint}")
    return 0


def _tail(args: argparse.Namespace, config: Config) -> int:
    wanted = {t.removesuffix(".v1") for t in args.type}
    printed = 0

    def show(stored: StoredEvent) -> bool:
        """Print ``stored`` if it passes the filters; True once ``--count`` events were."""
        nonlocal printed
        e = stored.event
        tag = str(type(e).__struct_config__.tag)
        if (
            (wanted and tag.rsplit(".", 1)[0] not in wanted)
            or (args.tenant and e.tenant != args.tenant)
            or (args.task and e.task != args.task)
            or (args.request and e.request_id != args.request)
        ):
            return False
        print(_line(stored, as_json=args.json), flush=True)
        printed += 1
        return args.count is not None and printed >= args.count

    if config.store.kind == "jetstream":

        async def follow(store: EventStore) -> int:
            start = 0 if args.from_start else await store.last_seq()
            async for stored in store.tail(start):
                if show(stored):
                    break
            return 0

        return _with_jetstream(config, follow)

    async def poll() -> int:
        # Read-only polling: a tail needs no writer, and works beside a running sidecar.
        position = 0 if args.from_start else log_position(config.store.path)
        while True:
            for stored in read_log(config.store.path, after_seq=position):
                position = stored.seq
                if show(stored):
                    return 0
            await anyio.sleep(0.2)

    return anyio.run(poll)


def _line(stored: StoredEvent, *, as_json: bool) -> str:
    e = stored.event
    if as_json:
        return f'{{"seq":{stored.seq},"event":{encode_event_json(e).decode()}}}'
    ts = datetime.datetime.fromtimestamp(e.ts_ns / 1e9, datetime.UTC).strftime("%H:%M:%S.%f")
    tag = str(type(e).__struct_config__.tag).rsplit(".", 1)[0]
    who = " ".join(x for x in (e.tenant, e.task, e.request_id[-12:]) if x)
    return f"{stored.seq:>8} {ts[:-3]} {tag:<26} {who}  {describe_event(e)}"


def _current(config: Config) -> Projections:
    """The projections as of the end of the log: the checkpoint, then what was logged since."""
    projections = build_projections(config)
    checkpoint = config.store.checkpoint
    if checkpoint is not None:
        try:
            with open(checkpoint, "rb") as f:
                projections.restore(f.read())
        except (OSError, ValueError, msgspec.DecodeError):
            projections = build_projections(config)  # replay from the start instead
    for stored in read_events(config, after_seq=projections.position):
        projections.apply(stored)
    return projections


def read_events(
    config: Config,
    *,
    after_seq: int = 0,
    types: Iterable[type[Event]] | None = None,
    request_id: str | None = None,
) -> Iterator[StoredEvent]:
    """The log's events after ``after_seq``: the SQLite file read-only, or the JetStream stream
    paged through (filtered here: a stream has no index by type)."""
    if config.store.kind == "sqlite":
        return read_log(config.store.path, after_seq=after_seq, types=types, request_id=request_id)
    if request_id is not None:
        return iter(_with_jetstream(config, lambda store: store.read_request(request_id)))
    kinds = None if types is None else tuple(types)

    async def every(store: EventStore) -> list[StoredEvent]:
        events: list[StoredEvent] = []
        position = after_seq
        while page := await store.read(position, 10_000):
            events += (s for s in page if kinds is None or isinstance(s.event, kinds))
            position = page[-1].seq
        return events

    return iter(_with_jetstream(config, every))


def _position(config: Config) -> int:
    if config.store.kind == "sqlite":
        return log_position(config.store.path)
    return _with_jetstream(config, lambda store: store.last_seq())


def _with_jetstream(config: Config, use: Callable[[EventStore], Awaitable[T]]) -> T:
    """Run ``use`` with the deployment's JetStream store, on a connection of its own."""

    async def run() -> T:
        nats = config.nats
        client = await connect_nats(
            nats, os.environ, wait_s=nats.connect_timeout_s, name="tollgate-cli"
        )
        try:
            async with open_jetstream_store(
                client, stream=config.store.stream, replicas=config.store.replicas
            ) as store:
                return await use(store)
        finally:
            await client.close()

    return anyio.run(run)


def _progress(events: Iterator[StoredEvent], total: int, out: TextIO) -> Iterator[StoredEvent]:
    """Pass ``events`` through, drawing a progress bar on ``out`` for large logs."""
    started = time.perf_counter()
    for n, stored in enumerate(events, 1):
        if total >= PROGRESS_EVERY and n % PROGRESS_EVERY == 0:
            done = min(stored.seq / total, 1.0)
            rate = n / max(time.perf_counter() - started, 1e-9)
            bar = "#" * int(done * 30)
            out.write(f"\r[{bar:<30}] {done:6.1%} {stored.seq:,}/{total:,} {rate:,.0f} events/s")
            out.flush()
        yield stored
    if total >= PROGRESS_EVERY:
        out.write("\n")


def _day(value: str | None) -> str | None:
    if value is None:
        return None
    if value.endswith("d") and value[:-1].isdigit():
        today = datetime.datetime.now(datetime.UTC).date()
        return (today - datetime.timedelta(days=int(value[:-1]))).isoformat()
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is neither a date (2026-11-01) nor days back (7d)") from None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
